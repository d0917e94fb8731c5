//! kinesalite under Node.js (tests/support/kinesalite.js starts it).

use std::net::SocketAddr;
use std::process::Command;

use super::ServerProcess;
use crate::paths::{installed, kinesalite_dir, support_file};

/// kinesalite: in-memory Kinesis, fast enough for volume tests. Streams become ACTIVE at once.
/// Enforces 500 records and 1 MiB per record, not 5 MiB per request.
pub struct Kinesalite {
    process: ServerProcess,
}

impl Kinesalite {
    pub fn start() -> Kinesalite {
        let dir = kinesalite_dir();
        installed(dir.join("node_modules").join("kinesalite"), "kinesalite");
        let launcher = support_file("kinesalite.js");
        let process = ServerProcess::start("kinesalite", |port| {
            let mut command = Command::new("node");
            command.arg(&launcher).arg(port.to_string()).arg(&dir);
            command
        });
        Kinesalite { process }
    }

    pub fn port(&self) -> u16 {
        self.process.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port()))
    }

    /// `http://127.0.0.1:PORT`, the Kinesis endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr())
    }

    pub fn log(&self) -> String {
        self.process.log_text()
    }
}
