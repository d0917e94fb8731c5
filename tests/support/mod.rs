//! Shared helpers for integration tests: each test file declares `mod support;`.
pub mod services;
