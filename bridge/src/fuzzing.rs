//! Entry points for the cargo-fuzz targets in `fuzz/`: the decoders that read untrusted bytes
//! (client frames from the network, log chunks and records from disk). Not an API for anything
//! else; they only report whether the input decoded.

/// Decodes a client text frame. `Err` carries the contract error code it would answer with.
pub fn decode_client_frame(text: &str) -> Result<(), &'static str> {
    crate::protocol::client::decode(text)
        .map(|_| ())
        .map_err(|e| e.code.as_str())
}

/// Decodes one stored log record (`key` is its seq, `value` its encoding) and, when it decodes,
/// returns its encoding again (a decoded record must re-encode to the same bytes).
pub fn decode_log_record(key: &[u8], value: &[u8]) -> Option<Vec<u8>> {
    crate::storage::fuzzing::record_round_trip(key, value)
}

/// Decodes a stored log chunk; returns how many records it held.
pub fn decode_log_chunk(value: &[u8]) -> Option<usize> {
    crate::storage::fuzzing::chunk_len(value)
}
