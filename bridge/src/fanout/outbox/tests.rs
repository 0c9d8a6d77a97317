use super::*;
use crate::protocol::Frame;

fn outbox(frames: usize, bytes: usize) -> (Outbox, Receiver) {
    Outbox::new(frames, bytes, Arc::new(Budget::new(1 << 30)))
}

fn drain(rx: &mut Receiver) -> Vec<u64> {
    let mut out = Vec::new();
    while let Ok(Outgoing::Frame(_, seq)) = rx.try_recv() {
        out.push(seq);
    }
    out
}

#[test]
fn a_full_queue_falls_behind_instead_of_closing() {
    let (o, mut rx) = outbox(100, 10);
    let t = Frame::from_static("12345");
    assert!(o.push_message(1, &t));
    assert!(o.push_message(2, &t));
    assert!(!o.push_message(3, &t), "no room");
    assert!(o.is_behind());
    assert!(o.behind_since().is_some());
    assert_eq!(o.abort_code(), None, "not closed");
    assert!(!o.push_message(4, &t), "behind: live skipped");
    assert_eq!(o.last_seq(), 2, "the catch-up starts after 2");
    assert_eq!(drain(&mut rx), vec![1, 2]);
}

#[test]
fn the_frame_bound_falls_behind_too() {
    let (o, _rx) = outbox(2, 1 << 20);
    let t = Frame::from_static("a");
    assert!(o.push_message(1, &t) && o.push_message(2, &t));
    assert!(!o.push_message(3, &t));
    assert!(o.is_behind());
}

#[test]
fn replies_beyond_twice_the_bound_close_with_4001() {
    let (o, _rx) = outbox(100, 10);
    assert!(o.push(Frame::from_static("1234567890")));
    assert!(o.push(Frame::from_static("1234567890")));
    assert!(!o.push(Frame::from_static("x")));
    assert_eq!(o.abort_code(), Some(close::SLOW_CONSUMER));
}

#[test]
fn messages_are_never_repeated_or_reordered() {
    let (o, mut rx) = outbox(100, 1 << 20);
    let t = Frame::from_static("m");
    o.start_after(5);
    assert!(!o.push_message(5, &t));
    assert!(o.push_message(6, &t));
    assert!(!o.push_message(6, &t));
    assert!(!o.push_message(4, &t));
    assert!(o.push_message(9, &t));
    assert_eq!(drain(&mut rx), vec![6, 9]);
}

#[tokio::test]
async fn rejoin_by_holding_then_release_has_no_gap_or_duplicate() {
    let (o, mut rx) = outbox(100, 1 << 20);
    let t = |s: u64| Frame::from(format!("m{s}"));
    o.start_behind(9);
    assert!(!o.push_message(10, &t(10)), "behind");
    assert!(o.push_caught_up(10, t(10), None).await);
    o.hold();
    // Live messages arrive while the catch-up reaches the cut (12): 11 and 12 overlap.
    assert!(o.push_message(11, &t(11)));
    assert!(o.push_message(12, &t(12)));
    assert!(o.push_message(13, &t(13)));
    assert!(o.push_caught_up(11, t(11), None).await);
    assert!(o.push_caught_up(12, t(12), None).await);
    assert!(o.release(12));
    assert!(!o.is_behind());
    assert!(o.push_message(14, &t(14)));
    assert_eq!(drain(&mut rx), vec![10, 11, 12, 13, 14]);
}

#[test]
fn overflow_while_holding_falls_behind_and_release_says_so() {
    let (o, _rx) = outbox(2, 1 << 20);
    let t = Frame::from_static("m");
    o.hold();
    assert!(o.push_message(1, &t) && o.push_message(2, &t));
    assert!(!o.push_message(3, &t), "held queue full");
    assert!(!o.release(2), "fell behind meanwhile");
    assert!(o.is_behind());
}

#[tokio::test(start_paused = true)]
async fn catch_up_waits_for_room_and_honours_its_deadline() {
    let (o, mut rx) = outbox(100, 10);
    let o = Arc::new(o);
    assert!(
        o.push_caught_up(1, Frame::from_static("12345678"), None)
            .await
    );
    let o2 = o.clone();
    let waiting = tokio::spawn(async move {
        o2.push_caught_up(2, Frame::from_static("12345678"), None)
            .await
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(!waiting.is_finished(), "no room yet");
    let _ = rx.recv().await;
    o.sent(8, 1);
    assert!(waiting.await.expect("join"));
    assert_eq!(o.delivered(), 1);
    let deadline = Instant::now() + Duration::from_millis(50);
    assert!(
        !o.push_caught_up(3, Frame::from_static("12345678"), Some(deadline))
            .await,
        "the deadline passes while the client reads nothing"
    );
}

#[test]
fn the_global_budget_makes_the_largest_queue_yield_first() {
    let budget = Arc::new(Budget::new(100));
    let (big, _rx1) = Outbox::new(1000, 1000, budget.clone());
    let (small, _rx2) = Outbox::new(1000, 1000, budget.clone());
    let t = Frame::from(String::from_utf8(vec![b'x'; 30]).expect("utf8"));
    assert!(big.push_message(1, &t) && big.push_message(2, &t) && big.push_message(3, &t));
    assert_eq!(budget.used(), 90);
    // Over the bound: the big queue (90 > fair share 50) yields, the small one (0) does not.
    assert!(!big.push_message(4, &t));
    assert!(big.is_behind());
    assert!(small.push_message(4, &t));
    assert!(!small.is_behind());
    drop(big);
    assert_eq!(budget.used(), 30, "a dropped queue gives its bytes back");
}

#[test]
fn first_abort_code_wins() {
    let (o, _rx) = outbox(1, 10);
    o.abort(close::GOING_AWAY);
    o.abort(close::SLOW_CONSUMER);
    assert_eq!(o.abort_code(), Some(close::GOING_AWAY));
    assert!(!o.push(Frame::from_static("x")));
}

fn text(n: usize) -> Frame {
    Frame::from(String::from_utf8(vec![b'x'; n]).expect("utf8"))
}

fn soon() -> Option<Instant> {
    Some(Instant::now() + Duration::from_millis(50))
}

#[tokio::test]
async fn empty_queues_reserve_steps_only_while_within_twice_the_budget() {
    let budget = Arc::new(Budget::new(100));
    let (a, _ra) = Outbox::new(1000, 1000, budget.clone());
    let (b, _rb) = Outbox::new(1000, 1000, budget.clone());
    let (c, _rc) = Outbox::new(1000, 1000, budget.clone());
    // A step larger than the whole budget is still granted to an empty queue, and to a second
    // one while the total before it (150) is within twice the bound.
    assert!(a.reserve(150, soon()).await);
    assert!(b.reserve(150, soon()).await);
    assert_eq!(budget.used(), 300);
    // Past twice the bound an empty queue waits for room instead of reading a step.
    assert!(!c.reserve(150, soon()).await);
    assert_eq!(budget.used(), 300, "the refused reservation took nothing");
    drop(a);
    assert_eq!(
        budget.used(),
        150,
        "a dropped queue gives its reservation back"
    );
    assert!(c.reserve(150, soon()).await, "room again once a queue went");
}

#[tokio::test]
async fn a_steps_frames_use_its_reservation_and_the_rest_goes_back() {
    let budget = Arc::new(Budget::new(1000));
    let (o, mut rx) = Outbox::new(1000, 1000, budget.clone());
    assert!(o.reserve(100, soon()).await);
    assert_eq!(budget.used(), 100);
    assert!(o.push_caught_up(1, text(30), soon()).await);
    assert_eq!(budget.used(), 100, "the frame used the reservation");
    // Larger than the 70 left: it takes the difference.
    assert!(o.push_caught_up(2, text(80), soon()).await);
    assert_eq!(budget.used(), 110);
    assert!(o.reserve(100, soon()).await);
    assert!(o.push_caught_up(3, text(10), soon()).await);
    o.unreserve();
    assert_eq!(budget.used(), 120, "the unused 90 went back");
    assert_eq!(drain(&mut rx), vec![1, 2, 3]);
    o.sent(120, 3);
    assert_eq!(budget.used(), 0);
}

#[tokio::test]
async fn reservations_grow_to_the_recent_frame_size() {
    let budget = Arc::new(Budget::new(1 << 20));
    let (o, _rx) = Outbox::new(1000, 1 << 20, budget.clone());
    for seq in 1..=64 {
        assert!(o.push_caught_up(seq, text(4000), soon()).await);
    }
    let queued = budget.used();
    assert!(o.reserve(100, soon()).await);
    let reserved = budget.used() - queued;
    assert!(
        (3000..=4000).contains(&reserved),
        "reserved {reserved}: about the recent frames' 4000, not the 100 asked"
    );
}
