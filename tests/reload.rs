//! SIGHUP reloads `natter serve`'s settings while clients stay connected:
//! a limit changes for a client already connected, a new TLS certificate
//! serves new handshakes while an old TLS connection goes on, and bad
//! settings change nothing. Real processes, real sockets, loopback only.

mod process;

use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;

use natter_server::certs::{Authority, LOCAL_NAMES};
use process::{JsonClient, PATIENCE, Serve};
use rustls::{ClientConnection, StreamOwned};

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

fn message(conv: u64, len: usize) -> String {
    format!(
        r#"{{"command":"SEND_MESSAGE","args":[{conv},"{}"]}}"#,
        "x".repeat(len)
    )
}

#[test]
fn sighup_applies_a_smaller_max_message_to_a_client_already_connected() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("natter.toml");
    write(&config, "max-message = 1000\nrate-limit = 0\n");
    let args = [
        "--config",
        "natter.toml",
        "--listen",
        "127.0.0.1:0",
        "--no-web",
        "--ephemeral",
    ];
    let server = Serve::start(&args, &[], dir.path());
    let mut alice = JsonClient::connect(server.addr);
    alice.register("alice");
    let mut bob = JsonClient::connect(server.addr);
    bob.register("bob");
    let conv = alice.own_conversation("bob");
    alice.send(&message(conv, 600));
    alice.expect(r#""command":"MESSAGE""#);

    // Smaller in the file, and the flag-less settings reloaded.
    write(&config, "max-message = 500\nrate-limit = 0\n");
    server.reload(1);
    let log = server.log();
    assert!(log.contains("key=\"max-message\""), "{log}");
    assert!(log.contains("from=1000") && log.contains("to=500"), "{log}");

    alice.send(&message(conv, 600));
    let refused = alice.expect(r#""command":"ERROR""#);
    assert!(
        refused.contains("message is too long (600 bytes, at most 500)"),
        "{refused}"
    );
    // Still connected, and a message within the new limit goes through.
    alice.send(&message(conv, 400));
    let delivered = alice.expect(r#""command":"MESSAGE""#);
    assert!(delivered.contains(&"x".repeat(400)), "{delivered}");
}

#[test]
fn a_reload_says_which_changes_wait_for_a_restart_and_bad_settings_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("natter.toml");
    write(&config, "history-days = 0\nmax-message = 1000\n");
    let args = [
        "--config",
        "natter.toml",
        "--listen",
        "127.0.0.1:0",
        "--no-web",
        "--ephemeral",
        // A flag wins over the file, on a reload too.
        "--rate-limit",
        "0",
    ];
    let server = Serve::start(&args, &[], dir.path());
    write(
        &config,
        "history-days = 7\nmax-message = 1000\nrate-limit = 1\n",
    );
    server.reload(1);
    let log = server.log();
    let restart = log
        .lines()
        .find(|line| line.contains("key=\"history-days\""))
        .unwrap_or_else(|| panic!("history-days not logged:\n{log}"));
    assert!(
        restart.contains("takes effect after a restart"),
        "{restart}"
    );
    assert!(!log.contains("key=\"rate-limit\""), "the flag won:\n{log}");

    // A typo: the reload fails, says why, and the settings stay.
    write(&config, "max-mesage = 10\n");
    server.signal("HUP");
    server.await_log("reload failed");
    server.await_log("unknown key `max-mesage`");
    let mut alice = JsonClient::connect(server.addr);
    alice.register("alice");
    let mut bob = JsonClient::connect(server.addr);
    bob.register("bob");
    let conv = alice.own_conversation("bob");
    alice.send(&message(conv, 900));
    alice.expect(r#""command":"MESSAGE""#);
}

/// A TLS client that trusts only `ca`.
fn tls_client(
    addr: std::net::SocketAddr,
    ca: &str,
) -> Result<JsonClient<StreamOwned<ClientConnection, TcpStream>>, std::io::Error> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::pem::PemObject::pem_slice_iter(ca.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(natter_server::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let session = ClientConnection::new(Arc::new(config), name).unwrap();
    let tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(PATIENCE))?;
    let mut stream = StreamOwned::new(session, tcp);
    // Finish the handshake now, so that a refused certificate shows here.
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock)?;
    }
    Ok(JsonClient::over(stream))
}

#[test]
fn sighup_swaps_the_tls_certificate_for_new_clients_and_keeps_old_connections() {
    let dir = tempfile::tempdir().unwrap();
    let (old_ca, new_ca) = (
        Authority::new("old CA").unwrap(),
        Authority::new("new CA").unwrap(),
    );
    let old = old_ca.issue(&LOCAL_NAMES).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    write(&cert, &old.cert);
    write(&key, &old.key);
    let args = [
        "--tls-cert",
        "cert.pem",
        "--tls-key",
        "key.pem",
        "--listen",
        "127.0.0.1:0",
        "--no-web",
        "--ephemeral",
        "--rate-limit",
        "0",
    ];
    let server = Serve::start(&args, &[], dir.path());
    let mut before = tls_client(server.addr, &old_ca.cert_pem()).expect("TLS with the old cert");
    before.register("before");

    let new = new_ca.issue(&LOCAL_NAMES).unwrap();
    write(&cert, &new.cert);
    write(&key, &new.key);
    server.reload(1);

    // New handshakes get the new certificate, and only it.
    let mut after = tls_client(server.addr, &new_ca.cert_pem()).expect("TLS with the new cert");
    after.register("after");
    assert!(
        tls_client(server.addr, &old_ca.cert_pem()).is_err(),
        "the old certificate is still served"
    );
    // The connection from before goes on, both ways.
    let conv = before.own_conversation("after");
    after.expect(r#""command":"INVITATION""#);
    before.send(&message(conv, 10));
    before.expect(r#""command":"MESSAGE""#);

    // A broken certificate file: logged, and the new one stays in use.
    write(&cert, "not a certificate\n");
    server.reload(2);
    server.await_log("TLS certificate stays the one in use");
    let mut later = tls_client(server.addr, &new_ca.cert_pem()).expect("the new cert stays");
    later.register("later");
    before.send(&message(conv, 10));
    before.expect(r#""command":"MESSAGE""#);
}
