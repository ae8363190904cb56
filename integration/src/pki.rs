//! A throwaway PKI for tests and the lab: a CA, server certificates for given IP addresses and
//! names, client certificates, written as PEM files.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::Result;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};

pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pub pem: String,
}

/// A certificate and its key, PEM.
pub struct Leaf {
    pub cert: String,
    pub key: String,
}

impl Ca {
    pub fn new(name: &str) -> Result<Ca> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Ca { pem: cert.pem(), issuer: Issuer::new(params, key) })
    }

    fn leaf(&self, cn: &str, sans: &[&str], usage: ExtendedKeyUsagePurpose) -> Result<Leaf> {
        let mut params = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Leaf { cert: cert.pem(), key: key.serialize_pem() })
    }

    /// A server certificate valid for `sans` (IP addresses or DNS names).
    pub fn server(&self, cn: &str, sans: &[&str]) -> Result<Leaf> {
        self.leaf(cn, sans, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A server certificate that expired in 2021.
    pub fn expired_server(&self, cn: &str, sans: &[&str]) -> Result<Leaf> {
        let mut params = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
        params.distinguished_name.push(DnType::CommonName, cn);
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Leaf { cert: cert.pem(), key: key.serialize_pem() })
    }

    pub fn client(&self, cn: &str) -> Result<Leaf> {
        self.leaf(cn, &[], ExtendedKeyUsagePurpose::ClientAuth)
    }

    /// A certificate for both ends of a connection (etcd peers).
    pub fn peer(&self, cn: &str, sans: &[&str]) -> Result<Leaf> {
        let mut params = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Leaf { cert: cert.pem(), key: key.serialize_pem() })
    }

    /// Writes `ca.pem` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<PathBuf> {
        fs::create_dir_all(dir)?;
        let p = dir.join("ca.pem");
        fs::write(&p, &self.pem)?;
        Ok(p)
    }
}

impl Leaf {
    /// Certificate and key in one PEM file (HAProxy's `crt` format).
    pub fn write_combined(&self, dir: &Path, name: &str) -> Result<PathBuf> {
        fs::create_dir_all(dir)?;
        let p = dir.join(format!("{name}.pem"));
        write_secret(&p, &format!("{}{}", self.cert, self.key))?;
        Ok(p)
    }

    /// Writes `NAME.pem` and `NAME-key.pem` into `dir`; returns (cert, key) paths.
    pub fn write(&self, dir: &Path, name: &str) -> Result<(PathBuf, PathBuf)> {
        fs::create_dir_all(dir)?;
        let (c, k) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}-key.pem")));
        fs::write(&c, &self.cert)?;
        write_secret(&k, &self.key)?;
        Ok((c, k))
    }
}

/// A private key's file: its owner's only (xdplb refuses keys others may read, as ssh does).
fn write_secret(path: &Path, text: &str) -> Result<()> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let _ = fs::remove_file(path);
    let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

impl Leaf {
    /// A TLS acceptor serving this certificate (the tests' TLS servers).
    pub fn acceptor(&self) -> Result<tokio_rustls::TlsAcceptor> {
        use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
        let certs = CertificateDer::pem_slice_iter(self.cert.as_bytes()).collect::<Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_slice(self.key.as_bytes())?;
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
        Ok(tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config)))
    }
}
