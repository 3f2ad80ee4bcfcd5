//! TLS for the HTTP listener: the `tls` settings (`run.tls`,
//! `gateway.tls`) and loading their PEM certificate chain and private key
//! into a rustls acceptor.
//!
//! Start-up validation loads the files through [`TlsConfig::problems`], so a
//! missing or unusable file is a config error naming its key; the listener
//! loads them again with [`load_acceptor`] when it starts.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

use crate::problem::Problem;

/// Serve HTTPS instead of plain HTTP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the server certificate first, then any intermediates.
    pub cert_file: PathBuf,
    /// PEM file with the certificate's private key (PKCS#8, RSA or EC).
    pub key_file: PathBuf,
}

/// Why the certificate or key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file cannot be opened or read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// `cert_file` or `key_file`.
        field: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not well-formed PEM.
    #[error("{} is not valid PEM: {reason}", path.display())]
    Pem {
        /// `cert_file` or `key_file`.
        field: &'static str,
        /// The file.
        path: PathBuf,
        /// What the PEM parser said.
        reason: String,
    },
    /// The certificate file holds no `CERTIFICATE` block.
    #[error("{} holds no certificate (expected a PEM \"BEGIN CERTIFICATE\" block)", .0.display())]
    NoCertificate(PathBuf),
    /// The key file holds no private key block.
    #[error("{} holds no private key (expected a PEM PKCS#8, RSA or EC private key)", .0.display())]
    NoPrivateKey(PathBuf),
    /// The key is not the one the certificate was issued for.
    #[error("the private key in {} does not match the certificate in {}", key.display(), cert.display())]
    KeyMismatch {
        /// The key file.
        key: PathBuf,
        /// The certificate file.
        cert: PathBuf,
    },
    /// rustls refused the key or certificate for another reason.
    #[error("cannot use the key in {} with the certificate in {}: {reason}", key.display(), cert.display())]
    Unusable {
        /// The key file.
        key: PathBuf,
        /// The certificate file.
        cert: PathBuf,
        /// What rustls said.
        reason: String,
    },
}

impl TlsError {
    /// The `tls` key the problem belongs to: `cert_file` or `key_file`.
    pub fn field(&self) -> &'static str {
        match self {
            TlsError::Read { field, .. } | TlsError::Pem { field, .. } => field,
            TlsError::NoCertificate(_) => "cert_file",
            TlsError::NoPrivateKey(_)
            | TlsError::KeyMismatch { .. }
            | TlsError::Unusable { .. } => "key_file",
        }
    }
}

impl TlsConfig {
    /// Problems, keys relative to `tls.`. Both files are checked on their
    /// own so that every problem is reported at once.
    pub fn problems(&self) -> Vec<Problem> {
        let errors: Vec<TlsError> = match (load_certs(&self.cert_file), load_key(&self.key_file)) {
            (Ok(certs), Ok(key)) => server_config(self, certs, key).err().into_iter().collect(),
            (certs, key) => certs.err().into_iter().chain(key.err()).collect(),
        };
        errors
            .into_iter()
            .map(|e| Problem::new(e.field(), e.to_string()))
            .collect()
    }
}

/// Loads the certificate chain and key into an acceptor offering only
/// HTTP/1.1 over ALPN (the server speaks nothing else).
pub fn load_acceptor(config: &TlsConfig) -> Result<TlsAcceptor, TlsError> {
    let certs = load_certs(&config.cert_file)?;
    let key = load_key(&config.key_file)?;
    Ok(TlsAcceptor::from(Arc::new(server_config(
        config, certs, key,
    )?)))
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let field = "cert_file";
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(field, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(field, path, e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(path.to_path_buf()));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::NoPrivateKey(path.to_path_buf()),
        e => pem_error("key_file", path, e),
    })
}

fn pem_error(field: &'static str, path: &Path, error: pem::Error) -> TlsError {
    match error {
        pem::Error::Io(source) => TlsError::Read {
            field,
            path: path.to_path_buf(),
            source,
        },
        e => TlsError::Pem {
            field,
            path: path.to_path_buf(),
            reason: e.to_string(),
        },
    }
}

fn server_config(
    config: &TlsConfig,
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<ServerConfig, TlsError> {
    let unusable = |reason: String| TlsError::Unusable {
        key: config.key_file.clone(),
        cert: config.cert_file.clone(),
        reason,
    };
    // ring explicitly: the process-wide default provider depends on which
    // crate features the whole build enables.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| unusable(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                TlsError::KeyMismatch {
                    key: config.key_file.clone(),
                    cert: config.cert_file.clone(),
                }
            }
            e => unusable(e.to_string()),
        })?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(server)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate for 127.0.0.1 and its key, as PEM files in `dir`.
    fn write_pair(dir: &Path, prefix: &str) -> TlsConfig {
        let generated = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
        let cert_file = dir.join(format!("{prefix}.crt"));
        let key_file = dir.join(format!("{prefix}.key"));
        std::fs::write(&cert_file, generated.cert.pem()).unwrap();
        std::fs::write(&key_file, generated.signing_key.serialize_pem()).unwrap();
        TlsConfig {
            cert_file,
            key_file,
        }
    }

    #[test]
    fn a_matching_pair_loads() {
        let dir = tempfile::tempdir().unwrap();
        let config = write_pair(dir.path(), "server");
        load_acceptor(&config).unwrap();
        assert!(config.problems().is_empty());
    }

    #[test]
    fn a_missing_file_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = write_pair(dir.path(), "server");
        config.cert_file = dir.path().join("absent.crt");
        let e = load_acceptor(&config).err().unwrap();
        assert!(matches!(e, TlsError::Read { .. }), "{e:?}");
        assert_eq!(e.field(), "cert_file");
        assert!(
            e.to_string()
                .starts_with(&format!("cannot read {}: ", config.cert_file.display())),
            "{e}"
        );
    }

    #[test]
    fn a_file_without_a_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = write_pair(dir.path(), "server");
        // The key file is PEM, but holds no certificate.
        config.cert_file = config.key_file.clone();
        let e = load_acceptor(&config).err().unwrap();
        assert!(matches!(e, TlsError::NoCertificate(_)), "{e:?}");
        assert_eq!(e.field(), "cert_file");
        assert!(e.to_string().contains("holds no certificate"), "{e}");
    }

    #[test]
    fn a_file_without_a_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = write_pair(dir.path(), "server");
        config.key_file = config.cert_file.clone();
        let e = load_acceptor(&config).err().unwrap();
        assert!(matches!(e, TlsError::NoPrivateKey(_)), "{e:?}");
        assert_eq!(e.field(), "key_file");
        assert!(e.to_string().contains("holds no private key"), "{e}");
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = write_pair(dir.path(), "server");
        config.key_file = write_pair(dir.path(), "other").key_file;
        let e = load_acceptor(&config).err().unwrap();
        assert!(matches!(e, TlsError::KeyMismatch { .. }), "{e:?}");
        assert_eq!(e.field(), "key_file");
    }

    #[test]
    fn validation_names_the_tls_keys() {
        use crate::config::{Config, ConfigError};
        let dir = tempfile::tempdir().unwrap();
        let good = write_pair(dir.path(), "server");
        let absent = dir.path().join("absent.crt");
        let mut config = Config::default();
        config.run.tls = Some(TlsConfig {
            cert_file: absent.clone(),
            key_file: good.key_file.clone(),
        });
        config.gateway.tls = Some(TlsConfig {
            cert_file: good.cert_file.clone(),
            key_file: good.cert_file.clone(),
        });
        let Err(ConfigError::Invalid(problems)) = config.validate() else {
            panic!("expected problems")
        };
        let keys: Vec<_> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            ["run.tls.cert_file", "gateway.tls.key_file"],
            "{problems:?}"
        );
        assert!(
            problems[0]
                .reason
                .starts_with(&format!("cannot read {}: ", absent.display())),
            "{problems:?}"
        );

        config.run.tls = Some(good.clone());
        config.gateway.tls = Some(good);
        config.validate().unwrap();
    }

    #[test]
    fn problems_report_both_files_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not pem at all\n").unwrap();
        let config = TlsConfig {
            cert_file: garbage,
            key_file: dir.path().join("absent.key"),
        };
        let problems = config.problems();
        let keys: Vec<_> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["cert_file", "key_file"], "{problems:?}");
        assert!(
            problems[0].reason.contains("holds no certificate"),
            "{problems:?}"
        );
        assert!(
            problems[1].reason.starts_with("cannot read "),
            "{problems:?}"
        );
    }
}
