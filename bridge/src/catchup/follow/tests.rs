use super::*;
use crate::fanout::outbox::Receiver;
use crate::fanout::{Budget, Live, Outgoing};
use crate::storage::{Retention, Storage};
use serde_json::Value;

struct Rig {
    _dir: tempfile::TempDir,
    storage: Storage,
    tail: Arc<Tail>,
    hub: Arc<Hub>,
    outbox: Arc<Outbox>,
    filters: watch::Sender<Arc<Vec<String>>>,
}

/// A log of `n` messages on `a/<k % 2>`, a tail that keeps none of them, one connection.
fn rig(n: u64, pending_bytes: usize) -> (Rig, Receiver) {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = crate::storage::tests::open(dir.path());
    crate::storage::tests::fill(&storage, n, |k| format!("a/{}", k % 2));
    let (outbox, rx) = Outbox::new(1000, pending_bytes, Arc::new(Budget::new(1 << 30)));
    let (filters, _) = watch::channel(Arc::new(vec!["a/#".to_owned()]));
    let rig = Rig {
        _dir: dir,
        storage,
        tail: Arc::new(Tail::new(n, 1 << 20)),
        hub: Arc::new(Hub::new(n)),
        outbox: Arc::new(outbox),
        filters,
    };
    (rig, rx)
}

impl Rig {
    fn spawn(&self) -> tokio::task::JoinHandle<()> {
        let outbox = self.outbox.clone();
        self.hub
            .subscribe(1, &["a/#".to_owned()], &outbox, |_| outbox.start_behind(0));
        tokio::spawn(run(Follow {
            log: self.storage.log.clone(),
            tail: self.tail.clone(),
            hub: self.hub.clone(),
            outbox: self.outbox.clone(),
            filters: self.filters.subscribe(),
            epoch: "e".to_owned(),
            timeout: Duration::from_secs(30),
            avg_record: 256,
            replayed: metrics::counter!("mqws_replay_messages_total"),
            encodings: Arc::default(),
        }))
    }

    /// Logs one more message as ingest would: log, tail, dispatch.
    fn publish(&self, topic: &str) {
        let mut batch = vec![crate::storage::Entry::Message {
            topic: topic.to_owned(),
            payload: bytes::Bytes::from_static(b"y"),
            retain: false,
            mqtt: None,
        }];
        let records = self.storage.log.append(&mut batch).expect("append").records;
        let seq = records[0].seq;
        let lives: Vec<Arc<Live>> = records
            .into_iter()
            .map(|r| {
                Arc::new(Live::framed(
                    r,
                    std::time::Instant::now(),
                    Arc::default(),
                    Arc::default(),
                ))
            })
            .collect();
        self.tail.push(lives.clone());
        self.hub.dispatch(&lives, seq);
    }
}

/// Plays the writer: takes frames, reports them sent, returns them as JSON.
async fn read(outbox: &Outbox, rx: &mut Receiver, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    while out.len() < n {
        let got = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
        let Ok(Some(Outgoing::Frame(t, seq))) = got else {
            panic!("expected {n} frames, got {}: {out:?}", out.len());
        };
        outbox.sent(t.len(), seq);
        out.push(serde_json::from_str(t.as_str()).expect("json"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catches_up_from_the_log_then_rejoins_live_without_gap_or_duplicate() {
    // A queue of 2 KiB: the catch-up must wait for room again and again.
    let (rig, mut rx) = rig(300, 2048);
    let task = rig.spawn();
    let frames = read(&rig.outbox, &mut rx, 301).await;
    let seqs: Vec<u64> = frames[..300]
        .iter()
        .map(|f| f["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs, (1..=300).collect::<Vec<_>>());
    assert!(frames[..300].iter().all(|f| f["replay"] == true));
    assert_eq!(frames[300]["type"], "caught_up");
    assert_eq!(frames[300]["position"]["seq"], 300);
    rig.publish("a/x");
    rig.publish("b/x");
    rig.publish("a/y");
    let live = read(&rig.outbox, &mut rx, 2).await;
    assert_eq!(
        live.iter()
            .map(|f| (f["seq"].as_u64(), f.get("replay").cloned()))
            .collect::<Vec<_>>(),
        vec![(Some(301), None), (Some(303), None)]
    );
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_retention_removed_meanwhile_is_an_in_stream_gap() {
    let (rig, mut rx) = rig(100, 1 << 20);
    let limits = Retention {
        max_messages: 40,
        max_bytes: u64::MAX,
        max_age: Duration::from_secs(3600),
        batch: 1000,
    };
    rig.storage.log.enforce(&limits).expect("retention");
    let task = rig.spawn();
    let frames = read(&rig.outbox, &mut rx, 42).await;
    assert_eq!(frames[0]["type"], "gap");
    assert_eq!(
        (
            frames[0]["reason"].as_str(),
            frames[0]["from"].as_u64(),
            frames[0]["to"].as_u64()
        ),
        (Some("evicted"), Some(1), Some(60))
    );
    let seqs: Vec<u64> = frames[1..41]
        .iter()
        .map(|f| f["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs, (61..=100).collect::<Vec<_>>());
    assert_eq!(frames[41]["type"], "caught_up");
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_falls_behind_live_catches_up_in_place() {
    let (rig, mut rx) = rig(0, 1 << 20);
    let task = rig.spawn();
    assert_eq!(read(&rig.outbox, &mut rx, 1).await[0]["type"], "caught_up");
    // Fill the queue without reading, past the frame bound (1000): it falls behind.
    for _ in 0..1500 {
        rig.publish("a/x");
    }
    assert!(rig.outbox.behind_since().is_some() || !rig.outbox.is_behind());
    let frames = read(&rig.outbox, &mut rx, 1501).await;
    let msgs: Vec<&Value> = frames.iter().filter(|f| f["type"] == "message").collect();
    let seqs: Vec<u64> = msgs
        .iter()
        .map(|f| f["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(
        seqs,
        (1..=1500).collect::<Vec<_>>(),
        "every message once, in order"
    );
    assert!(
        msgs.iter().any(|f| f["replay"] == true),
        "some came from the catch-up"
    );
    assert_eq!(
        frames.iter().filter(|f| f["type"] == "caught_up").count(),
        1
    );
    assert_eq!(rig.outbox.abort_code(), None, "never closed");
    task.abort();
}
