//! What sits between sources and sinks: bounded queues and delivery acknowledgements.
//!
//! - [`ack`]: an upstream acknowledgement that fires once every sink a record went to has
//!   delivered it (or reported that it could not).
//! - [`memory`]: a per-sink queue bounded in bytes; a full queue makes `send` wait, which is
//!   how backpressure reaches the socket a source reads from.

pub mod ack;
pub mod memory;

pub use ack::{AckRef, AckWaiter};
pub use memory::{Batch, Closed, QueueReceiver, QueueSender};
