//! moto's server: Kinesis, STS, IAM and CloudWatch Logs in one process.

use std::net::SocketAddr;
use std::process::Command;

use super::ServerProcess;
use crate::kinesis::{ACCESS_KEY, REGION, SECRET_KEY};
use crate::net::http_request;
use crate::paths::venv_bin;

/// moto's server: Kinesis, STS, IAM and CloudWatch Logs in one process (`moto_server`).
/// Auth is off when it starts (any credentials work); see [`Moto::enforce_auth`].
pub struct Moto {
    process: ServerProcess,
}

impl Moto {
    pub fn start() -> Moto {
        let moto_server = venv_bin("moto_server");
        let process = ServerProcess::start("moto", |port| {
            let mut command = Command::new(&moto_server);
            command.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
            command
        });
        Moto { process }
    }

    pub fn port(&self) -> u16 {
        self.process.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port()))
    }

    /// `http://127.0.0.1:PORT`, the endpoint URL for every AWS service moto serves.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// `POST /moto-api/reset-auth`: from now on, the first `unauthenticated_requests` requests
    /// pass unchecked, and every later one has its SigV4 signature recomputed and its IAM
    /// policies evaluated (403 SignatureDoesNotMatch / AccessDenied, XML bodies).
    pub fn reset_auth(&self, unauthenticated_requests: u64) {
        self.post_control(
            "/moto-api/reset-auth",
            unauthenticated_requests.to_string().as_bytes(),
        );
    }

    /// Turns SigV4 and IAM policy enforcement on now. Set up users, roles and policies first.
    pub fn enforce_auth(&self) {
        self.reset_auth(0);
    }

    /// Turns enforcement off again (moto's default). Needed for unsigned calls such as
    /// AssumeRoleWithWebIdentity, which crash moto while enforcement is on.
    pub fn disable_auth(&self) {
        self.post_control("/moto-api/reset-auth", b"inf");
    }

    /// `POST /moto-api/reset`: forgets every stream, user, role and log group.
    pub fn reset(&self) {
        self.post_control("/moto-api/reset", b"");
    }

    /// The server's output so far (useful in assertion messages).
    pub fn log(&self) -> String {
        self.process.log_text()
    }

    fn post_control(&self, path: &str, body: &[u8]) {
        let (status, response) = http_request(self.addr(), "POST", path, body);
        assert_eq!(
            status,
            200,
            "moto {path} answered {status}: {}",
            String::from_utf8_lossy(&response)
        );
    }

    /// The variables pointing an AWS SDK (or boto3) in a child process at this moto, with the
    /// static test credentials.
    pub fn aws_env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint().as_str()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
            ("AWS_REGION", REGION),
            ("AWS_DEFAULT_REGION", REGION),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }
}
