//! Arbitrary bytes at the log-record and log-chunk decoders (what a corrupt or foreign data file
//! could hold): they must return a value or an error, never panic; a decoded record must
//! re-encode to the same value bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (key, value) = data.split_at(data.len().min(8));
    if let Some(encoded) = mqws::fuzzing::decode_log_record(key, value) {
        assert_eq!(encoded, value);
    }
    let _ = mqws::fuzzing::decode_log_chunk(data);
});
