//! Arbitrary bytes at the client-frame decoder: it must return a frame or a contract error,
//! never panic. Text frames are UTF-8, so non-UTF-8 input is decoded lossily, as a hostile
//! client cannot send anything else through a text frame.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Err(code) = mqws::fuzzing::decode_client_frame(&text) {
        assert_eq!(code, "bad_request");
    }
});
