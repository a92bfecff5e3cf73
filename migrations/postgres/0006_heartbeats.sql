-- Each strategy's newest heartbeat as its host last wrote it (wall time, ms
-- since the Unix epoch): `status` reads it while the host is down, and its
-- age tells a host that stopped beating. `body` is the heartbeat's JSON.
CREATE TABLE heartbeats (
    strategy TEXT    PRIMARY KEY,
    host     TEXT    NOT NULL,
    at_ms    BIGINT  NOT NULL,
    body     TEXT    NOT NULL
);
