//! What the root crate's integration tests share beyond the test kit (`logferry-test-kit`,
//! shared with lambda/tests): each test file declares `mod support;` and uses the modules it
//! needs. Not every test file uses every helper or re-export, hence the allowances below.
#![allow(dead_code, unused_imports)]

pub mod faults;
pub mod figures;
pub mod iam_documents;
pub mod kafka;
pub mod kinesis;
pub mod outage;
pub mod tls;
