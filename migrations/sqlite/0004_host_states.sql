-- The host's own state for a strategy after event `seq`: the simulated
-- market, the paper account, pending timers and the fill ledger, so a restart
-- catches the venue up from here instead of from the journal's start. Opaque
-- to SQL (encoded by the host); the newest few are kept.
CREATE TABLE host_states (
    strategy_id   INTEGER NOT NULL REFERENCES strategies (id),
    seq           INTEGER NOT NULL,
    state         BLOB    NOT NULL,
    checksum      BLOB    NOT NULL,   -- SHA-256 of state
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (strategy_id, seq)
);
