//! `natter cert --self-signed` makes a pair that `natter serve` takes, and
//! that a client trusting cert.pem verifies as localhost and 127.0.0.1;
//! with `--require-tls`, TLS works and the key stays private (0600).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command as Process;
use std::sync::Arc;

use common::Server;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const NATTER: &str = env!("CARGO_BIN_EXE_natter");

/// A client config that trusts only `cert.pem` in `dir`.
pub fn trusting(cert: &std::path::Path) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(cert).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(natter_server::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_self_signed_pair_serves_tls_for_localhost() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tls");
    let made = Process::new(NATTER)
        .args(["cert", "--self-signed", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let key_mode = std::fs::metadata(out.join("key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600);
    // A second run must not overwrite the key.
    let again = Process::new(NATTER)
        .args(["cert", "--self-signed", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(!again.status.success());

    let cert = out.join("cert.pem");
    let key = out.join("key.pem");
    let server = Server::start(
        &[
            "--listen",
            "127.0.0.1:0",
            "--no-web",
            "--ephemeral",
            "--require-tls",
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
        dir.path(),
    );
    let connector = trusting(&cert);
    for name in ["localhost", "127.0.0.1"] {
        let tcp = TcpStream::connect(server.addr).await.unwrap();
        let server_name = ServerName::try_from(name).unwrap();
        let tls = connector.connect(server_name, tcp).await.expect(name);
        let mut lines = BufReader::new(tls);
        lines
            .get_mut()
            .write_all(b"{\"command\":\"REGISTER\",\"args\":[\"amy\",\"online\"]}\n")
            .await
            .unwrap();
        lines.get_mut().flush().await.unwrap();
        let mut line = String::new();
        lines.read_line(&mut line).await.unwrap();
        assert!(
            line.contains("ONLINE_USERS") && line.contains("amy"),
            "{line}"
        );
    }
}
