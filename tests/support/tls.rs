//! TLS for the tests: throwaway certificates made with the `openssl` CLI, and a TLS-terminating
//! proxy (rustls, what logferry links anyway) that puts TLS in front of a plain stand-in (moto,
//! tansu), so that clients are tested against a server certificate only a test CA signed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Files made by [`make_certs`].
pub struct Certs {
    pub ca: PathBuf,
    pub server_crt: PathBuf,
    pub server_key: PathBuf,
    pub client_crt: PathBuf,
    pub client_key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl (scripts/setup installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A throwaway CA, a server certificate for 127.0.0.1 and localhost, and a client certificate,
/// in `dir/certs` (readable by everyone: a container's user reads the CA through a bind mount).
pub fn make_certs(dir: &Path) -> Certs {
    let dir = dir.join("certs");
    std::fs::create_dir_all(&dir).unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=logferry test CA",
    ]);
    openssl(&dir, &ca);
    for (name, ext) in [
        (
            "server",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        ),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ] {
        let mut req = vec!["req"];
        req.extend(ec);
        let (key, csr, crt, extfile) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
            format!("{name}.ext"),
        );
        let subject = format!("/CN={name}");
        req.extend(["-keyout", &key, "-out", &csr, "-subj", &subject]);
        openssl(&dir, &req);
        std::fs::write(dir.join(&extfile), ext).unwrap();
        openssl(
            &dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                "2",
                "-extfile",
                &extfile,
            ],
        );
    }
    Certs {
        ca: dir.join("ca.crt"),
        server_crt: dir.join("server.crt"),
        server_key: dir.join("server.key"),
        client_crt: dir.join("client.crt"),
        client_key: dir.join("client.key"),
    }
}

/// A TLS-terminating TCP proxy on a free loopback port: TLS 1.2/1.3 with the server certificate
/// of [`Certs`], every connection relayed in plain text to the upstream set with
/// [`TlsProxy::set_upstream`] (which may come after the proxy's port is known: a Kafka broker
/// must advertise the proxy's address). Stops when dropped.
pub struct TlsProxy {
    addr: SocketAddr,
    upstream: Arc<OnceLock<SocketAddr>>,
    _runtime: tokio::runtime::Runtime,
}

impl TlsProxy {
    pub fn start(certs: &Certs) -> TlsProxy {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&certs.server_crt)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(&certs.server_key).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let upstream = Arc::new(OnceLock::new());
        let target = upstream.clone();
        runtime.spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, target) = (acceptor.clone(), target.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let Some(&to) = target.get() else {
                        return;
                    };
                    if let Ok(mut plain) = tokio::net::TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                    }
                });
            }
        });
        TlsProxy {
            addr,
            upstream,
            _runtime: runtime,
        }
    }

    /// Where connections go; set once.
    pub fn set_upstream(&self, upstream: SocketAddr) {
        self.upstream
            .set(upstream)
            .expect("the upstream is set once");
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:PORT`.
    pub fn https_url(&self) -> String {
        format!("https://{}", self.addr)
    }
}
