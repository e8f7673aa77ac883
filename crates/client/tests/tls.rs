//! The client library over TLS: it verifies the server against the CA it
//! is given, by the host name in its address, and then chats as usual.

mod common;

use std::sync::Arc;

use common::*;
use natter_client::{Client, ClientError, ClientTls};
use natter_server::certs::{Authority, LOCAL_NAMES};

async fn tls_server(ca: &Authority) -> natter_server::ServerHandle {
    let leaf = ca.issue(&LOCAL_NAMES).unwrap();
    let tls = natter_server::tls::server_config_from_pem(&leaf.cert, &leaf.key).unwrap();
    natter_server::spawn(natter_server::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls: Some(Arc::new(tls)),
        plaintext: natter_server::tls::Plaintext::Nowhere,
        presence_coalesce: std::time::Duration::from_millis(10),
        ..natter_server::Config::default()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn two_clients_chat_over_tls_verified_by_the_ca_they_were_given() {
    let ca = Authority::new("client test CA").unwrap();
    let server = tls_server(&ca).await;
    let port = server.local_addr().port();
    let trust = ClientTls::from_ca_pem(&ca.cert_pem()).unwrap();
    let mut clients = Vec::new();
    for (name, host) in [("alice", "localhost"), ("bob", "127.0.0.1")] {
        let mut config = fast_config(server.local_addr());
        config.addr = format!("{host}:{port}");
        config.tls = Some(trust.clone());
        let (client, events) = Client::connect_with(config).await.expect(host);
        client
            .register(name, "online")
            .await
            .expect("registers over TLS");
        clients.push((client, events));
    }
    let [(alice, mut alice_events), (bob, mut bob_events)] = clients.try_into().ok().unwrap();
    alice.invite(["bob"]).await.unwrap();
    let (conv, _) = expect_invitation(&mut bob_events).await;
    alice.join(conv).await.unwrap();
    bob.join(conv).await.unwrap();
    expect_members(&mut alice_events, conv, &["alice", "bob"]).await;
    alice.send_message(conv, "sealed").await.unwrap();
    expect_message(&mut bob_events, conv, "alice", "sealed").await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_server_from_another_ca_is_not_trusted() {
    let ca = Authority::new("the server's CA").unwrap();
    let server = tls_server(&ca).await;
    let stranger = Authority::new("some other CA").unwrap();
    let mut config = fast_config(server.local_addr());
    config.tls = Some(ClientTls::from_ca_pem(&stranger.cert_pem()).unwrap());
    match Client::connect_with(config).await {
        Err(ClientError::Unreachable { reason, .. }) => {
            assert!(reason.to_lowercase().contains("certificate"), "{reason}")
        }
        Err(other) => panic!("expected an untrusted certificate, got {other:?}"),
        Ok(_) => panic!("connected to a server signed by an unknown CA"),
    }
    server.shutdown().await;
}
