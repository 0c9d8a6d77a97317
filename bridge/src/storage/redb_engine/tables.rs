//! The tables of the database and what each holds (see ARCHITECTURE.md, "Storage layout").

use redb::TableDefinition;

/// First seq of a chunk → the chunk (records of one group commit, [`super::chunk`]).
pub(super) const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
/// `format`, `epoch`, `next_seq`, `evicted_ts`, `session_key`.
pub(super) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// First seq of a lost range → its last seq.
pub(super) const GAPS: TableDefinition<u64, u64> = TableDefinition::new("gaps");
/// Session id → its stored value (JSON).
pub(super) const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
/// (last-used ms, session id) → nothing: sessions ordered by idleness.
pub(super) const SESSIONS_IDLE: TableDefinition<(u64, &str), ()> =
    TableDefinition::new("sessions_idle");
/// MQTT client id → its persistent session (the broker's encoding).
pub(super) const MQTT_SESSIONS: TableDefinition<&str, &[u8]> =
    TableDefinition::new("mqtt_sessions");
/// (expiry deadline ms, MQTT client id) → nothing: MQTT sessions ordered by when they expire.
pub(super) const MQTT_SESSIONS_IDLE: TableDefinition<(u64, &str), ()> =
    TableDefinition::new("mqtt_sessions_idle");
/// Topic → its retained payload.
pub(super) const RETAINED: TableDefinition<&str, &[u8]> = TableDefinition::new("retained");
