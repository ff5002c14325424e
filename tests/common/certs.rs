//! A test CA and a certificate it signed, made with rcgen (for the tests
//! of TLS listeners, `rediss://` stores and node links' settings).
//!
//! Use it with `#[path = ".../tests/common/certs.rs"] mod certs;`.

/// A CA, and a certificate for `names` (host names or IP addresses) it
/// signed: (the CA's PEM, the certificate's PEM, its key's PEM).
pub fn signed(names: &[&str]) -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let cert = CertificateParams::new(names)
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}
