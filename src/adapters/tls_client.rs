//! The crate's TLS client side, for the client adapters' `tls://` and
//! `wss://` links and the Redis store's `rediss://`: rustls with ring,
//! the server's certificate checked against the system's roots (read once
//! per process) or against given CA certificates.

use std::io;
use std::sync::{Arc, OnceLock};

use futures_lite::{AsyncRead, AsyncWrite};
use futures_rustls::rustls::{self, ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName};

/// A TLS client on `stream` for `host`, its certificate checked against
/// the CAs in `ca_pem`, or the system's roots.
pub(crate) async fn connect<S: AsyncRead + AsyncWrite + Unpin>(
    host: &str,
    ca_pem: Option<&[u8]>,
    stream: S,
) -> io::Result<futures_rustls::client::TlsStream<S>> {
    let config = match ca_pem {
        None => system()?,
        Some(pem) => config(pem_roots(pem)?)?,
    };
    let name = ServerName::try_from(host.to_owned())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    futures_rustls::TlsConnector::from(config)
        .connect(name, stream)
        .await
}

fn config(roots: RootCertStore) -> io::Result<Arc<ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn pem_roots(pem: &[u8]) -> io::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        roots
            .add(cert)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    }
    if roots.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "no CA certificate in the PEM",
        ));
    }
    Ok(roots)
}

/// The system's roots, read once per process (a few hundred files).
fn system() -> io::Result<Arc<ClientConfig>> {
    static SYSTEM: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();
    SYSTEM
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(format!(
                    "no trusted root certificate on this system ({} errors)",
                    found.errors.len()
                ));
            }
            config(roots).map_err(|e| e.to_string())
        })
        .clone()
        .map_err(io::Error::other)
}
