//! `mqws inspect DATA_DIR`: what a data dir holds, read offline through the storage layer
//! (the same code `mqws serve` opens it with): the log's epoch, first and head seq, message,
//! byte and topic counts, the lost seq ranges, the number of sessions and the retained topics.
//!
//! The storage engine locks its directory, so a data dir a running mqws holds cannot be read;
//! that is reported as [`ToolError::Locked`] (exit 2). Opening may let the engine finish its
//! own crash recovery (and apply the log's journal), as a start would; nothing else is written.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::{Format, InspectOptions, ToolError};
use crate::storage::{LogStats, Lost, LostReason, Options, Storage, StorageError};

/// The page cache the inspection opens the engine with.
const CACHE_BYTES: u64 = 16 << 20;
/// Most lost ranges listed.
const MAX_LOST: usize = 1000;

/// What a data dir holds.
#[derive(Debug)]
pub(crate) struct Report {
    dir: PathBuf,
    epoch: String,
    first: Option<u64>,
    head: u64,
    stats: LogStats,
    disk_bytes: Option<u64>,
    lost: Vec<Lost>,
    lost_truncated: bool,
    sessions: usize,
    /// Every retained topic with its payload size, sorted by topic.
    retained: Vec<(String, usize)>,
}

/// Reads the report of `dir`. Blocking.
pub(crate) fn read(dir: &Path) -> Result<Report, ToolError> {
    if !dir.is_dir() {
        return Err(ToolError::NotDataDir {
            dir: dir.to_owned(),
            detail: "no such directory".to_owned(),
        });
    }
    if !Storage::exists(dir) {
        return Err(ToolError::NotDataDir {
            dir: dir.to_owned(),
            detail: "it holds no mqws database".to_owned(),
        });
    }
    if Storage::needs_upgrade(dir) {
        return Err(ToolError::NotDataDir {
            dir: dir.to_owned(),
            detail: "it holds storage format 1 (sled), which `mqws serve` upgrades when it \
                     starts on it; inspect reads only the current format and writes nothing"
                .to_owned(),
        });
    }
    let storage = Storage::open(&Options {
        dir,
        cache_bytes: CACHE_BYTES,
        sync: false,
        max_retained: usize::MAX,
        min_free_bytes: 0,
        // The journal is applied and kept at its size, as the next start would keep it.
        journal_bytes: Storage::journal_bytes(dir),
    })
    .map_err(|e| match e {
        StorageError::Locked { dir } => ToolError::Locked { dir },
        other => ToolError::Storage(other),
    })?;
    let log = &storage.log;
    let head = log.head();
    let (lost, lost_truncated) = log.lost(0, head, MAX_LOST).map_err(ToolError::Storage)?;
    let mut retained: Vec<(String, usize)> = storage
        .retained
        .load()
        .map_err(ToolError::Storage)?
        .into_iter()
        .map(|v| (v.topic, v.payload.len()))
        .collect();
    retained.sort();
    Ok(Report {
        dir: dir.to_owned(),
        epoch: log.epoch().to_owned(),
        first: log.first(),
        head,
        stats: log.stats(),
        disk_bytes: storage.disk_bytes().ok(),
        lost,
        lost_truncated,
        sessions: storage.sessions.count(),
        retained,
    })
}

fn reason(r: LostReason) -> &'static str {
    match r {
        LostReason::Evicted => "evicted",
        LostReason::Dropped => "dropped",
    }
}

impl Report {
    /// The report for a terminal: `key: value` lines, lost ranges and retained topics (at most
    /// `topics` of them) indented under their counts.
    pub(crate) fn text(&self, topics: usize) -> String {
        let mut out = Vec::new();
        out.push(format!("data dir: {}", self.dir.display()));
        out.push(format!("epoch: {}", self.epoch));
        out.push(format!(
            "first seq: {}",
            self.first
                .map_or("none (the log is empty)".to_owned(), |f| f.to_string())
        ));
        out.push(format!("head seq: {}", self.head));
        out.push(format!("messages: {}", self.stats.messages));
        out.push(format!("bytes: {} (topic + payload)", self.stats.bytes));
        out.push(format!("topics: {}", self.stats.topics));
        if let Some(b) = self.disk_bytes {
            out.push(format!("disk bytes: {b}"));
        }
        let more = if self.lost_truncated { "+" } else { "" };
        out.push(format!("lost ranges: {}{more}", self.lost.len()));
        for l in &self.lost {
            out.push(format!("  {}-{} {}", l.from, l.to, reason(l.reason)));
        }
        out.push(format!("sessions: {}", self.sessions));
        out.push(format!("retained topics: {}", self.retained.len()));
        for (topic, len) in self.retained.iter().take(topics) {
            out.push(format!("  {topic} ({len} bytes)"));
        }
        if self.retained.len() > topics {
            out.push(format!(
                "  … {} more (--topics N lists more)",
                self.retained.len() - topics
            ));
        }
        out.join("\n")
    }

    /// The report as one JSON object (retained topics: at most `topics`).
    pub(crate) fn json(&self, topics: usize) -> Value {
        json!({
            "data_dir": self.dir.display().to_string(),
            "epoch": self.epoch,
            "first": self.first,
            "head": self.head,
            "messages": self.stats.messages,
            "bytes": self.stats.bytes,
            "topics": self.stats.topics,
            "disk_bytes": self.disk_bytes,
            "lost": self.lost.iter().map(|l| json!({
                "reason": reason(l.reason), "from": l.from, "to": l.to
            })).collect::<Vec<_>>(),
            "lost_truncated": self.lost_truncated,
            "sessions": self.sessions,
            "retained_count": self.retained.len(),
            "retained": self.retained.iter().take(topics).map(|(t, len)| json!({
                "topic": t, "bytes": len
            })).collect::<Vec<_>>(),
        })
    }
}

/// Runs `mqws inspect`: prints the report in the chosen format.
pub(crate) fn run(opts: &InspectOptions) -> Result<(), ToolError> {
    let report = read(&opts.dir)?;
    let text = match opts.format {
        Format::Text => report.text(opts.topics),
        Format::Json => report.json(opts.topics).to_string(),
    };
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}") {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(ToolError::Output(e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        Report {
            dir: PathBuf::from("/d"),
            epoch: "e1".to_owned(),
            first: Some(11),
            head: 30,
            stats: LogStats {
                messages: 15,
                bytes: 300,
                topics: 2,
            },
            disk_bytes: Some(4096),
            lost: vec![
                Lost {
                    reason: LostReason::Evicted,
                    from: 1,
                    to: 10,
                },
                Lost {
                    reason: LostReason::Dropped,
                    from: 20,
                    to: 24,
                },
            ],
            lost_truncated: false,
            sessions: 3,
            retained: vec![
                ("a".to_owned(), 1),
                ("b".to_owned(), 2),
                ("c".to_owned(), 3),
            ],
        }
    }

    #[test]
    fn text_report() {
        let text = sample().text(2);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "data dir: /d",
                "epoch: e1",
                "first seq: 11",
                "head seq: 30",
                "messages: 15",
                "bytes: 300 (topic + payload)",
                "topics: 2",
                "disk bytes: 4096",
                "lost ranges: 2",
                "  1-10 evicted",
                "  20-24 dropped",
                "sessions: 3",
                "retained topics: 3",
                "  a (1 bytes)",
                "  b (2 bytes)",
                "  … 1 more (--topics N lists more)",
            ]
        );
    }

    #[test]
    fn json_report() {
        let v = sample().json(1);
        assert_eq!(v["head"], 30);
        assert_eq!(v["lost"][1], json!({"reason":"dropped","from":20,"to":24}));
        assert_eq!(v["retained_count"], 3);
        assert_eq!(v["retained"], json!([{"topic":"a","bytes":1}]));
    }

    #[test]
    fn refuses_what_is_not_a_data_dir_and_a_locked_one() {
        let tmp = tempfile::tempdir().expect("tmp");
        let missing = tmp.path().join("missing");
        assert!(matches!(read(&missing), Err(ToolError::NotDataDir { .. })));
        assert!(matches!(
            read(tmp.path()),
            Err(ToolError::NotDataDir { .. })
        ));
        assert!(!missing.exists(), "inspect created the directory");

        let dir = tmp.path().join("data");
        let held = Storage::open(&Options {
            dir: &dir,
            cache_bytes: CACHE_BYTES,
            sync: true,
            max_retained: 10,
            min_free_bytes: 0,
            journal_bytes: 1 << 20,
        })
        .expect("open");
        let err = read(&dir).expect_err("locked");
        assert!(matches!(err, ToolError::Locked { .. }), "{err}");
        assert_eq!(err.exit_code(), 2);
        drop(held);

        // A data dir of storage format 1 is left for `serve` to upgrade.
        let old = tmp.path().join("format1");
        std::fs::create_dir(&old).expect("dir");
        std::fs::write(old.join("conf"), "segment_size: 524288\n").expect("conf");
        std::fs::write(old.join("db"), [0u8; 64]).expect("db");
        let err = read(&old).expect_err("format 1");
        assert!(err.to_string().contains("format 1"), "{err}");
        assert_eq!(
            std::fs::read_dir(&old).expect("list").count(),
            2,
            "inspect wrote nothing"
        );
    }
}
