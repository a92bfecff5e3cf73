-- Order intents as the execution layer keeps them: one row per intent with
-- its current state, and every move it made (`intent_transitions`, append
-- only; `step` numbers an intent's moves, so a move written again by a
-- replay is the same row). Times are event time (ms since the Unix epoch).
CREATE TABLE intents (
    id            INTEGER PRIMARY KEY,
    strategy_id   INTEGER NOT NULL REFERENCES strategies (id),
    intent_id     TEXT    NOT NULL,
    market        TEXT    NOT NULL,
    side          TEXT    NOT NULL,
    price         REAL    NOT NULL,
    size          REAL    NOT NULL,
    order_type    TEXT    NOT NULL,
    state         TEXT    NOT NULL,
    filled        REAL    NOT NULL,
    reason        TEXT,
    venue_ref     TEXT,
    step          INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    UNIQUE (strategy_id, intent_id)
);
CREATE INDEX intents_open ON intents (strategy_id, state);

CREATE TABLE intent_transitions (
    strategy_id INTEGER NOT NULL REFERENCES strategies (id),
    intent_id   TEXT    NOT NULL,
    step        INTEGER NOT NULL,
    from_state  TEXT,
    to_state    TEXT    NOT NULL,
    filled      REAL    NOT NULL,
    remaining   REAL    NOT NULL,
    reason      TEXT,
    at_ms       INTEGER NOT NULL,
    PRIMARY KEY (strategy_id, intent_id, step)
);

-- Venue trades reconciliation turned into fills: each is journaled once.
CREATE TABLE exec_trades (
    strategy_id INTEGER NOT NULL REFERENCES strategies (id),
    trade_id    TEXT    NOT NULL,
    PRIMARY KEY (strategy_id, trade_id)
);

-- An operator's halt of a strategy's placement (`polybot-host halt`), by
-- strategy name: it may be set before the strategy first runs.
CREATE TABLE halts (
    strategy TEXT    PRIMARY KEY,
    halted   BOOLEAN NOT NULL,
    reason   TEXT    NOT NULL,
    at_ms    INTEGER NOT NULL
);
