//! HTTPS for the API listener: a lab CA made at start, and a server
//! certificate it signs for the API's addresses and names, so a client
//! that trusts the CA's PEM (lbha's `ca_file`, curl's `--cacert`) pays for
//! TLS as it would with DigitalOcean: the handshake, certificate checks
//! and all, against a key nobody else has.
//!
//! Both keys live only in this process; nothing but the CA certificate is
//! ever written out.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::{
    ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer},
};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("generating the lab CA or the API certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("setting up TLS for the API: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("the API certificate needs at least one address or name")]
    NoNames,
}

/// A CA generated for this run and the API's certificate signed by it.
#[derive(Clone)]
pub struct LabCa {
    ca_pem: String,
    server: Arc<ServerConfig>,
}

impl std::fmt::Debug for LabCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LabCa").finish_non_exhaustive()
    }
}

impl LabCa {
    /// A new CA, and a server certificate for `names` (IP addresses become
    /// IP SANs, anything else DNS names).
    pub fn generate(names: &[String]) -> Result<Self, TlsError> {
        if names.is_empty() {
            return Err(TlsError::NoNames);
        }
        let mut ca_params = CertificateParams::default();
        let mut ca_name = DistinguishedName::new();
        ca_name.push(DnType::CommonName, "lbha-dosim lab CA");
        ca_params.distinguished_name = ca_name;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate()?;
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let mut params = CertificateParams::new(names.to_vec())?;
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, names[0].clone());
        params.distinguished_name = name;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;

        let chain = vec![
            cert.der().clone(),
            CertificateDer::from(ca_cert.der().to_vec()),
        ];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut server = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        // HTTP/1.1 only, as the listener serves.
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            ca_pem: ca_cert.pem(),
            server: Arc::new(server),
        })
    }

    /// The CA certificate, PEM: what a client must trust.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The server side, for the API listener.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.server)
    }
}
