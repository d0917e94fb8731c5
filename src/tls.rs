//! The one rustls crypto provider of the process: *ring*.
//!
//! Everything that speaks TLS through rustls takes its provider from here: the AWS SDK's HTTPS
//! client and its credentials providers ([`crate::aws::http_client`]), the forward source's TLS
//! listener, and the schema registry client. *ring* rather than rustls' default aws-lc-rs:
//! aws-lc is a large static C library (docs/deploy.md has what it cost the image), while *ring* does what
//! TLS 1.2/1.3 to AWS endpoints and Fluent forward clients needs (ECDHE on X25519 and P-256/384,
//! AES-GCM and ChaCha20-Poly1305 in assembly with AES-NI/AVX2, RSA and ECDSA verification)
//! in a fraction of that. aws-lc-rs is not compiled at all (Cargo.toml enables no feature that
//! brings it), so the provider cannot be picked by accident.
//!
//! What *ring* does not offer that aws-lc-rs does: the post-quantum hybrid key exchange
//! X25519MLKEM768, which the AWS SDK prefers when it is available; with *ring* the key exchange
//! is X25519 (what every AWS endpoint accepts).

use std::sync::Arc;

use rustls::crypto::CryptoProvider;

/// The crypto provider every rustls configuration of logferry is built with.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Installs [`crypto_provider`] as the process default, for code that builds a rustls
/// configuration without naming a provider. Call once at start; a second call (or a provider
/// installed before) leaves the installed one in place.
pub fn install_default_crypto_provider() {
    // Err means one is installed already: ours, since no other is compiled in.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_provider_offers_tls13_and_tls12_aead_suites() {
        install_default_crypto_provider();
        install_default_crypto_provider();
        let provider = crypto_provider();
        let names: Vec<String> = provider
            .cipher_suites
            .iter()
            .map(|s| format!("{:?}", s.suite()))
            .collect();
        for wanted in [
            "TLS13_AES_128_GCM_SHA256",
            "TLS13_AES_256_GCM_SHA384",
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
            "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        ] {
            assert!(
                names.iter().any(|n| n == wanted),
                "{wanted} not in {names:?}"
            );
        }
        assert!(CryptoProvider::get_default().is_some());
    }
}
