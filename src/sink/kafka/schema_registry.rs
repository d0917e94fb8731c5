//! A client for the Confluent schema registry REST calls the Avro format uses: register a
//! schema under a subject (`POST /subjects/{subject}/versions`), look one up
//! (`POST /subjects/{subject}`), and fetch a schema by id (`GET /schemas/ids/{id}`). HTTP or
//! HTTPS (the system's roots plus an optional CA file), optional basic auth. Credentials never
//! reach logs or error messages.

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

/// How long one registry request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// Where the registry is and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrySettings {
    pub url: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub ca_file: Option<PathBuf>,
}

/// A registry call that failed. Never contains the password.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("schema registry {url}: {message}")]
    Unreachable { url: String, message: String },
    #[error("schema registry {url}: HTTP {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("schema registry {url}: unexpected answer: {message}")]
    Answer { url: String, message: String },
    #[error("schema_registry_ca_file {path}: {message}")]
    CaFile { path: String, message: String },
}

type HttpClient = Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
>;

/// A schema registry client.
pub struct Registry {
    settings: RegistrySettings,
    client: HttpClient,
    authorization: Option<String>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("url", &self.settings.url)
            .finish()
    }
}

impl Registry {
    pub fn new(settings: RegistrySettings) -> Result<Registry, RegistryError> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        if let Some(path) = &settings.ca_file {
            let ca_error = |message: String| RegistryError::CaFile {
                path: path.display().to_string(),
                message,
            };
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .map_err(|e| ca_error(e.to_string()))?
                .collect::<Result<_, _>>()
                .map_err(|e| ca_error(e.to_string()))?;
            if certs.is_empty() {
                return Err(ca_error("no PEM certificate in it".into()));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| ca_error(e.to_string()))?;
            }
        }
        let tls = rustls::ClientConfig::builder_with_provider(crate::tls::crypto_provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| RegistryError::Unreachable {
                url: settings.url.clone(),
                message: e.to_string(),
            })?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new()).build(connector);
        let authorization = settings.username.as_ref().map(|user| {
            let pair = format!("{user}:{}", settings.password.as_deref().unwrap_or(""));
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            )
        });
        Ok(Registry {
            settings,
            client,
            authorization,
        })
    }

    pub fn url(&self) -> &str {
        &self.settings.url
    }

    /// Registers `schema` under `subject` (idempotent: an identical schema keeps its id).
    pub async fn register(&self, subject: &str, schema: &str) -> Result<u32, RegistryError> {
        let path = format!("/subjects/{}/versions", encode_path(subject));
        let answer = self.call("POST", &path, Some(schema_body(schema))).await?;
        self.id(&answer)
    }

    /// The id of `schema` when it is registered under `subject`.
    pub async fn lookup(&self, subject: &str, schema: &str) -> Result<u32, RegistryError> {
        let path = format!("/subjects/{}", encode_path(subject));
        let answer = self.call("POST", &path, Some(schema_body(schema))).await?;
        self.id(&answer)
    }

    /// The schema registered with `id`.
    pub async fn schema(&self, id: u32) -> Result<String, RegistryError> {
        let answer = self
            .call("GET", &format!("/schemas/ids/{id}"), None)
            .await?;
        answer["schema"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| self.answer_error("no `schema` in the answer"))
    }

    fn id(&self, answer: &serde_json::Value) -> Result<u32, RegistryError> {
        answer["id"]
            .as_u64()
            .and_then(|id| u32::try_from(id).ok())
            .ok_or_else(|| self.answer_error("no `id` in the answer"))
    }

    fn answer_error(&self, message: &str) -> RegistryError {
        RegistryError::Answer {
            url: self.settings.url.clone(),
            message: message.to_string(),
        }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<String>,
    ) -> Result<serde_json::Value, RegistryError> {
        let url = format!("{}{path}", self.settings.url.trim_end_matches('/'));
        let unreachable = |message: String| RegistryError::Unreachable {
            url: self.settings.url.clone(),
            message,
        };
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(&url)
            .header("accept", CONTENT_TYPE)
            .header(
                "user-agent",
                concat!("logferry/", env!("CARGO_PKG_VERSION")),
            );
        if body.is_some() {
            request = request.header("content-type", CONTENT_TYPE);
        }
        if let Some(auth) = &self.authorization {
            request = request.header("authorization", auth);
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| unreachable(e.to_string()))?;
        let response = tokio::time::timeout(REQUEST_TIMEOUT, self.client.request(request))
            .await
            .map_err(|_| unreachable(format!("no answer within {REQUEST_TIMEOUT:?}")))?
            .map_err(|e| unreachable(crate::kafka::error_chain(&e)))?;
        let status = response.status().as_u16();
        let bytes = tokio::time::timeout(REQUEST_TIMEOUT, response.into_body().collect())
            .await
            .map_err(|_| unreachable("the answer did not complete".into()))?
            .map_err(|e| unreachable(e.to_string()))?
            .to_bytes();
        if !(200..300).contains(&status) {
            return Err(RegistryError::Status {
                url: self.settings.url.clone(),
                status,
                body: String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned(),
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| self.answer_error(&e.to_string()))
    }
}

fn schema_body(schema: &str) -> String {
    serde_json::json!({ "schema": schema }).to_string()
}

/// Subject names are path segments: everything but unreserved characters is escaped.
fn encode_path(segment: &str) -> String {
    let mut out = String::new();
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
