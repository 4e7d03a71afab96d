//! TLS for loopback servers: a certificate authority of its own, and a server certificate it
//! issued for 127.0.0.1.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, SupportedProtocolVersion};

/// A server's TLS set-up and the CA that a client must trust for it.
pub struct LoopbackTls {
    /// The server's config: the certificate for 127.0.0.1 and its key.
    pub server: Arc<ServerConfig>,
    /// The CA's certificate, DER.
    pub ca: CertificateDer<'static>,
    /// The same, PEM (what a `ca_file` holds).
    pub ca_pem: String,
}

/// A fresh CA and a certificate it issued for 127.0.0.1, served with `versions` of TLS.
pub fn loopback_tls(versions: &[&'static SupportedProtocolVersion]) -> LoopbackTls {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "calllogger test CA");
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    LoopbackTls {
        server: Arc::new(server),
        ca: ca.der().clone(),
        ca_pem: ca.pem(),
    }
}
