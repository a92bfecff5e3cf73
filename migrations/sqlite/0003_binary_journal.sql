-- Journal entries are stored in a compact binary form (see
-- host/src/store/codec.rs), as BLOBs. Entries written as JSON by earlier
-- versions stay as they are and are still read; they become BLOBs here so
-- every entry has one type. The plain columns (seq, event_time_ms) are
-- unchanged for SQL queries.
UPDATE journal SET entry = CAST(entry AS BLOB) WHERE typeof(entry) = 'text';
