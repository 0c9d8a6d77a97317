//! Process lifecycle: graceful shutdown on SIGTERM/SIGINT (close 1001 to every client, exit
//! 0, log flushed) and durability across kill -9: after a restart on the same data directory
//! the log head is at or after every seq a client saw, the epoch is unchanged and new
//! messages get new seqs.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use mqws_integration::*;
use rumqttc::QoS;

const WAIT: Duration = Duration::from_secs(15);

/// Publishes `n` messages on `topic` (QoS 1, all acknowledged).
async fn publish_n(server: &Server, id: &str, topic: &str, n: usize) {
    let mut publisher = mqtt_client(server, id).await;
    for i in 0..n {
        publisher
            .publish(topic, QoS::AtLeastOnce, false, format!("msg {i}"))
            .await;
    }
    publisher.wait_pubacks(n, WAIT).await;
}

/// After a restart: `welcome.position` is at or after `max_seq` in `epoch`, and a new
/// message gets a seq above `max_seq` (no seq is reused).
async fn check_restarted(server: &Server, epoch: &str, max_seq: u64) {
    let mut ws = ws_connect(server).await;
    let w = hello(&mut ws, &["after/#"]).await;
    assert_eq!(
        w["position"]["epoch"].as_str(),
        Some(epoch),
        "epoch changed across the restart: {w}"
    );
    let head = w["position"]["seq"].as_u64().expect("position.seq");
    assert!(
        head >= max_seq,
        "welcome.position.seq {head} is before seq {max_seq} that a client had received"
    );
    publish_n(server, "after-restart-pub", "after/restart", 1).await;
    let m = next_message(&mut ws, WAIT).await;
    let seq = m["seq"].as_u64().unwrap();
    assert!(
        seq > max_seq,
        "new message got seq {seq}, not above {max_seq} from before the restart"
    );
}

async fn graceful(signal_int: bool) {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_with(&[], Some(dir.path().to_path_buf()));
    let mut clients = Vec::new();
    let mut epoch = String::new();
    for _ in 0..3 {
        let mut ws = ws_connect(&server).await;
        let w = hello(&mut ws, &["gs/#"]).await;
        epoch = w["position"]["epoch"].as_str().unwrap().to_owned();
        clients.push(ws);
    }
    publish_n(&server, "gs-pub", "gs/t", 20).await;
    let mut max_seq = 0;
    for ws in &mut clients {
        let msgs = collect_messages(ws, 20, WAIT).await;
        max_seq = max_seq.max(msgs.last().unwrap()["seq"].as_u64().unwrap());
    }

    if signal_int {
        server.sigint();
    } else {
        server.sigterm();
    }
    let closes =
        futures_util::future::join_all(clients.iter_mut().map(|ws| expect_close(ws, WAIT))).await;
    for (i, c) in closes.iter().enumerate() {
        assert_eq!(c.code, 1001, "client {i} close code on shutdown");
        if let Some(s) = c.max_seq {
            max_seq = max_seq.max(s);
        }
    }
    let status = server.wait(WAIT).await;
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after graceful shutdown: {status}"
    );
    drop(server);

    let server = Server::start_with(&[], Some(dir.path().to_path_buf()));
    check_restarted(&server, &epoch, max_seq).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_clients_1001_exits_0_and_keeps_the_log() {
    graceful(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_shuts_down_gracefully_too() {
    graceful(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn received_messages_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_with(&[], Some(dir.path().to_path_buf()));
    let mut ws = ws_connect(&server).await;
    let w = hello(&mut ws, &["k9/#"]).await;
    let epoch = w["position"]["epoch"].as_str().unwrap().to_owned();
    publish_n(&server, "k9-pub", "k9/t", 50).await;
    let msgs = collect_messages(&mut ws, 50, WAIT).await;
    let max_seq = msgs.last().unwrap()["seq"].as_u64().unwrap();

    server.kill9();
    drop(ws);
    drop(server);

    let server = Server::start_with(&[], Some(dir.path().to_path_buf()));
    check_restarted(&server, &epoch, max_seq).await;
}
