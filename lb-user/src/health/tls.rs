//! TLS settings of a check: `verify none` (HAProxy's, as in the seed) or verification against a
//! CA file, an optional client certificate (etcd with `--client-cert-auth`), no ALPN (etcd aborts
//! a handshake that offers `http/1.0`).

use std::{path::Path, sync::Arc};

use rustls::{
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{ring, verify_tls12_signature, verify_tls13_signature, CryptoProvider},
    pki_types::{CertificateDer, ServerName, UnixTime},
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use crate::{
    config::{self, CheckCfg, CheckKind, Config, Verify},
    problems::Problems,
};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {what}")]
    File { path: String, what: String },
    #[error("{0}")]
    Pem(String),
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

fn file_err(path: &Path, what: &dyn std::fmt::Display) -> TlsError {
    TlsError::File { path: path.display().to_string(), what: what.to_string() }
}

/// Accepts any certificate (HAProxy's `verify none`) but still checks the handshake signatures,
/// so the connection is TLS all the same; only the server's identity is not verified.
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The certificates in `path`, read as the configuration's validation reads them.
fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    config::certificates(path).map_err(|e| TlsError::Pem(e.to_string()))
}

/// Every backend's TLS settings built as the checks will build them (certificates, keys and
/// whether they match), for `xdplb check-config`: what `run` would refuse, found before it.
pub fn config_problems(config: &Config) -> Problems {
    let mut p = Problems::default();
    for (i, b) in config.backends.iter().enumerate() {
        let c = &b.check;
        let tls = c.kind.is_tls() || (c.kind == CheckKind::Tcp && (c.crt.is_some() || c.ca_file.is_some()));
        if tls {
            if let Err(e) = client_config(c) {
                p.push(format!("backend[{i}] {:?}.check: {e}", b.name));
            }
        }
    }
    p
}

/// The rustls client configuration for a backend's checks.
pub fn client_config(check: &CheckCfg) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = Arc::new(ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
    let builder = match (check.verify, &check.ca_file) {
        (Verify::Required, Some(ca)) => {
            let mut roots = RootCertStore::empty();
            for c in certs(ca)? {
                roots.add(c).map_err(|e| file_err(ca, &e))?;
            }
            builder.with_root_certificates(roots)
        }
        // Validation refuses `required` without a CA; `none` never looks at one.
        _ => builder.dangerous().with_custom_certificate_verifier(Arc::new(NoVerify(provider))),
    };
    let config = match (&check.crt, &check.key) {
        (Some(crt), Some(key)) => {
            let key = config::private_key(key).map_err(|e| TlsError::Pem(e.to_string()))?;
            builder.with_client_auth_cert(certs(crt)?, key)?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}
