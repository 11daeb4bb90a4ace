//! The webhook's serving certificate: swapped in place, so a rotated
//! certificate is served from the next handshake on, without a restart.
//!
//! Two sources. Files (a cert-manager or user Secret mounted into the pod)
//! are polled and reloaded when their content changes. Self-managed: the
//! operator keeps a CA and a serving certificate in a Secret of its own
//! namespace, patches the CA into its webhook configurations, and renews
//! the serving certificate when two thirds of its lifetime have passed.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Why a certificate could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The PEM does not hold a usable certificate chain and key.
    #[error("{0}")]
    Pem(String),
    /// Generating a certificate failed.
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// A PEM certificate chain and private key.
#[derive(Clone, PartialEq, Eq)]
pub struct PemPair {
    /// The certificate chain, leaf first.
    pub cert: String,
    /// The private key.
    pub key: String,
}

impl std::fmt::Debug for PemPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PemPair")
            .field("cert_bytes", &self.cert.len())
            .field("key", &"<redacted>")
            .finish()
    }
}

impl PemPair {
    /// The certified key rustls serves.
    ///
    /// # Errors
    ///
    /// When the PEM holds no certificate, no key, or a key rustls cannot
    /// use.
    pub fn certified_key(&self) -> Result<CertifiedKey, TlsError> {
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(self.cert.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| TlsError::Pem(format!("certificate: {e}")))?;
        if chain.is_empty() {
            return Err(TlsError::Pem(
                "certificate: no CERTIFICATE block".to_owned(),
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(self.key.as_bytes())
            .map_err(|e| TlsError::Pem(format!("private key: {e}")))?;
        let provider = rustls::crypto::ring::default_provider();
        CertifiedKey::from_der(chain, key, &provider)
            .map_err(|e| TlsError::Pem(format!("certificate and key: {e}")))
    }
}

/// The certificate served right now; cheap to clone and share.
#[derive(Debug, Clone)]
pub struct CertStore {
    current: Arc<RwLock<Arc<CertifiedKey>>>,
}

impl CertStore {
    /// A store serving `pair`.
    ///
    /// # Errors
    ///
    /// When `pair` is unusable.
    pub fn new(pair: &PemPair) -> Result<Self, TlsError> {
        Ok(Self {
            current: Arc::new(RwLock::new(Arc::new(pair.certified_key()?))),
        })
    }

    /// Serves `pair` from the next handshake on. On error the current
    /// certificate stays.
    ///
    /// # Errors
    ///
    /// When `pair` is unusable.
    pub fn replace(&self, pair: &PemPair) -> Result<(), TlsError> {
        let key = Arc::new(pair.certified_key()?);
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = key;
        Ok(())
    }

    /// When the leaf certificate served now expires, in seconds since the
    /// epoch.
    pub fn not_after(&self) -> Option<i64> {
        let key = self.get();
        let leaf = key.cert.first()?;
        let (_, x509) = x509_parser::parse_x509_certificate(leaf).ok()?;
        Some(x509.validity().not_after.timestamp())
    }

    fn get(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// A rustls server configuration that asks this store on every
    /// handshake (HTTP/2 and HTTP/1.1 offered). With `client_cas`, a client
    /// must present a certificate issued by one of them (the API server's
    /// webhook client certificate); without, any client may connect.
    ///
    /// # Errors
    ///
    /// When the crypto provider rejects the protocol versions, or the CAs
    /// cannot verify anything.
    pub fn server_config(
        &self,
        client_cas: Option<&[CertificateDer<'static>]>,
    ) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Pem(format!("TLS configuration: {e}")))?;
        let builder = match client_cas {
            None => builder.with_no_client_auth(),
            Some(cas) => {
                let mut roots = rustls::RootCertStore::empty();
                for ca in cas {
                    roots
                        .add(ca.clone())
                        .map_err(|e| TlsError::Pem(format!("client CA: {e}")))?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .map_err(|e| TlsError::Pem(format!("client CA: {e}")))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_cert_resolver(Arc::new(self.clone()));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

/// Reads the CA certificates (PEM) that sign the clients allowed to
/// connect.
///
/// # Errors
///
/// When the file cannot be read or holds no certificate.
pub fn read_client_cas(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })?;
    let cas: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem(format!("{}: {e}", path.display())))?;
    if cas.is_empty() {
        return Err(TlsError::Pem(format!(
            "{}: no CERTIFICATE block",
            path.display()
        )));
    }
    Ok(cas)
}

/// Reads a certificate and key from files.
///
/// # Errors
///
/// When a file cannot be read.
pub fn read_files(cert: &Path, key: &Path) -> Result<PemPair, TlsError> {
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })
    };
    Ok(PemPair {
        cert: read(cert)?,
        key: read(key)?,
    })
}

/// Polls `cert` and `key` every `every` and serves their content when it
/// changes (a mounted Secret is updated by swapping a symlink, which file
/// watches miss). A half-written or invalid pair is logged and skipped:
/// the previous certificate keeps serving.
pub async fn watch_files(store: CertStore, cert: PathBuf, key: PathBuf, every: Duration) {
    let mut last = read_files(&cert, &key).ok();
    loop {
        tokio::time::sleep(every).await;
        match read_files(&cert, &key) {
            Ok(pair) if Some(&pair) != last.as_ref() => match store.replace(&pair) {
                Ok(()) => {
                    tracing::info!(cert = %cert.display(), "webhook certificate reloaded");
                    last = Some(pair);
                }
                Err(e) => tracing::warn!(
                    cert = %cert.display(), error = %e,
                    "webhook certificate changed but is unusable; still serving the previous one"
                ),
            },
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read the webhook certificate"),
        }
    }
}
