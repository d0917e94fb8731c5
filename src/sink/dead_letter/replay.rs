//! `logferry replay-dead-letters`.
