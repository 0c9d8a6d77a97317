//! The embedded broker's front door with real clients: logins (`broker.users`), the bridge's
//! reserved client ids, and MQTT over TLS with a certificate generated at test time.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use mqws_broker::hash_password;
use mqws_config::{BrokerConfig, BrokerTls, BrokerUser};
use rumqttc::{AsyncClient, ConnectReturnCode, Event, MqttOptions, Packet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

mod common;

async fn start(cfg: BrokerConfig) -> (common::Bridge, CancellationToken) {
    let bridge = common::start(cfg, Vec::new()).await;
    let stop = bridge.stop.clone();
    (bridge, stop)
}

/// The first ConnAck code, or the error that ended the connection.
async fn connack(
    addr: std::net::SocketAddr,
    id: &str,
    login: Option<(&str, &str)>,
) -> Result<ConnectReturnCode, String> {
    let mut opts = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    if let Some((u, p)) = login {
        opts.set_credentials(u, p);
    }
    let (_client, mut el) = AsyncClient::new(opts, 10);
    loop {
        match timeout(Duration::from_secs(10), el.poll()).await.unwrap() {
            Ok(Event::Incoming(Packet::ConnAck(a))) => return Ok(a.code),
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_are_checked_and_refused_with_a_connack() {
    let cfg = BrokerConfig {
        users: vec![BrokerUser {
            username: "reader".to_owned(),
            password_hash: mqws_config::Secret::new(hash_password(b"s3cret").unwrap()),
        }],
        ..BrokerConfig::default()
    };
    let (mut link, _stop) = start(cfg).await;
    let addr = link.mqtt_addr;
    assert_eq!(
        connack(addr, "r1", Some(("reader", "s3cret"))).await,
        Ok(ConnectReturnCode::Success)
    );
    let wrong = connack(addr, "r2", Some(("reader", "nope"))).await;
    assert!(format!("{wrong:?}").contains("NotAuthorized"), "{wrong:?}");
    let anonymous = connack(addr, "r3", None).await;
    assert!(
        format!("{anonymous:?}").contains("NotAuthorized"),
        "{anonymous:?}"
    );

    // A logged-in client's messages reach the bridge.
    let mut opts = MqttOptions::new("r4", addr.ip().to_string(), addr.port());
    opts.set_credentials("reader", "s3cret");
    let (c, mut el) = AsyncClient::new(opts, 10);
    tokio::spawn(async move { while el.poll().await.is_ok() {} });
    c.publish("a/b", rumqttc::QoS::AtLeastOnce, false, "x")
        .await
        .unwrap();
    assert_eq!(link.logged().await.topic, "a/b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bridge_client_id_prefix_is_reserved() {
    let (mut link, _stop) = start(BrokerConfig::default()).await;
    let addr = link.mqtt_addr;
    let taken = connack(addr, "mqws-bridge-0000000000000000-0", None).await;
    assert!(format!("{taken:?}").contains("BadClientId"), "{taken:?}");
    // The bridge's link still works.
    assert_eq!(
        connack(addr, "someone", None).await,
        Ok(ConnectReturnCode::Success)
    );
    let opts = MqttOptions::new("p", addr.ip().to_string(), addr.port());
    let (c, mut el) = AsyncClient::new(opts, 10);
    tokio::spawn(async move { while el.poll().await.is_ok() {} });
    c.publish("still/linked", rumqttc::QoS::AtLeastOnce, false, "x")
        .await
        .unwrap();
    assert_eq!(link.logged().await.topic, "still/linked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert_pem, key_pem) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_pem, cert.cert.pem()).unwrap();
    std::fs::write(&key_pem, cert.signing_key.serialize_pem()).unwrap();
    let tls_port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let cfg = BrokerConfig {
        tls: Some(BrokerTls {
            listen: tls_port,
            cert: cert_pem,
            key: key_pem,
        }),
        ..BrokerConfig::default()
    };
    let (mut link, _stop) = start(cfg).await;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let tcp = tokio::net::TcpStream::connect(tls_port).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    // CONNECT (3.1.1, clean session, client id "tls"), then PUBLISH QoS 0 "tls/x" = "hi".
    tls.write_all(&[
        0x10, 15, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 30, 0, 3, b't', b'l', b's',
    ])
    .await
    .unwrap();
    let mut ack = [0u8; 4];
    timeout(Duration::from_secs(10), tls.read_exact(&mut ack))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ack, [0x20, 0x02, 0x00, 0x00]);
    tls.write_all(&[0x30, 9, 0, 5, b't', b'l', b's', b'/', b'x', b'h', b'i'])
        .await
        .unwrap();
    let m = link.logged().await;
    assert_eq!((m.topic.as_str(), &m.payload[..]), ("tls/x", &b"hi"[..]));
}
