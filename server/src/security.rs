//! TLS and node credentials: what `--tls-cert`, `--tls-key`, `--tls-ca` and
//! `--cluster-key` give the gRPC server, the peer clients and the HTTP port.
//!
//! Calls between nodes authenticate as nodes, never with user tokens: with a CA, by a
//! client certificate it signed (mutual TLS); with a cluster key, by a credential derived
//! from it (`x-cathedral-node` metadata; the first key signs, any key of the ring is
//! accepted, so the key rotates like gossip's). With both, both are required.

use std::sync::Arc;

use cathedral_consensus::hex;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::config::TlsFiles;
use crate::error::{Result, ServerError};

/// The metadata key of the node credential.
pub const NODE_CREDENTIAL_HEADER: &str = "x-cathedral-node";
const NODE_CREDENTIAL_CONTEXT: &str = "cathedral 2026-11 node credential for peer calls";

/// What this node presents and accepts.
#[derive(Clone, Default)]
pub struct Security {
    pub server_tls: Option<ServerTlsConfig>,
    /// How this node reaches its peers over TLS (its certificate as client certificate).
    pub client_tls: Option<ClientTlsConfig>,
    /// The HTTP port's TLS configuration.
    pub http_tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    /// Peer calls need a client certificate signed by the CA.
    pub mutual: bool,
    /// The credential this node sends on peer calls.
    pub node_credential: Option<MetadataValue<Ascii>>,
    /// Every credential accepted on peer calls (one per key of the ring).
    pub accepted_credentials: Vec<String>,
}

/// The node credential of the cluster key `secret`.
pub fn node_credential(secret: &str) -> String {
    hex(&blake3::derive_key(
        NODE_CREDENTIAL_CONTEXT,
        secret.as_bytes(),
    ))
}

fn read(what: &str, path: &std::path::Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| ServerError::Config(format!("{what} {}: {e}", path.display())))
}

impl Security {
    /// Loads the files and derives the credentials; a file that cannot be read or parsed
    /// is a configuration error naming it.
    pub fn load(tls: Option<&TlsFiles>, cluster_keys: &[String]) -> Result<Security> {
        let mut s = Security {
            node_credential: cluster_keys
                .first()
                .map(|k| node_credential(k).parse().expect("hex is valid metadata")),
            accepted_credentials: cluster_keys.iter().map(|k| node_credential(k)).collect(),
            ..Security::default()
        };
        let Some(files) = tls else {
            return Ok(s);
        };
        let cert = read("--tls-cert", &files.cert)?;
        let key = read("--tls-key", &files.key)?;
        let ca = files.ca.as_ref().map(|p| read("--tls-ca", p)).transpose()?;
        let identity = Identity::from_pem(&cert, &key);
        let mut server = ServerTlsConfig::new().identity(identity.clone());
        if let Some(ca) = &ca {
            // Clients may present a certificate; peer calls must (checked per call).
            server = server
                .client_ca_root(Certificate::from_pem(ca))
                .client_auth_optional(true);
            s.mutual = true;
        }
        s.server_tls = Some(server);
        // Peers are verified against the CA, or, without one, against this node's own
        // certificate (a cluster sharing one self-signed certificate).
        s.client_tls = Some(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(ca.as_deref().unwrap_or(&cert)))
                .identity(identity),
        );
        s.http_tls = Some(Arc::new(http_config(&cert, &key, files)?));
        Ok(s)
    }

    /// Whether `credential` (the `x-cathedral-node` value of a call) is accepted.
    pub fn accepts_credential(&self, credential: Option<&str>) -> bool {
        self.accepted_credentials.is_empty()
            || credential.is_some_and(|c| {
                self.accepted_credentials
                    .iter()
                    .any(|a| constant_time_eq(a.as_bytes(), c.as_bytes()))
            })
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The HTTP port's rustls configuration (server authentication only: health probes carry
/// no client certificate).
fn http_config(
    cert: &[u8],
    key: &[u8],
    files: &TlsFiles,
) -> Result<tokio_rustls::rustls::ServerConfig> {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |what: &str, path: &std::path::Path, e: String| {
        ServerError::Config(format!("{what} {}: {e}", path.display()))
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| bad("--tls-cert", &files.cert, e.to_string()))?;
    let key = PrivateKeyDer::from_pem_slice(key)
        .map_err(|e| bad("--tls-key", &files.key, e.to_string()))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServerError::Config(format!("TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| bad("--tls-cert", &files.cert, e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ring_accepts_every_key_and_sends_the_first() {
        let s = Security::load(None, &["new".into(), "old".into()]).unwrap();
        let sent = s
            .node_credential
            .as_ref()
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        assert_eq!(sent, node_credential("new"));
        assert!(s.accepts_credential(Some(&node_credential("old"))));
        assert!(s.accepts_credential(Some(&sent)));
        assert!(!s.accepts_credential(Some(&node_credential("other"))));
        assert!(!s.accepts_credential(None));
        let open = Security::load(None, &[]).unwrap();
        assert!(open.accepts_credential(None), "no key: nothing to check");
    }
}
