-- polybot schema, PostgreSQL flavour. Times are stored as milliseconds since the
-- Unix epoch (`*_ms`); the generated columns beside them give readable UTC
-- times for plain SQL, e.g.
--   SELECT COUNT(*) FROM trades WHERE executed_at > NOW() - INTERVAL '24 hours';

-- One row per strategy (agent) the host has run.
CREATE TABLE strategies (
    id            BIGSERIAL PRIMARY KEY,
    name          TEXT    NOT NULL UNIQUE,
    module_digest TEXT    NOT NULL DEFAULT '',
    state         TEXT    NOT NULL DEFAULT 'starting',
    restarts      BIGINT  NOT NULL DEFAULT 0,
    created_at_ms BIGINT  NOT NULL,
    updated_at_ms BIGINT  NOT NULL
);

-- The write-ahead journal: every event a strategy handled, in order, with the
-- actions it returned (or why it was quarantined). Recovery replays it.
CREATE TABLE journal (
    strategy_id   BIGINT NOT NULL REFERENCES strategies (id),
    seq           BIGINT  NOT NULL,
    event_time_ms BIGINT  NOT NULL,
    entry         TEXT    NOT NULL,   -- JSON: the event and its outcome
    PRIMARY KEY (strategy_id, seq)
);

-- Serialised strategy state after event `seq`; the newest few are kept.
CREATE TABLE checkpoints (
    strategy_id   BIGINT NOT NULL REFERENCES strategies (id),
    seq           BIGINT  NOT NULL,
    event_time_ms BIGINT  NOT NULL,
    state_version INTEGER NOT NULL,
    module_digest TEXT    NOT NULL,
    state         BYTEA    NOT NULL,
    checksum      BYTEA    NOT NULL,   -- SHA-256 of state
    created_at_ms BIGINT  NOT NULL,
    PRIMARY KEY (strategy_id, seq)
);

-- Order intents, named `<seq>.<index>` after the event and action that made them.
CREATE TABLE orders (
    strategy_id   BIGINT NOT NULL REFERENCES strategies (id),
    intent_id     TEXT    NOT NULL,
    seq           BIGINT  NOT NULL,
    market        TEXT    NOT NULL,
    side          TEXT    NOT NULL,
    price         DOUBLE PRECISION    NOT NULL,
    size          DOUBLE PRECISION    NOT NULL,
    order_type    TEXT    NOT NULL,
    created_at_ms BIGINT  NOT NULL,
    PRIMARY KEY (strategy_id, intent_id)
);

-- Fills. `pnl` is the profit this fill realised, after its fee.
CREATE TABLE trades (
    strategy_id    BIGINT NOT NULL REFERENCES strategies (id),
    seq            BIGINT  NOT NULL,  -- journal seq of the fill event
    intent_id      TEXT    NOT NULL,
    market         TEXT    NOT NULL,
    side           TEXT    NOT NULL,
    price          DOUBLE PRECISION    NOT NULL,
    size           DOUBLE PRECISION    NOT NULL,
    fee            DOUBLE PRECISION    NOT NULL,
    pnl            DOUBLE PRECISION    NOT NULL,
    executed_at_ms BIGINT  NOT NULL,
    executed_at    TIMESTAMPTZ GENERATED ALWAYS AS (to_timestamp(executed_at_ms / 1000.0)) STORED,
    PRIMARY KEY (strategy_id, seq)
);
CREATE INDEX trades_by_time ON trades (strategy_id, executed_at_ms);

-- State changes, faults, quarantines, store outages: what happened and when.
CREATE TABLE system_events (
    id           BIGSERIAL PRIMARY KEY,
    timestamp_ms BIGINT  NOT NULL,
    timestamp    TIMESTAMPTZ GENERATED ALWAYS AS (to_timestamp(timestamp_ms / 1000.0)) STORED,
    event_type   TEXT    NOT NULL,
    component    TEXT    NOT NULL,
    message      TEXT    NOT NULL,
    -- identity of the event, so a resync after an outage never adds it twice
    dedup_key    TEXT    NOT NULL UNIQUE
);
CREATE INDEX system_events_by_time ON system_events (timestamp_ms);
