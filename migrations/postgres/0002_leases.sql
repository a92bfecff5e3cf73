-- Which host drives each strategy. A host takes a strategy's lease before
-- running it and renews it while it runs; another host may take it over only
-- once it has expired (or, on the same data directory, once the OS file lock
-- shows the holder is dead). `token` grows on every take-over: a host whose
-- renewal finds another token has lost the strategy and stops.
CREATE TABLE leases (
    strategy       TEXT    PRIMARY KEY,
    token          BIGINT  NOT NULL,
    holder_host    TEXT    NOT NULL,
    holder_pid     BIGINT  NOT NULL,
    holder_dir     TEXT    NOT NULL,
    acquired_at_ms BIGINT  NOT NULL,
    renewed_at_ms  BIGINT  NOT NULL,
    expires_at_ms  BIGINT  NOT NULL
);
