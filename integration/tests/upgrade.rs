//! Data dirs written by earlier releases open in this build: the log keeps its epoch and seqs,
//! a WebSocket session resumes with `recovered: true` and gets what it had not acknowledged
//! with the seqs it had, retained values are still served, and a second start opens the dir as
//! it is. Storage format 1 (sled, last release commit b2f3e1c) is upgraded, its old files kept
//! in `format1-backup/`; format 2 (redb without the log's journal, last written by commit
//! 2765907) is marked format 3 in place.
//!
//! The fixtures (`integration/fixtures/format1/`, `format2/`) were written by those releases'
//! binaries with the ignored tests below, e.g. `MQWS_BIN=<2765907's mqws> cargo test -p
//! mqws-integration --test upgrade -- --ignored write_format2_fixture`.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use mqws_integration::*;
use rumqttc::QoS;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(10);

fn fixture(format: u32) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("fixtures/format{format}"))
}

/// Copies a dir's files (and subdirs).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// The `message` frames up to `caught_up`, as (seq, payload).
async fn replay(ws: &mut Ws) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    loop {
        let f = next_json(ws, WAIT).await;
        match f["type"].as_str() {
            Some("message") => out.push((
                f["seq"].as_u64().unwrap(),
                f["payload"].as_str().unwrap().to_owned(),
            )),
            Some("caught_up") => return out,
            _ => panic!("unexpected {f}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes the format 1 fixture: run with MQWS_BIN set to the mqws binary of commit b2f3e1c (the last sled release)"]
async fn write_format1_fixture() {
    write_fixture(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes the format 2 fixture: run with MQWS_BIN set to the mqws binary of commit 2765907 (the last release without the journal)"]
async fn write_format2_fixture() {
    write_fixture(2).await;
}

/// Writes a data dir with a retained value, 15 messages and a session that acknowledged five
/// of them, with the binary `MQWS_BIN` names, as the fixture of `format`.
async fn write_fixture(format: u32) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = Server::start_with(&[], Some(data.clone()));
    let mut mqtt = mqtt_client(&server, "fixture-pub").await;
    mqtt.publish("site/r", QoS::AtLeastOnce, true, "kept").await;
    mqtt.wait_pubacks(1, WAIT).await;
    let mut ws = ws_connect(&server).await;
    let w = hello_with(
        &mut ws,
        json!({"filters": ["site/a/#"], "from": "earliest"}),
    )
    .await;
    for i in 1..=10 {
        mqtt.publish("site/a/t", QoS::AtLeastOnce, false, format!("m{i}"))
            .await;
    }
    mqtt.wait_pubacks(10, WAIT).await;
    let mut seqs = Vec::new();
    while seqs.len() < 10 {
        let f = next_json(&mut ws, WAIT).await;
        if f["type"] == "message" {
            seqs.push(f["seq"].as_u64().unwrap());
        }
    }
    // Acknowledges the first five, then goes away; five more are logged meanwhile.
    send_json(&mut ws, &json!({"type": "ack", "seq": seqs[4]})).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(ws);
    for i in 11..=15 {
        mqtt.publish("site/a/t", QoS::AtLeastOnce, false, format!("m{i}"))
            .await;
    }
    mqtt.wait_pubacks(5, WAIT).await;
    drop(mqtt);
    server.sigterm();
    assert!(server.wait(Duration::from_secs(15)).await.success());
    let out = fixture(format);
    let _ = std::fs::remove_dir_all(&out);
    copy_dir(&data, &out.join("data"));
    let expect = json!({
        "session": w["session"],
        "resume_token": w["resume_token"],
        "epoch": w["position"]["epoch"],
        "acked": seqs[4],
        "seqs": seqs,
    });
    std::fs::write(
        out.join("expect.json"),
        serde_json::to_string_pretty(&expect).unwrap(),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_format1_data_dir_is_upgraded_and_its_session_resumes_with_the_same_seqs() {
    let data = resumes_with_the_same_seqs(1, "upgraded the data dir from storage format 1").await;
    assert!(data.path().join("data/format1-backup").join("db").is_file());
    assert!(
        !data.path().join("data/db").exists(),
        "the old files left the data dir"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_format2_data_dir_opens_as_it_is_and_its_session_resumes_with_the_same_seqs() {
    let data = resumes_with_the_same_seqs(2, "storage format 2 marked 3").await;
    assert!(data.path().join("data/mqws.journal").is_file());
}

/// Starts this build twice on a copy of the fixture of `format`: the first start logs
/// `first_line` (the second does not), and each time the session resumes with the seqs the old
/// release gave, retained values are served and new seqs continue. Returns the copy.
async fn resumes_with_the_same_seqs(format: u32, first_line: &str) -> tempfile::TempDir {
    let expect: Value =
        serde_json::from_slice(&std::fs::read(fixture(format).join("expect.json")).unwrap())
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    copy_dir(&fixture(format).join("data"), &data);
    // The fixtures were written in Dec 2026: neither their sessions nor messages may age out.
    let ageless = [
        ("MQWS_SESSION__TTL", "3650days"),
        ("MQWS_LOG__MAX_AGE", "3650days"),
    ];
    for round in 0..2 {
        let mut server = Server::start_with(&ageless, Some(data.clone()));
        let upgraded = server.tail_text().contains(first_line);
        assert_eq!(upgraded, round == 0, "round {round}: the one log line");
        let mut ws = ws_connect(&server).await;
        let back = hello_with(
            &mut ws,
            json!({"session": expect["session"], "resume_token": expect["resume_token"]}),
        )
        .await;
        assert_eq!(
            (&back["resumed"], &back["recovered"]),
            (&json!(true), &json!(true)),
            "round {round}: {back}"
        );
        assert_eq!(back["position"]["epoch"], expect["epoch"], "{back}");
        // What it had not acknowledged, with the seqs the old release gave them (the second
        // round again: nothing was acknowledged in the first).
        let seqs: Vec<u64> = expect["seqs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_u64().unwrap())
            .collect();
        let got = replay(&mut ws).await;
        let want: Vec<(u64, String)> = seqs[5..]
            .iter()
            .zip(6..)
            .map(|(s, i)| (*s, format!("m{i}")))
            .collect();
        assert_eq!(&got[..5], &want[..], "round {round}");
        // Then what was logged while it was away (and, in the second round, in the first).
        let mut away = vec!["m11", "m12", "m13", "m14", "m15"];
        away.extend(std::iter::repeat_n("new", round));
        assert_eq!(
            got[5..].iter().map(|(_, p)| p.as_str()).collect::<Vec<_>>(),
            away,
            "round {round}"
        );
        // The retained value, to a new MQTT subscriber.
        let mut sub = mqtt_client(&server, &format!("upgrade-sub-{round}")).await;
        sub.subscribe("site/r", QoS::AtLeastOnce).await;
        let p = sub.next_publish(WAIT).await;
        assert_eq!((p.retain, &p.payload[..]), (true, &b"kept"[..]));
        // New messages continue the seqs.
        sub.publish("site/a/t", QoS::AtLeastOnce, false, "new")
            .await;
        let m = next_message(&mut ws, WAIT).await;
        assert!(m["seq"].as_u64().unwrap() > got.last().unwrap().0, "{m}");
        drop(ws);
        server.sigterm();
        assert!(server.wait(Duration::from_secs(15)).await.success());
    }
    dir
}
