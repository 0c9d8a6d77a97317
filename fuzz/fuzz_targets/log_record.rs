//! Arbitrary bytes at the log-record decoder (what a corrupt or foreign sled file could hold):
//! it must return a record or an error, never panic; a decoded record must re-encode to the
//! same value bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mqws::log::Record;

fuzz_target!(|data: &[u8]| {
    let (key, value) = data.split_at(data.len().min(8));
    if let Ok(record) = Record::decode(key, value) {
        assert_eq!(record.encode_value(), value);
    }
});
