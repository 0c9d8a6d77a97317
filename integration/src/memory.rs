//! What the memory tests hold the server to: the byte limits they run it with (small, so the
//! bound means something) and the RSS growth those limits allow, the formula of
//! docs/guarantees.md (cache + tail + 2 × inbound + half the journal + 2 × total pending +
//! per-publisher buffers) plus slack.

/// One mebibyte.
pub const MIB: u64 = 1024 * 1024;
/// `log.cache_capacity`.
pub const CACHE: u64 = 8 * MIB;
/// `ws.tail_bytes`.
pub const TAIL: u64 = 16 * MIB;
/// `bridge.inbound_bytes`.
pub const INBOUND: u64 = 16 * MIB;
/// `ws.max_total_pending_bytes`.
pub const PENDING_TOTAL: u64 = 8 * MIB;
/// `log.journal_bytes` (the default).
pub const JOURNAL: u64 = 16 * MIB;
/// What no configured limit covers: allocator fragmentation, thread stacks, rumqttd's own
/// buffers, the debug build's larger frames.
pub const SLACK: u64 = 48 * MIB;

/// The limits above as `MQWS_*` settings (with `ws.max_pending_bytes` at 4 MiB).
pub fn env() -> Vec<(&'static str, String)> {
    let mib = |b: u64| format!("{}MiB", b / MIB);
    vec![
        ("MQWS_LOG__CACHE_CAPACITY", mib(CACHE)),
        ("MQWS_WS__TAIL_BYTES", mib(TAIL)),
        ("MQWS_BRIDGE__INBOUND_BYTES", mib(INBOUND)),
        ("MQWS_WS__MAX_PENDING_BYTES", "4MiB".to_owned()),
        ("MQWS_WS__MAX_TOTAL_PENDING_BYTES", mib(PENDING_TOTAL)),
        ("MQWS_LOG__JOURNAL_BYTES", mib(JOURNAL)),
    ]
}

/// The RSS growth the limits allow, with `publishers` bytes of publishers' buffers.
pub fn bound(publishers: u64) -> u64 {
    CACHE + TAIL + 2 * INBOUND + JOURNAL / 2 + 2 * PENDING_TOTAL + publishers + SLACK
}

/// Samples a process's RSS every 20 ms on a thread of its own until [`PeakRss::stop`].
pub struct PeakRss {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl PeakRss {
    /// Starts sampling process `pid`.
    pub fn start(pid: u32) -> PeakRss {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = 0;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(crate::rss_kib(pid));
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            peak
        });
        PeakRss { stop, thread }
    }

    /// Stops sampling; the highest RSS seen, in KiB.
    pub fn stop(self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}
