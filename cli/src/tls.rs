//! `cathedral tls`: a working certificate set for a test cluster, made with rcgen — a CA,
//! and certificates it signs for nodes (server and client use, with the node's IP
//! addresses and names) and for clients. For production, use your own PKI: the server
//! only needs PEM files.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

use crate::client::CliError;

/// File names in the CA directory.
pub const CA_CERT_FILE: &str = "ca.pem";
pub const CA_KEY_FILE: &str = "ca-key.pem";

fn fail(what: &str, e: impl std::fmt::Display) -> CliError {
    CliError::invalid(format!("{what}: {e}"))
}

/// Writes `text` to `path`; private keys readable by the owner alone.
fn write(path: &Path, text: &str, private: bool) -> Result<(), CliError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(path)
        .map_err(|e| fail(&format!("create {}", path.display()), e))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| fail(&format!("write {}", path.display()), e))
}

/// Makes a CA in `dir`: `ca.pem` and `ca-key.pem` (refuses to overwrite).
pub fn create_ca(dir: &Path, name: &str) -> Result<Vec<PathBuf>, CliError> {
    std::fs::create_dir_all(dir).map_err(|e| fail(&format!("create {}", dir.display()), e))?;
    let key = KeyPair::generate().map_err(|e| fail("key", e))?;
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params
        .self_signed(&key)
        .map_err(|e| fail("CA certificate", e))?;
    let (c, k) = (dir.join(CA_CERT_FILE), dir.join(CA_KEY_FILE));
    write(&c, &cert.pem(), false)?;
    write(&k, &key.serialize_pem(), true)?;
    Ok(vec![c, k])
}

/// What a certificate is for.
pub enum Subject {
    /// A node: server and client use, reachable at `ips` and `names`.
    Node {
        id: String,
        ips: Vec<IpAddr>,
        names: Vec<String>,
    },
    /// A user or program calling the API: client use only.
    Client { name: String },
}

/// Makes a certificate the CA in `ca_dir` signs, into `out`: `<name>.pem` and
/// `<name>-key.pem`, where `<name>` is `node-<id>` or the client's name.
pub fn create_cert(ca_dir: &Path, subject: Subject, out: &Path) -> Result<Vec<PathBuf>, CliError> {
    let read = |p: PathBuf| {
        std::fs::read_to_string(&p).map_err(|e| fail(&format!("read {}", p.display()), e))
    };
    let ca_key =
        KeyPair::from_pem(&read(ca_dir.join(CA_KEY_FILE))?).map_err(|e| fail("CA key", e))?;
    let ca_params = CertificateParams::from_ca_cert_pem(&read(ca_dir.join(CA_CERT_FILE))?)
        .map_err(|e| fail("CA certificate", e))?;
    // The issuer's name and key are what a signature needs; re-signing the CA's own
    // parameters gives rcgen its issuer without changing either.
    let ca = ca_params
        .self_signed(&ca_key)
        .map_err(|e| fail("CA certificate", e))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let file = match subject {
        Subject::Node { id, ips, names } => {
            params
                .distinguished_name
                .push(DnType::CommonName, format!("cathedral node {id}"));
            params.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
            params.subject_alt_names = ips.into_iter().map(SanType::IpAddress).collect();
            for n in names {
                params.subject_alt_names.push(SanType::DnsName(
                    n.clone()
                        .try_into()
                        .map_err(|e| fail(&format!("--dns {n}"), e))?,
                ));
            }
            if params.subject_alt_names.is_empty() {
                return Err(CliError::invalid(
                    "a node certificate needs --ip or --dns: the addresses peers and clients reach it at",
                ));
            }
            format!("node-{id}")
        }
        Subject::Client { name } => {
            params
                .distinguished_name
                .push(DnType::CommonName, name.as_str());
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            name
        }
    };
    if file.is_empty() || file.contains('/') {
        return Err(CliError::invalid(format!(
            "{file:?} is not a usable file name"
        )));
    }
    let key = KeyPair::generate().map_err(|e| fail("key", e))?;
    let cert = params
        .signed_by(&key, &ca, &ca_key)
        .map_err(|e| fail("certificate", e))?;
    std::fs::create_dir_all(out).map_err(|e| fail(&format!("create {}", out.display()), e))?;
    let (c, k) = (
        out.join(format!("{file}.pem")),
        out.join(format!("{file}-key.pem")),
    );
    write(&c, &cert.pem(), false)?;
    write(&k, &key.serialize_pem(), true)?;
    Ok(vec![c, k])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_signs_node_and_client_certificates_and_nothing_is_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        create_ca(&ca, "test CA").unwrap();
        assert!(create_ca(&ca, "again").is_err(), "an existing CA is kept");
        let node = Subject::Node {
            id: "1".into(),
            ips: vec!["127.0.0.1".parse().unwrap()],
            names: vec!["localhost".into()],
        };
        let files = create_cert(&ca, node, dir.path()).unwrap();
        assert!(std::fs::read_to_string(&files[0])
            .unwrap()
            .contains("BEGIN CERTIFICATE"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&files[1]).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "a private key is the owner's alone");
        create_cert(
            &ca,
            Subject::Client {
                name: "alice".into(),
            },
            dir.path(),
        )
        .unwrap();
        let bare = Subject::Node {
            id: "2".into(),
            ips: vec![],
            names: vec![],
        };
        assert!(create_cert(&ca, bare, dir.path()).is_err());
    }
}
