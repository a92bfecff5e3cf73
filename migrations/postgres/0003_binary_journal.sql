-- Journal entries are stored in a compact binary form (see
-- host/src/store/codec.rs), as bytea. Entries written as JSON by earlier
-- versions keep their bytes and are still read. The plain columns (seq,
-- event_time_ms) are unchanged for SQL queries.
ALTER TABLE journal ALTER COLUMN entry TYPE bytea USING convert_to(entry, 'UTF8');
