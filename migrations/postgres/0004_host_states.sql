-- The host's own state for a strategy after event `seq`: the simulated
-- market, the paper account, pending timers and the fill ledger, so a restart
-- catches the venue up from here instead of from the journal's start. Opaque
-- to SQL (encoded by the host); the newest few are kept.
CREATE TABLE host_states (
    strategy_id   BIGINT NOT NULL REFERENCES strategies (id),
    seq           BIGINT NOT NULL,
    state         BYTEA  NOT NULL,
    checksum      BYTEA  NOT NULL,   -- SHA-256 of state
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (strategy_id, seq)
);
