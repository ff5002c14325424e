//! TLS on the links between a cluster's nodes, both ways authenticated:
//! the hub node asks every node that connects for a certificate signed
//! by the cluster's CA, and a gateway node checks that the hub node's is
//! (for the host of the address the hub node announced). rustls with
//! ring, through futures-rustls, as for the clients' TLS links.

use std::io;
use std::path::Path;
use std::sync::Arc;

use futures_rustls::rustls::{self, RootCertStore};
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName};
use smol::net::TcpStream;

use super::cluster::LinkIo;
use super::transport::{bad_tls_input, chain_and_key_from_pem};

/// The TLS of a cluster's node links ([`ClusterOptions::with_tls`]): this
/// node's certificate chain and private key, and the CA certificates
/// that sign every node's certificate. Cloning shares it.
///
/// With it, a hub node takes only TLS links whose node shows a
/// certificate the CA signed (a client certificate), and a gateway node
/// joins only a hub node whose certificate the CA signed for the host of
/// the address the hub node announced (its `advertise`: a name, or an IP
/// address, which the certificate must then hold as an IP address). A
/// plain TCP peer is refused by a node with TLS, and a node without TLS
/// refuses a TLS one. The cluster's secret is still checked in the hello.
///
/// Every certificate the CA signed is a node of the cluster: give the
/// cluster a CA of its own. Each node's certificate serves both ways (as
/// a server's and as a client's): with an extended key usage, it must
/// allow both `serverAuth` and `clientAuth`.
///
/// ```no_run
/// use hummer_channel::adapters::server_tcp::store::StoreConfig;
/// use hummer_channel::adapters::server_tcp::{bind, serve_cluster, ClusterOptions, Listeners, NodeTls, RunnerConfig};
/// use hummer_channel::server::ServerConfig;
///
/// # smol::block_on(async {
/// let tls = NodeTls::from_pem_files(
///     "node-a.pem".as_ref(),
///     "node-a.key".as_ref(),
///     "cluster-ca.pem".as_ref(),
/// )?;
/// let store = StoreConfig::new("redis://127.0.0.1:6379").unwrap().with_lease("node-a");
/// let runner = RunnerConfig::default().with_store(store);
/// let clients = bind("0.0.0.0:7300".parse().unwrap(), &runner)?;
/// let nodes = bind("0.0.0.0:7400".parse().unwrap(), &runner)?;
/// // Its certificate names node-a.example.net (the others check it).
/// let cluster = ClusterOptions::new(nodes, "node-a.example.net:7400").with_tls(tls);
/// serve_cluster(Listeners::new(clients), ServerConfig::demo(), runner, cluster, std::future::pending()).await
/// # }).unwrap();
/// ```
///
/// From PEM text (made here by `rcgen`, as the tests do):
///
/// ```
/// # let ca_key = rcgen::KeyPair::generate().unwrap();
/// # let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
/// # ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
/// # let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
/// # let issuer = rcgen::Issuer::new(ca, ca_key);
/// # let key = rcgen::KeyPair::generate().unwrap();
/// # let node = rcgen::CertificateParams::new(vec!["10.0.0.5".to_owned()]).unwrap();
/// # let (cert_pem, key_pem) = (node.signed_by(&key, &issuer).unwrap().pem(), key.serialize_pem());
/// use hummer_channel::adapters::server_tcp::{bind, ClusterOptions, NodeTls, RunnerConfig};
///
/// let tls = NodeTls::from_pem(cert_pem.as_bytes(), key_pem.as_bytes(), ca_pem.as_bytes())?;
/// // A CA file that holds no certificate is refused, saying so.
/// let e = NodeTls::from_pem(cert_pem.as_bytes(), key_pem.as_bytes(), key_pem.as_bytes());
/// assert!(e.unwrap_err().to_string().starts_with("CA: "));
///
/// let nodes = bind("127.0.0.1:0".parse().unwrap(), &RunnerConfig::default())?;
/// let cluster = ClusterOptions::new(nodes, "10.0.0.5:7400").with_tls(tls.clone());
/// assert_eq!(cluster.tls, Some(tls));
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// [`ClusterOptions::with_tls`]: super::ClusterOptions::with_tls
#[derive(Clone)]
pub struct NodeTls {
    /// The hub node's side: a client certificate required.
    server: Arc<rustls::ServerConfig>,
    /// The gateway node's side: its certificate shown.
    client: Arc<rustls::ClientConfig>,
}

impl NodeTls {
    /// From PEM text: `cert_chain` holds the node's certificate first,
    /// then its intermediates; `key` one private key (PKCS#8, PKCS#1 or
    /// SEC1); `ca` the CA certificates every node's certificate chains to
    /// (one or more). TLS 1.2 and 1.3, with rustls' safe defaults.
    pub fn from_pem(cert_chain: &[u8], key: &[u8], ca: &[u8]) -> io::Result<NodeTls> {
        let (certs, key) = chain_and_key_from_pem(cert_chain, key)?;
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca) {
            let cert = cert.map_err(|e| bad_tls_input("CA", &e))?;
            roots.add(cert).map_err(|e| bad_tls_input("CA", &e))?;
        }
        if roots.is_empty() {
            return Err(bad_tls_input("CA", &"no CERTIFICATE in the PEM"));
        }
        let roots = Arc::new(roots);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| bad_tls_input("CA", &e))?;
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| bad_tls_input("TLS versions", &e))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs.clone(), key.clone_key())
            .map_err(|e| bad_tls_input("certificate and key", &e))?;
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| bad_tls_input("TLS versions", &e))?
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .map_err(|e| bad_tls_input("certificate and key", &e))?;
        Ok(NodeTls {
            server: Arc::new(server),
            client: Arc::new(client),
        })
    }

    /// [`from_pem`](Self::from_pem), reading the three files.
    pub fn from_pem_files(cert_chain: &Path, key: &Path, ca: &Path) -> io::Result<NodeTls> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.display())))
        };
        NodeTls::from_pem(&read(cert_chain)?, &read(key)?, &read(ca)?)
    }

    /// The hub node's handshake on a link it accepted (the caller bounds
    /// it in time).
    pub(super) async fn accept(&self, stream: TcpStream) -> io::Result<LinkIo> {
        let tls = futures_rustls::TlsAcceptor::from(self.server.clone())
            .accept(stream)
            .await
            .map_err(|e| {
                let plain = e
                    .get_ref()
                    .and_then(|e| e.downcast_ref::<rustls::Error>())
                    .is_some_and(|e| {
                        matches!(
                            e,
                            rustls::Error::InvalidMessage(
                                rustls::InvalidMessage::InvalidContentType
                            )
                        )
                    });
                match plain {
                    true => io::Error::new(
                        e.kind(),
                        format!(
                            "{e} (a plain link: this node's links are in TLS, the other's not)"
                        ),
                    ),
                    false => e,
                }
            })?;
        Ok(LinkIo::split(tls))
    }

    /// A gateway node's handshake with the hub node reached at `address`
    /// (`host:port`, `[v6]:port`): its certificate must be for `host`.
    pub(super) async fn connect(&self, address: &str, stream: TcpStream) -> io::Result<LinkIo> {
        let name = ServerName::try_from(host_of(address).to_owned())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let tls = futures_rustls::TlsConnector::from(self.client.clone())
            .connect(name, stream)
            .await
            .map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => io::Error::new(
                    e.kind(),
                    format!("{e} (the hub node closed the link: are its links in TLS?)"),
                ),
                _ => e,
            })?;
        Ok(LinkIo::split(tls))
    }
}

/// The host of `host:port` or `[v6]:port`.
fn host_of(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

impl std::fmt::Debug for NodeTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeTls").finish_non_exhaustive()
    }
}

/// Two configurations are the same when they are one (a key is not
/// compared byte by byte).
impl PartialEq for NodeTls {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.server, &other.server)
    }
}

impl Eq for NodeTls {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_is_checked_without_its_port_or_brackets() {
        assert_eq!(host_of("node-a.internal:7400"), "node-a.internal");
        assert_eq!(host_of("10.0.0.5:7400"), "10.0.0.5");
        assert_eq!(host_of("[fd00::5]:7400"), "fd00::5");
        assert!(matches!(
            ServerName::try_from(host_of("[fd00::5]:7400")),
            Ok(ServerName::IpAddress(_))
        ));
    }

    #[test]
    fn pem_that_holds_nothing_is_refused_saying_which() {
        let e = NodeTls::from_pem(b"", b"", b"").unwrap_err();
        assert!(e.to_string().starts_with("certificate chain"), "{e}");
    }

    /// The server's identity and a node's parse their chain and key with
    /// one helper: a bad chain or key is refused with the same words.
    #[cfg(feature = "tls")]
    #[test]
    fn a_bad_chain_or_key_is_refused_as_for_the_servers_identity() {
        use super::super::ServerTls;

        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["node-a".to_owned()]).unwrap();
        let cert = params.self_signed(&key).unwrap().pem();
        let key = key.serialize_pem();
        for (chain, key, says) in [
            (
                "",
                key.as_str(),
                "certificate chain: no CERTIFICATE in the PEM",
            ),
            (cert.as_str(), "", "private key: "),
            (cert.as_str(), cert.as_str(), "private key: "),
        ] {
            let node = NodeTls::from_pem(chain.as_bytes(), key.as_bytes(), cert.as_bytes());
            let server = ServerTls::from_pem(chain.as_bytes(), key.as_bytes());
            let (node, server) = (node.unwrap_err(), server.unwrap_err());
            assert!(node.to_string().starts_with(says), "{node}");
            assert_eq!(node.kind(), io::ErrorKind::InvalidData);
            assert_eq!(
                (node.kind(), node.to_string()),
                (server.kind(), server.to_string())
            );
        }
    }
}
