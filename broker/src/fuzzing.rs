//! Entry point for the cargo-fuzz target `mqtt_proxy` in `fuzz/`: the proxy's parsers of
//! untrusted MQTT bytes (the CONNECT reader, the client→broker watcher, the broker→client
//! side). Not an API for anything else.

use std::sync::Arc;

use crate::proxy::downstream::Downstream;
use crate::proxy::observe::Observer;
use crate::proxy::subscribe::{FilterLimits, FilterRegistry, Owner, Subscriptions};

fn observer(v5: bool) -> Observer {
    let limits = FilterLimits {
        registry: FilterRegistry::new(64, 64, 64),
        per_client: 8,
        max_length: 256,
    };
    Observer::new(
        v5,
        64 * 1024,
        Arc::from(["#".to_owned()]),
        Subscriptions::new(v5, limits, Owner::Source([127, 0, 0, 1].into()), None),
    )
    .with_bypass()
}

/// Feeds `stream` to every parser, whole and in reads of `cut` bytes. Panics (the finding) when
/// a parser panics or when what the watcher passes on depends on how the stream was cut, or
/// when the broker→client side changes bytes it has no reason to change.
pub fn proxy_streams(v5: bool, cut: usize, stream: &[u8]) {
    let _ = crate::proxy::connect::parse(stream);
    let run = |chunk: usize| {
        let mut o = observer(v5);
        let (mut seen, mut fwd) = (Vec::new(), Vec::new());
        for c in stream.chunks(chunk.max(1)) {
            o.feed(c, true, &mut seen, &mut fwd);
        }
        (seen, fwd)
    };
    assert_eq!(
        run(stream.len()),
        run(cut),
        "the watcher depends on how reads cut the stream"
    );
    let mut down = Downstream::new(v5);
    let mut out = Vec::new();
    for c in stream.chunks(cut.max(1)) {
        down.feed(c, &mut out);
    }
    assert!(
        without_unsubacks(stream).starts_with(&out),
        "the broker→client side changed bytes"
    );
}

/// `stream` without its UNSUBACK packets, which the broker→client side drops (the proxy
/// answers every UNSUBSCRIBE itself): a reference walk over fixed headers, independent of the
/// machine's own.
fn without_unsubacks(stream: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(stream.len());
    let mut i = 0;
    while i < stream.len() {
        let start = i;
        i += 1;
        // The remaining length: at most four bytes, the last without the continuation bit.
        let mut len = 0usize;
        let mut shift = 0;
        loop {
            let Some(&b) = stream.get(i) else {
                out.extend_from_slice(&stream[start..]);
                return out;
            };
            i += 1;
            len += usize::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 || i - start == 5 {
                break;
            }
        }
        let end = i.saturating_add(len).min(stream.len());
        if stream[start] >> 4 != 11 {
            out.extend_from_slice(&stream[start..end]);
        }
        i = end;
    }
    out
}

#[cfg(test)]
mod tests {
    proptest::proptest! {
        /// The fuzz target's properties on stable, for CI: arbitrary bytes, and arbitrary bytes
        /// after a well-formed SUBSCRIBE and PUBLISH.
        #[test]
        fn the_fuzz_property_holds(
            v5: bool,
            cut in 1usize..64,
            junk in proptest::collection::vec(proptest::num::u8::ANY, 0..512),
        ) {
            super::proxy_streams(v5, cut, &junk);
            let mut stream = vec![0x82, 8, 0, 1, 0, 3, b'a', b'/', b'#', 1];
            if v5 {
                stream = vec![0x82, 9, 0, 1, 0, 0, 3, b'a', b'/', b'#', 1];
            }
            stream.extend([0x30, 5, 0, 1, b't', b'h', b'i']);
            stream.extend(&junk);
            super::proxy_streams(v5, cut, &stream);
        }
    }
}
