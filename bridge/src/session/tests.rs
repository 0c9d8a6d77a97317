use super::*;
use crate::fanout::Budget;

fn setup(ttl: Duration, max: usize) -> (tempfile::TempDir, Sessions) {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = crate::storage::tests::open(dir.path());
    let sessions = Sessions::open(storage.sessions, ttl, max).expect("sessions");
    (dir, sessions)
}

fn outbox() -> Arc<Outbox> {
    Arc::new(Outbox::new(10, 1000, Arc::new(Budget::new(1 << 20))).0)
}

fn claimant<'a>(outbox: &'a Arc<Outbox>, filters: &'a [String]) -> Claimant<'a> {
    Claimant {
        outbox,
        epoch: "e",
        head: 5,
        filters,
    }
}

#[tokio::test]
async fn resume_needs_the_right_token() {
    let (_d, s) = setup(Duration::from_secs(60), 10);
    let ob = outbox();
    let held = s.take(None, 1, claimant(&ob, &[])).await.expect("new");
    assert!(!held.resumed);
    assert_eq!(held.state.cursor(), 5, "a new session starts at the head");
    let mut state = held.state.clone();
    state.delivered = 42;
    state.filters = vec!["a/#".to_owned()];
    s.release(&held, 1, &state);
    let wrong = s
        .take(Some((&held.id, "nope")), 2, claimant(&ob, &[]))
        .await
        .expect("wrong");
    assert!(!wrong.resumed);
    assert_ne!(wrong.id, held.id);
    let back = s
        .take(Some((&held.id, &held.token)), 3, claimant(&ob, &[]))
        .await
        .expect("back");
    assert!(back.resumed);
    assert_eq!(
        (back.state.delivered, back.state.filters.clone()),
        (42, vec!["a/#".to_owned()])
    );
    assert_eq!(
        back.state.cursor(),
        5,
        "delivery alone does not move the cursor"
    );
}

#[tokio::test]
async fn a_session_never_saved_resumes_from_its_token() {
    let (_d, s) = setup(Duration::from_secs(60), 10);
    let ob = outbox();
    let filters = vec!["t/#".to_owned()];
    let held = s.take(None, 1, claimant(&ob, &filters)).await.expect("new");
    assert_eq!(s.count(), 0, "nothing written at hello");
    // The server "died": the holder never released. A forged token restores nothing.
    let forged = format!("{}x", held.token);
    let none = s
        .take(Some((&held.id, &forged)), 2, claimant(&ob, &[]))
        .await
        .expect("forged");
    assert!(!none.resumed);
    let back = s
        .take(Some((&held.id, &held.token)), 3, claimant(&ob, &[]))
        .await
        .expect("back");
    assert!(back.resumed);
    assert_eq!(
        (
            back.state.filters.clone(),
            back.state.cursor(),
            back.state.epoch.clone()
        ),
        (filters, 5, "e".to_owned())
    );
}

#[tokio::test]
async fn large_filter_sets_are_saved_at_creation() {
    let (_d, s) = setup(Duration::from_secs(60), 10);
    let ob = outbox();
    let filters: Vec<String> = (0..200).map(|i| format!("site/{i}/tags/#")).collect();
    let held = s.take(None, 1, claimant(&ob, &filters)).await.expect("new");
    assert_eq!(s.count(), 1, "saved because the token cannot carry them");
    assert!(held.token.len() < 1024, "the token stays small");
}

#[tokio::test]
async fn takeover_closes_the_older_connection_with_4002() {
    let (_d, s) = setup(Duration::from_secs(60), 10);
    let first_box = outbox();
    let held = s
        .take(None, 1, claimant(&first_box, &[]))
        .await
        .expect("new");
    let s = Arc::new(s);
    let s2 = s.clone();
    let (id, token) = (held.id.clone(), held.token.clone());
    let newer = tokio::spawn(async move {
        let ob = outbox();
        s2.take(Some((&id, &token)), 2, claimant(&ob, &[])).await
    });
    first_box.aborted().await;
    assert_eq!(first_box.abort_code(), Some(close::TAKEN_OVER));
    let mut state = held.state.clone();
    state.delivered = 7;
    s.release(&held, 1, &state);
    let newer = newer.await.expect("join").expect("take");
    assert!(newer.resumed);
    assert_eq!(newer.state.delivered, 7, "newer reads what the older saved");
}

#[tokio::test]
async fn expiry_and_count_bound() {
    let (_d, s) = setup(Duration::from_millis(1), 2);
    let ob = outbox();
    let a = s.take(None, 1, claimant(&ob, &[])).await.expect("a");
    s.release(&a, 1, &a.state);
    // Idle order has millisecond resolution.
    tokio::time::sleep(Duration::from_millis(3)).await;
    let b = s.take(None, 2, claimant(&ob, &[])).await.expect("b");
    s.release(&b, 2, &b.state);
    let c = s.take(None, 3, claimant(&ob, &[])).await.expect("c");
    assert_eq!(
        s.count(),
        1,
        "oldest idle evicted at the bound; c not saved yet"
    );
    assert!(s.load(&a.id).expect("load").is_none());
    s.release(&c, 3, &c.state);
    assert_eq!(s.count(), 2);
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(s.expire(100).expect("expire"), 2);
    assert_eq!(s.count(), 0);
    let late = s
        .take(Some((&c.id, &c.token)), 4, claimant(&ob, &[]))
        .await
        .expect("late");
    assert!(!late.resumed, "expired sessions are not resumed");
}
