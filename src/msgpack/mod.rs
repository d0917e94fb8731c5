//! msgpack, the wire format of the Fluent forward protocol and of our `msgpack` output format.
//!
//! [`read`] decodes without copying: strings, binaries and extension payloads of a decoded
//! [`Value`](crate::event::Value) are [`Bytes`](bytes::Bytes) slices of the received buffer. It
//! tells "wait for more bytes" ([`ReadError::Incomplete`], with the least total length worth
//! waiting for) apart from "this will never parse" ([`ReadError::Malformed`]), and it bounds
//! nesting depth and pre-allocation so hostile input costs no more memory than its own size.
//! [`write`] encodes values back, always in the smallest msgpack form.

pub mod read;
pub mod write;

pub use read::{Head, ReadError, Reader, Scanner, MAX_DEPTH};
pub use write::WriteError;
