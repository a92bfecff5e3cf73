//! Store benchmark: prints a table.
//!
//! - journal append throughput with group commit, SQLite (WAL, synchronous=FULL)
//!   and PostgreSQL (the machine's server, a scratch database);
//! - checkpoint write latency (write + sync), p50 / p99;
//! - restart: from opening the store to 10 strategies running again, each
//!   replaying 10,000 journaled events (no checkpoint but the first);
//! - backlog resync: PostgreSQL cut off (through a fault proxy) while 20,000
//!   events are journaled in 5,000 small group commits, as a long outage
//!   leaves them; then the time a store opened on the same data directory
//!   takes to replay that backlog into the database.
//!
//! Run: `cargo bench -p polybot-tests --bench store`

use std::sync::Arc;
use std::time::{Duration, Instant};

use polybot_host::contract::{Book, Event, EventKind, Level};
use polybot_host::sandbox::{Sandbox, SandboxLimits};
use polybot_host::store::sql::{SqlStore, StoreLocation};
use polybot_host::store::{Checkpoint, JournalEntry, Outcome, StateStore, Write};
use polybot_host::supervisor::{Cell, CellSpec, CheckpointPolicy};
use polybot_tests::proxy::FaultProxy;
use polybot_tests::{POSTGRES, TempDatabase, guest, quick_restarts};

const APPENDS: u64 = 200_000;
const CHECKPOINTS: usize = 200;
const STRATEGIES: usize = 10;
const REPLAY: u64 = 10_000;
const BACKLOG_EVENTS: u64 = 20_000;
/// Events per group commit during the outage.
const BACKLOG_BATCH: u64 = 4;

fn book_event(seq: u64) -> EventKind {
    let mid = 0.5 + 0.1 * ((seq as f64) / 50.0).sin();
    EventKind::Book(Book {
        market: format!("sim-{}", seq % 3),
        bids: (0..5)
            .map(|i| Level {
                price: mid - 0.005 - 0.01 * i as f64,
                size: 100.0 + i as f64,
            })
            .collect(),
        asks: (0..5)
            .map(|i| Level {
                price: mid + 0.005 + 0.01 * i as f64,
                size: 100.0 + i as f64,
            })
            .collect(),
    })
}

fn entry(seq: u64) -> JournalEntry {
    JournalEntry {
        event: Event {
            seq,
            timestamp_ms: 1_767_225_600_000 + seq * 200,
            kind: book_event(seq),
        },
        outcome: Outcome::Handled(Vec::new()),
    }
}

async fn append_throughput(store: &SqlStore) -> f64 {
    let started = Instant::now();
    for seq in 1..=APPENDS {
        store
            .write(Write::Journal {
                strategy: "bench".into(),
                entry: entry(seq),
            })
            .await
            .unwrap();
    }
    store.sync().await.unwrap();
    APPENDS as f64 / started.elapsed().as_secs_f64()
}

async fn checkpoint_latency(store: &SqlStore) -> (Duration, Duration) {
    let state = vec![b'x'; 3000];
    let mut times = Vec::new();
    for i in 0..CHECKPOINTS {
        let checkpoint = Checkpoint::new(APPENDS - i as u64, 0, 1, "bench", state.clone());
        let started = Instant::now();
        store
            .write(Write::Checkpoint {
                strategy: "bench".into(),
                checkpoint: (&checkpoint).into(),
            })
            .await
            .unwrap();
        store.sync().await.unwrap();
        times.push(started.elapsed());
    }
    times.sort();
    (times[times.len() / 2], times[times.len() * 99 / 100])
}

async fn restart_time(location: StoreLocation, data: &std::path::Path) -> Duration {
    let cache = data.join("cache");
    // Fill the journals: each strategy handled REPLAY book events.
    {
        let sandbox = Sandbox::new(SandboxLimits::default(), Some(cache.clone())).unwrap();
        let module = sandbox.load(&guest("momentum")).unwrap();
        module.save_to_cache().unwrap();
        let store: Arc<dyn StateStore> =
            Arc::new(SqlStore::open(location.clone(), data).await.unwrap());
        for s in 0..STRATEGIES {
            let spec = spec(format!("s{s}"), module.clone());
            let mut cell = Cell::start(spec, store.clone()).await.unwrap();
            for seq in 1..=REPLAY {
                cell.handle(1_767_225_600_000 + seq * 200, book_event(seq))
                    .await
                    .unwrap();
            }
            // Killed: no final checkpoint.
        }
        store.sync().await.unwrap();
    }
    // The restart: open the store, load the module (cached code), start all.
    let started = Instant::now();
    let store: Arc<dyn StateStore> = Arc::new(SqlStore::open(location, data).await.unwrap());
    let sandbox = Sandbox::new(SandboxLimits::default(), Some(cache)).unwrap();
    let module = sandbox.load(&guest("momentum")).unwrap();
    // Each strategy is its own cell: they recover side by side, as a host
    // running several strategies starts them.
    let starts: Vec<_> = (0..STRATEGIES)
        .map(|s| {
            tokio::spawn(Cell::start(
                spec(format!("s{s}"), module.clone()),
                store.clone(),
            ))
        })
        .collect();
    for start in starts {
        let cell = start.await.unwrap().unwrap();
        assert_eq!(cell.last_seq(), REPLAY);
        assert_eq!(cell.stats().replayed, REPLAY);
    }
    started.elapsed()
}

/// Builds a backlog while the database is cut off, then times its replay.
async fn resync_time(db: &TempDatabase, data: &std::path::Path) -> Duration {
    let proxy = FaultProxy::start(POSTGRES.parse().unwrap()).await.unwrap();
    {
        let via_proxy = StoreLocation::Postgres(db.url_via(&proxy.addr().to_string()));
        let store = SqlStore::open(via_proxy, data).await.unwrap();
        // The strategy has started (its journal end is read) before the outage.
        assert_eq!(store.last_seq("outage").await.unwrap(), 0);
        proxy.cut();
        for seq in 1..=BACKLOG_EVENTS {
            store
                .write(Write::Journal {
                    strategy: "outage".into(),
                    entry: entry(seq),
                })
                .await
                .unwrap();
            if seq % BACKLOG_BATCH == 0 {
                store.sync().await.unwrap();
            }
        }
        assert!(*store.outage().borrow(), "the writes went to the backlog");
    }
    let backlog = std::fs::read_dir(data.join("backlog")).unwrap().count();
    assert!(backlog as u64 >= BACKLOG_EVENTS / BACKLOG_BATCH);
    let started = Instant::now();
    let store = SqlStore::open(StoreLocation::Postgres(db.url()), data)
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(store.last_seq("outage").await.unwrap(), BACKLOG_EVENTS);
    elapsed
}

fn spec(name: String, module: polybot_host::sandbox::StrategyModule) -> CellSpec {
    CellSpec {
        name,
        module,
        config_json: "{}".into(),
        restart: quick_restarts(10),
        // Only the first checkpoint: the restart replays every event.
        checkpoint: CheckpointPolicy {
            every_events: u64::MAX,
            every_event_time: Duration::MAX,
        },
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = SqlStore::open(StoreLocation::Sqlite(dir.path().join("bench.db")), dir.path()).await.unwrap();
        let sqlite_rate = append_throughput(&sqlite).await;
        let (sqlite_p50, sqlite_p99) = checkpoint_latency(&sqlite).await;

        let db = TempDatabase::create("pb_bench");
        let pg_dir = tempfile::tempdir().unwrap();
        let pg = SqlStore::open(StoreLocation::Postgres(db.url()), pg_dir.path()).await.unwrap();
        let pg_rate = append_throughput(&pg).await;
        let (pg_p50, pg_p99) = checkpoint_latency(&pg).await;

        let restart_dir = tempfile::tempdir().unwrap();
        let restart = restart_time(
            StoreLocation::Sqlite(restart_dir.path().join("polybot.db")),
            restart_dir.path(),
        )
        .await;

        let resync_db = TempDatabase::create("pb_bench_resync");
        let resync_dir = tempfile::tempdir().unwrap();
        let resync = resync_time(&resync_db, resync_dir.path()).await;

        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!();
        println!("| measurement                                             | value          | target        |");
        println!("|---------------------------------------------------------|----------------|---------------|");
        println!("| journal appends, group commit, SQLite (FULL)            | {sqlite_rate:>9.0} ev/s | ≥ 100,000 ev/s |");
        println!("| journal appends, group commit, PostgreSQL               | {pg_rate:>9.0} ev/s | —             |");
        println!("| checkpoint write + sync, SQLite, p50 / p99              | {:>5.2} / {:>5.2} ms | —             |", ms(sqlite_p50), ms(sqlite_p99));
        println!("| checkpoint write + sync, PostgreSQL, p50 / p99          | {:>5.2} / {:>5.2} ms | —             |", ms(pg_p50), ms(pg_p99));
        println!("| restart: {STRATEGIES} strategies × {REPLAY} events replayed, to running | {:>11.1} ms | ≤ 500 ms      |", ms(restart));
        println!("| backlog resync into PostgreSQL, {BACKLOG_EVENTS} events in {} commits | {:>11.1} ms | —             |", BACKLOG_EVENTS / BACKLOG_BATCH, ms(resync));
    });
}
