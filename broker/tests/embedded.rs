//! The embedded broker with real MQTT clients: both protocol versions on one port, inbound
//! messages reach the bridge, bridge publishes reach MQTT subscribers.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use mqws_broker::{PublishRequest, QoS};
use mqws_config::BrokerConfig;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

mod common;

async fn start() -> (common::Bridge, CancellationToken) {
    let bridge = common::start(BrokerConfig::default(), Vec::new()).await;
    let stop = bridge.stop.clone();
    (bridge, stop)
}

async fn next_message(link: &mut common::Bridge) -> mqws_broker::InboundMessage {
    link.logged().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v4_and_v5_clients_share_one_port() {
    let (mut link, _stop) = start().await;
    assert!(link.is_up());
    let addr = link.mqtt_addr;

    let mut v4 = MqttOptions::new("t-v4", addr.ip().to_string(), addr.port());
    v4.set_keep_alive(Duration::from_secs(5));
    let (c4, mut el4) = AsyncClient::new(v4, 10);
    tokio::spawn(async move { while el4.poll().await.is_ok() {} });
    c4.publish("a/v4", rumqttc::QoS::AtLeastOnce, false, "hello-4")
        .await
        .unwrap();
    let m = next_message(&mut link).await;
    assert_eq!(
        (m.topic.as_str(), &m.payload[..]),
        ("a/v4", &b"hello-4"[..])
    );

    let v5 = rumqttc::v5::MqttOptions::new("t-v5", addr.ip().to_string(), addr.port());
    let (c5, mut el5) = rumqttc::v5::AsyncClient::new(v5, 10);
    tokio::spawn(async move { while el5.poll().await.is_ok() {} });
    c5.publish(
        "a/v5",
        rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        false,
        "hello-5",
    )
    .await
    .unwrap();
    let m = next_message(&mut link).await;
    assert_eq!(
        (m.topic.as_str(), &m.payload[..]),
        ("a/v5", &b"hello-5"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_publishes_reach_mqtt_subscribers_with_retain() {
    let (mut link, _stop) = start().await;
    let addr = link.mqtt_addr;
    let opts = MqttOptions::new("t-sub", addr.ip().to_string(), addr.port());
    let (client, mut el) = AsyncClient::new(opts, 10);
    client
        .subscribe("readers/#", rumqttc::QoS::AtMostOnce)
        .await
        .unwrap();
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = timeout(Duration::from_secs(10), el.poll())
            .await
            .unwrap()
            .unwrap()
        {
            break;
        }
    }
    // Play the durable retained store: the publish waits until its value is stored.
    let (_, closed) = tokio::sync::mpsc::channel(1);
    let mut retained = std::mem::replace(&mut link.retained, closed);
    let store = tokio::spawn(async move {
        let w = retained.recv().await.unwrap();
        w.done.send(()).unwrap();
        w.update
    });
    let publisher = link.publisher.clone();
    let publish = tokio::spawn(async move {
        publisher
            .publish(PublishRequest {
                topic: "readers/r1/cmd".to_owned(),
                payload: Bytes::from_static(b"{\"op\":\"start\"}"),
                qos: QoS::AtLeastOnce,
                retain: true,
            })
            .await
    });
    // The browser publish enters the log first (this test answers as the log).
    let m = next_message(&mut link).await;
    assert_eq!((m.topic.as_str(), m.retain), ("readers/r1/cmd", true));
    timeout(Duration::from_secs(10), publish)
        .await
        .expect("publish answered once logged and the retained value is stored")
        .unwrap()
        .unwrap();
    let stored = store.await.unwrap();
    assert_eq!(stored.topic, "readers/r1/cmd");
    let got = loop {
        if let Event::Incoming(Packet::Publish(p)) = timeout(Duration::from_secs(10), el.poll())
            .await
            .unwrap()
            .unwrap()
        {
            break p;
        }
    };
    assert_eq!(got.topic, "readers/r1/cmd");
    assert_eq!(&got.payload[..], b"{\"op\":\"start\"}");

    // A later subscriber receives it as retained.
    let opts = MqttOptions::new("t-late", addr.ip().to_string(), addr.port());
    let (late, mut el) = AsyncClient::new(opts, 10);
    late.subscribe("readers/#", rumqttc::QoS::AtMostOnce)
        .await
        .unwrap();
    let got = loop {
        if let Event::Incoming(Packet::Publish(p)) = timeout(Duration::from_secs(10), el.poll())
            .await
            .unwrap()
            .unwrap()
        {
            break p;
        }
    };
    assert!(got.retain, "late subscriber sees the retained command");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_mqtt_bytes_are_dropped_and_the_port_keeps_serving() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut link, _stop) = start().await;
    let mut s = tokio::net::TcpStream::connect(link.mqtt_addr)
        .await
        .unwrap();
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 16];
    let n = timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "garbage connection is closed");

    let addr = link.mqtt_addr;
    let opts = MqttOptions::new("t-after", addr.ip().to_string(), addr.port());
    let (c, mut el) = AsyncClient::new(opts, 10);
    tokio::spawn(async move { while el.poll().await.is_ok() {} });
    c.publish("after/garbage", rumqttc::QoS::AtLeastOnce, false, "ok")
        .await
        .unwrap();
    assert_eq!(next_message(&mut link).await.topic, "after/garbage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_publishes_are_reported_and_restored() {
    let (mut link, _stop) = start().await;
    let addr = link.mqtt_addr;
    let mut v4 = MqttOptions::new("t-retain", addr.ip().to_string(), addr.port());
    v4.set_keep_alive(Duration::from_secs(5));
    let (c4, mut el4) = AsyncClient::new(v4, 10);
    let (acks_tx, mut acks) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(ev) = el4.poll().await {
            if let rumqttc::Event::Incoming(rumqttc::Packet::PubAck(a)) = ev {
                let _ = acks_tx.send(a.pkid);
            }
        }
    });
    c4.publish(
        "readers/r1/status",
        rumqttc::QoS::AtLeastOnce,
        true,
        "online",
    )
    .await
    .unwrap();
    let write = timeout(Duration::from_secs(10), link.retained.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(write.update.topic, "readers/r1/status");
    assert_eq!(&write.update.payload[..], b"online");
    // The PUBLISH waits in the proxy until the value is durable: no PUBACK before `done`.
    assert!(
        timeout(Duration::from_millis(500), acks.recv())
            .await
            .is_err(),
        "PUBACK before the retained value was stored"
    );
    write.done.send(()).unwrap();
    // Nor before the message itself is in the log.
    assert!(
        timeout(Duration::from_millis(300), acks.recv())
            .await
            .is_err(),
        "PUBACK before the message was logged"
    );
    let logged = link.logged().await;
    assert_eq!(
        (logged.topic.as_str(), logged.retain),
        ("readers/r1/status", true)
    );
    timeout(Duration::from_secs(10), acks.recv())
        .await
        .expect("PUBACK once stored and logged")
        .unwrap();
    let update = write.update;

    // A fresh broker given that value serves it as retained, and the bridge does not log it.
    let mut fresh = common::start(BrokerConfig::default(), vec![update]).await;
    let addr = fresh.mqtt_addr;
    let opts = MqttOptions::new("t-restored", addr.ip().to_string(), addr.port());
    let (c, mut el) = AsyncClient::new(opts, 10);
    c.subscribe("readers/#", rumqttc::QoS::AtMostOnce)
        .await
        .unwrap();
    let got = loop {
        if let Event::Incoming(Packet::Publish(p)) = timeout(Duration::from_secs(10), el.poll())
            .await
            .unwrap()
            .unwrap()
        {
            break p;
        }
    };
    assert!(got.retain);
    assert_eq!(&got.payload[..], b"online");
    assert!(
        fresh
            .logged_within(Duration::from_millis(300))
            .await
            .is_none(),
        "restored values are not new messages"
    );
}
