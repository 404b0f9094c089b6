//! The API's extra CA bundle (`[floating_ip] ca_file`, `--do-ca-file`):
//! PEM certificates trusted for the DigitalOcean API besides the system's
//! roots, for a private CA (the lab's simulator) or a TLS-inspecting proxy.
//!
//! The same reading serves the client (which adds the certificates to
//! reqwest's roots) and the preflight checks, so a file `check-config`
//! accepts is one the client can use. Blocks (reads the file).

use std::path::{Path, PathBuf};

use rustls_pki_types::{CertificateDer, pem::PemObject};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum CaFileError {
    #[error("ca_file {}: cannot read it", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("ca_file {}: not a PEM certificate bundle: {reason}", .path.display())]
    Pem { path: PathBuf, reason: String },
    #[error("ca_file {}: holds no certificate (expected PEM `BEGIN CERTIFICATE` blocks)", .path.display())]
    Empty { path: PathBuf },
    #[error("ca_file {}: certificate {index} cannot be a trust anchor: {reason}", .path.display())]
    Invalid {
        path: PathBuf,
        /// 1-based, in file order.
        index: usize,
        reason: String,
    },
}

/// Reads `path` and returns its certificates in DER, each one checked to
/// parse as an X.509 trust anchor.
pub fn load_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, CaFileError> {
    let pem = std::fs::read(path).map_err(|source| CaFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CaFileError::Pem {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(CaFileError::Empty {
            path: path.to_owned(),
        });
    }
    let mut store = rustls::RootCertStore::empty();
    for (i, cert) in certs.iter().enumerate() {
        store.add(cert.clone()).map_err(|e| CaFileError::Invalid {
            path: path.to_owned(),
            index: i + 1,
            reason: e.to_string(),
        })?;
    }
    Ok(certs)
}

/// [`load_ca_file`] as reqwest's certificates.
pub(crate) fn reqwest_certificates(path: &Path) -> Result<Vec<reqwest::Certificate>, CaFileError> {
    load_ca_file(path)?
        .iter()
        .enumerate()
        .map(|(i, der)| {
            reqwest::Certificate::from_der(der).map_err(|e| CaFileError::Invalid {
                path: path.to_owned(),
                index: i + 1,
                reason: e.to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn a_lab_ca_loads_and_bad_files_say_why() {
        let dir = tempfile::tempdir().unwrap();
        let ca = lbha_dosim::tls::LabCa::generate(&["127.0.0.1".into()]).unwrap();
        let good = write(&dir, "ca.pem", ca.ca_pem());
        assert_eq!(load_ca_file(&good).unwrap().len(), 1);
        let two = write(&dir, "two.pem", &format!("{}{}", ca.ca_pem(), ca.ca_pem()));
        assert_eq!(reqwest_certificates(&two).unwrap().len(), 2);

        let missing = dir.path().join("missing.pem");
        assert!(matches!(
            load_ca_file(&missing),
            Err(CaFileError::Read { .. })
        ));
        let empty = write(&dir, "empty.pem", "not a certificate\n");
        let error = load_ca_file(&empty).unwrap_err();
        assert!(matches!(error, CaFileError::Empty { .. }), "{error}");
        assert!(error.to_string().contains("empty.pem"), "{error}");
        // A PEM block whose content is no certificate.
        let garbage = write(
            &dir,
            "garbage.pem",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        );
        let error = load_ca_file(&garbage).unwrap_err();
        assert!(
            matches!(error, CaFileError::Invalid { index: 1, .. }),
            "{error}"
        );
    }
}
