//! The seqs of one topic, ascending, delta-encoded: the bulk of the log index's memory.
//!
//! A plain `VecDeque<u64>` cost 8 bytes per logged message, up to 16 with its growth slack (it
//! never shrinks), so 80–160 MiB at the default `log.max_messages`. Here seqs are kept in
//! blocks of up to [`BLOCK`]: the first and last seq of the block, and the gaps between them as
//! LEB128 varints (one byte for gaps below 128, two below 16,384). A topic that gets most
//! messages costs about 1.3 bytes per message, one of 1,000 interleaved topics about 2.3, and a
//! topic seen once no heap at all.

use std::collections::VecDeque;

/// Most seqs in one block: small enough that a lookup decodes little, large enough that the
/// block's fixed part is a small share.
const BLOCK: u32 = 128;

/// Ascending seqs of one topic. Never empty: the index removes a topic whose last seq goes.
#[derive(Debug)]
pub(super) enum Seqs {
    /// One seq, inline (the common case of many distinct topics).
    One(u64),
    /// More, in delta-encoded blocks, oldest first.
    #[allow(
        clippy::box_collection,
        reason = "boxed, the enum is 16 bytes instead of 32: one per distinct topic"
    )]
    Blocks(Box<VecDeque<Block>>),
}

/// A run of up to [`BLOCK`] seqs.
#[derive(Debug)]
pub(super) struct Block {
    /// The oldest seq still in the block.
    first: u64,
    /// The newest seq in the block.
    last: u64,
    /// Seqs in the block.
    count: u32,
    /// Offset in `gaps` of the gap after `first` (popped seqs' gaps stay until the block goes).
    start: u32,
    /// Gaps between consecutive seqs, varints.
    gaps: Vec<u8>,
}

impl Block {
    fn new(seq: u64) -> Self {
        Block {
            first: seq,
            last: seq,
            count: 1,
            start: 0,
            gaps: Vec::new(),
        }
    }

    /// The block's seqs, oldest first.
    fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        let mut at = self.start as usize;
        let mut seq = self.first;
        let mut first = true;
        std::iter::from_fn(move || {
            if first {
                first = false;
                return Some(seq);
            }
            let (gap, n) = read_varint(&self.gaps[at..])?;
            at += n;
            seq += gap;
            Some(seq)
        })
    }

    /// Builds a block from ascending seqs (at least one).
    fn from_seqs(seqs: &[u64]) -> Option<Self> {
        let (&head, tail) = seqs.split_first()?;
        let mut block = Block::new(head);
        for &s in tail {
            block.push(s);
        }
        block.gaps.shrink_to_fit();
        Some(block)
    }

    fn push(&mut self, seq: u64) {
        write_varint(&mut self.gaps, seq - self.last);
        self.last = seq;
        self.count += 1;
    }
}

impl Seqs {
    /// A topic's first seq.
    pub(super) fn new(seq: u64) -> Self {
        Seqs::One(seq)
    }

    /// Appends `seq`, which must be above every seq held (the log appends in seq order); a
    /// smaller one is ignored.
    pub(super) fn push(&mut self, seq: u64) {
        match self {
            Seqs::One(only) => {
                if seq > *only {
                    let mut block = Block::new(*only);
                    block.push(seq);
                    *self = Seqs::Blocks(Box::new(VecDeque::from([block])));
                }
            }
            Seqs::Blocks(blocks) => match blocks.back_mut() {
                Some(last) if seq <= last.last => {}
                // A block popped from is not appended to, so its consumed gaps go with it.
                Some(last) if last.count < BLOCK && last.start == 0 => last.push(seq),
                _ => {
                    if let Some(full) = blocks.back_mut() {
                        full.gaps.shrink_to_fit();
                    }
                    blocks.push_back(Block::new(seq));
                }
            },
        }
    }

    /// The newest seq.
    pub(super) fn last(&self) -> Option<u64> {
        match self {
            Seqs::One(only) => Some(*only),
            Seqs::Blocks(blocks) => blocks.back().map(|b| b.last),
        }
    }

    /// Removes `seq`; true when the topic has no seq left. Retention removes the oldest, which
    /// is cheap; any other seq is found and its block rebuilt.
    pub(super) fn remove(&mut self, seq: u64) -> bool {
        let blocks = match self {
            Seqs::One(only) => return *only == seq,
            Seqs::Blocks(blocks) => blocks,
        };
        match blocks.front_mut() {
            Some(front) if front.first == seq => pop_front(blocks),
            _ => remove_inner(blocks, seq),
        }
        blocks.is_empty()
    }

    /// Appends to `out` the seqs in `(after, upto]`, at most `limit` of them, ascending.
    pub(super) fn collect_range(&self, after: u64, upto: u64, limit: usize, out: &mut Vec<u64>) {
        match self {
            Seqs::One(only) => {
                if *only > after && *only <= upto && limit > 0 {
                    out.push(*only);
                }
            }
            Seqs::Blocks(blocks) => {
                let from = blocks.partition_point(|b| b.last <= after);
                let seqs = blocks.range(from..).flat_map(Block::iter);
                out.extend(
                    seqs.skip_while(|&s| s <= after)
                        .take_while(|&s| s <= upto)
                        .take(limit),
                );
            }
        }
    }

    /// Seqs held.
    #[cfg(test)]
    fn len(&self) -> usize {
        match self {
            Seqs::One(_) => 1,
            Seqs::Blocks(blocks) => blocks.iter().map(|b| b.count as usize).sum(),
        }
    }
}

/// Drops the oldest seq of the first block (and the block once empty).
fn pop_front(blocks: &mut VecDeque<Block>) {
    let Some(front) = blocks.front_mut() else {
        return;
    };
    if front.count <= 1 {
        blocks.pop_front();
        return;
    }
    if let Some((gap, n)) = read_varint(&front.gaps[front.start as usize..]) {
        front.first += gap;
        // Within a block of at most BLOCK varints of at most 10 bytes: fits.
        front.start += n as u32;
        front.count -= 1;
    }
}

/// Removes `seq` from whichever block holds it, rebuilding that block.
fn remove_inner(blocks: &mut VecDeque<Block>, seq: u64) {
    let i = blocks.partition_point(|b| b.last < seq);
    let Some(block) = blocks.get(i) else {
        return;
    };
    if seq < block.first {
        return;
    }
    let kept: Vec<u64> = block.iter().filter(|&s| s != seq).collect();
    match Block::from_seqs(&kept) {
        Some(rebuilt) => blocks[i] = rebuilt,
        None => {
            blocks.remove(i);
        }
    }
}

fn write_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The varint at the start of `bytes` and its length; None if `bytes` ends inside it.
fn read_varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(s: &Seqs) -> Vec<u64> {
        let mut out = Vec::new();
        s.collect_range(0, u64::MAX, usize::MAX, &mut out);
        out
    }

    fn build(seqs: &[u64]) -> Seqs {
        let mut s = Seqs::new(seqs[0]);
        for &q in &seqs[1..] {
            s.push(q);
        }
        s
    }

    #[test]
    fn a_topic_costs_16_bytes_inline() {
        assert_eq!(std::mem::size_of::<Seqs>(), 16);
    }

    #[test]
    fn varints_round_trip() {
        for v in [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut buf = Vec::new();
            write_varint(&mut buf, v);
            assert_eq!(read_varint(&buf), Some((v, buf.len())), "{v}");
            assert_eq!(read_varint(&buf[..buf.len() - 1]), None);
        }
    }

    #[test]
    fn keeps_seqs_across_blocks_with_any_gaps() {
        let seqs: Vec<u64> = (1..=1000u64)
            .scan(0u64, |at, i| {
                *at += [1, 2, 127, 128, 16_384, 1 << 40][(i % 6) as usize];
                Some(*at)
            })
            .collect();
        let s = build(&seqs);
        assert_eq!(all(&s), seqs);
        assert_eq!(s.len(), 1000);
        assert_eq!(s.last(), Some(*seqs.last().expect("some")));
        let mut out = Vec::new();
        s.collect_range(seqs[499], seqs[700], 10, &mut out);
        assert_eq!(out, seqs[500..510]);
        out.clear();
        s.collect_range(seqs[499] - 1, seqs[502], usize::MAX, &mut out);
        assert_eq!(out, seqs[499..=502]);
        out.clear();
        s.collect_range(seqs[999], u64::MAX, usize::MAX, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn ignores_seqs_not_above_the_last() {
        let mut s = build(&[5, 9]);
        s.push(9);
        s.push(3);
        assert_eq!(all(&s), vec![5, 9]);
        let mut one = Seqs::new(5);
        one.push(5);
        assert_eq!(all(&one), vec![5]);
    }

    #[test]
    fn steady_retention_does_not_grow_a_block() {
        let mut s = build(&(1..=10).collect::<Vec<u64>>());
        for q in 11..=10_000u64 {
            s.push(q);
            assert!(!s.remove(q - 10));
        }
        assert_eq!(all(&s), (9_991..=10_000).collect::<Vec<u64>>());
        let Seqs::Blocks(blocks) = &s else {
            panic!("blocks");
        };
        assert!(
            blocks.iter().all(|b| b.gaps.len() <= BLOCK as usize),
            "{blocks:?}"
        );
    }

    #[test]
    fn removes_oldest_first_and_any_other() {
        let seqs: Vec<u64> = (1..=300).map(|i| i * 3).collect();
        let mut s = build(&seqs);
        for q in &seqs[..200] {
            assert!(!s.remove(*q));
        }
        assert_eq!(all(&s), seqs[200..]);
        assert!(!s.remove(seqs[250]));
        assert!(!s.remove(4), "a seq not held changes nothing");
        let expect: Vec<u64> = seqs[200..]
            .iter()
            .copied()
            .filter(|&q| q != seqs[250])
            .collect();
        assert_eq!(all(&s), expect);
        for q in &expect[..expect.len() - 1] {
            assert!(!s.remove(*q));
        }
        assert!(s.remove(seqs[299]), "the last seq leaves it empty");
        assert!(Seqs::new(7).remove(7));
        assert!(!Seqs::new(7).remove(8));
    }

    #[test]
    fn dense_topic_costs_about_a_byte_per_seq() {
        let s = build(&(1..=100_000).collect::<Vec<u64>>());
        let Seqs::Blocks(blocks) = &s else {
            panic!("blocks");
        };
        let bytes: usize = blocks
            .iter()
            .map(|b| b.gaps.capacity() + std::mem::size_of::<Block>())
            .sum();
        assert!(bytes < 100_000 * 3 / 2, "{bytes} bytes");
    }
}
