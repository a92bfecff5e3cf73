-- polybot schema, SQLite flavour. Times are stored as milliseconds since the
-- Unix epoch (`*_ms`); the generated columns beside them give readable UTC
-- times for plain SQL, e.g.
--   SELECT COUNT(*) FROM trades WHERE executed_at > datetime('now', '-24 hours');

-- One row per strategy (agent) the host has run.
CREATE TABLE strategies (
    id            INTEGER PRIMARY KEY,
    name          TEXT    NOT NULL UNIQUE,
    module_digest TEXT    NOT NULL DEFAULT '',
    state         TEXT    NOT NULL DEFAULT 'starting',
    restarts      INTEGER NOT NULL DEFAULT 0,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);

-- The write-ahead journal: every event a strategy handled, in order, with the
-- actions it returned (or why it was quarantined). Recovery replays it.
CREATE TABLE journal (
    strategy_id   INTEGER NOT NULL REFERENCES strategies (id),
    seq           INTEGER NOT NULL,
    event_time_ms INTEGER NOT NULL,
    entry         TEXT    NOT NULL,   -- JSON: the event and its outcome
    PRIMARY KEY (strategy_id, seq)
) WITHOUT ROWID;

-- Serialised strategy state after event `seq`; the newest few are kept.
CREATE TABLE checkpoints (
    strategy_id   INTEGER NOT NULL REFERENCES strategies (id),
    seq           INTEGER NOT NULL,
    event_time_ms INTEGER NOT NULL,
    state_version INTEGER NOT NULL,
    module_digest TEXT    NOT NULL,
    state         BLOB    NOT NULL,
    checksum      BLOB    NOT NULL,   -- SHA-256 of state
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (strategy_id, seq)
);

-- Order intents, named `<seq>.<index>` after the event and action that made them.
CREATE TABLE orders (
    strategy_id   INTEGER NOT NULL REFERENCES strategies (id),
    intent_id     TEXT    NOT NULL,
    seq           INTEGER NOT NULL,
    market        TEXT    NOT NULL,
    side          TEXT    NOT NULL,
    price         REAL    NOT NULL,
    size          REAL    NOT NULL,
    order_type    TEXT    NOT NULL,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (strategy_id, intent_id)
);

-- Fills. `pnl` is the profit this fill realised, after its fee.
CREATE TABLE trades (
    strategy_id    INTEGER NOT NULL REFERENCES strategies (id),
    seq            INTEGER NOT NULL,  -- journal seq of the fill event
    intent_id      TEXT    NOT NULL,
    market         TEXT    NOT NULL,
    side           TEXT    NOT NULL,
    price          REAL    NOT NULL,
    size           REAL    NOT NULL,
    fee            REAL    NOT NULL,
    pnl            REAL    NOT NULL,
    executed_at_ms INTEGER NOT NULL,
    executed_at    TEXT GENERATED ALWAYS AS (datetime(executed_at_ms / 1000, 'unixepoch')) VIRTUAL,
    PRIMARY KEY (strategy_id, seq)
);
CREATE INDEX trades_by_time ON trades (strategy_id, executed_at_ms);

-- State changes, faults, quarantines, store outages: what happened and when.
CREATE TABLE system_events (
    id           INTEGER PRIMARY KEY,
    timestamp_ms INTEGER NOT NULL,
    timestamp    TEXT GENERATED ALWAYS AS (datetime(timestamp_ms / 1000, 'unixepoch')) VIRTUAL,
    event_type   TEXT    NOT NULL,
    component    TEXT    NOT NULL,
    message      TEXT    NOT NULL,
    -- identity of the event, so a resync after an outage never adds it twice
    dedup_key    TEXT    NOT NULL UNIQUE
);
CREATE INDEX system_events_by_time ON system_events (timestamp_ms);
