//! Arbitrary bytes as an MQTT stream through the proxy's parsers (CONNECT, client→broker,
//! broker→client): never a panic, and the same result however reads cut the stream. The first
//! byte picks the protocol version and the read size.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((&pick, stream)) = data.split_first() {
        mqws_broker::fuzzing::proxy_streams(pick & 1 == 1, usize::from(pick >> 1) + 1, stream);
    }
});
