//! Shared helpers for integration tests: each test file declares `mod support;`.
//! Not every test file uses every helper, hence the allowance below.
#![allow(dead_code)]

pub mod figures;
pub mod process;
pub mod services;
