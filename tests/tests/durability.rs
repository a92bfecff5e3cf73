//! Durable state end to end: a host killed with SIGKILL at random points
//! resumes to exactly the state of an uninterrupted run (SQLite and
//! PostgreSQL); a database that goes away mid-run is survived and resynced
//! exactly once; bad stores and corrupt checkpoints are named and handled.
//!
//! The nothing-lost check follows Jepsen's set checker: every acknowledged
//! item (journal entry, order intent, fill) of the killed run must be present
//! exactly once, and nothing may be present that an uninterrupted run over the
//! same seeded market did not produce.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use polybot_host::store::sql::{SqlStore, StoreLocation};
use polybot_host::store::{JournalEntry, OrderRecord, StateStore, TradeRecord};
use polybot_tests::{LoggingHost, TempDatabase, guest};

const EVENTS: &str = "6000";

/// The pace of the runs that are killed: the 6,000 events span about 850 s
/// of event time, so a run takes several seconds of wall time and a kill at
/// a random moment of its first half second lands mid-run, however fast the
/// resume before it (catching up is never paced).
const KILLED_SPEED: &str = "150";

fn host() -> Command {
    polybot_tests::host_command!("info")
}

fn run_args(data: &Path, store: Option<&str>) -> Vec<String> {
    run_args_paced(data, store, EVENTS, "max")
}

/// As [`run_args`], for `events` events at `speed`.
fn run_args_paced(data: &Path, store: Option<&str>, events: &str, speed: &str) -> Vec<String> {
    let momentum = guest("momentum");
    let mut args: Vec<String> = [
        "run",
        "--strategy",
        momentum.to_str().unwrap(),
        "--speed",
        speed,
        "--events",
        events,
        "--json",
        "--data-dir",
        data.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(url) = store {
        args.extend(["--store".to_string(), url.to_string()]);
    }
    args
}

/// Runs to completion.
fn run_to_end(data: &Path, store: Option<&str>) -> serde_json::Value {
    run_args_to_end(run_args(data, store))
}

fn run_args_to_end(args: Vec<String>) -> serde_json::Value {
    let output = host().args(args).output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// A small deterministic generator for kill delays; the seed is printed.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

/// The last journaled seq, as `status` reads it from the store.
fn stored_last_seq(data: &Path, store: Option<&str>) -> u64 {
    let mut command = host();
    command.args(["status", "--json", "--data-dir", data.to_str().unwrap()]);
    if let Some(url) = store {
        command.args(["--store", url]);
    }
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    json["strategies"][0]["last_seq"].as_u64().unwrap_or(0)
}

/// Starts the run, waits until the strategy is running, lets it work for a
/// random while, then SIGKILLs it. Several times. Each kill must land mid-run:
/// the host still running when killed, and the journal grown by it but short
/// of the end.
fn kill_repeatedly(data: &Path, store: Option<&str>, kills: usize) {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("kill delays seeded with {seed}");
    let mut rng = Lcg(seed);
    let end: u64 = EVENTS.parse().unwrap();
    let mut before = 0;
    for kill in 0..kills {
        // Fault injection: how long it works before the kill is the random part.
        kill_mid_run(
            data,
            store,
            Some(before),
            Duration::from_millis(50 + rng.next(400)),
            kill,
        );
        let after = stored_last_seq(data, store);
        eprintln!("kill {kill}: journal at seq {after}");
        assert!(
            after > before && after < end,
            "kill {kill} did not land mid-run: journal went from {before} to {after} of {end}"
        );
        before = after;
    }
}

/// Starts the (paced) run, waits (given `before`) until it has made durable
/// progress beyond that seq (a restart first recovers, which may take a while
/// on a busy machine), lets it work for `delay` more, and SIGKILLs it,
/// asserting it was still running.
fn kill_mid_run(
    data: &Path,
    store: Option<&str>,
    before: Option<u64>,
    delay: Duration,
    kill: usize,
) {
    let mut host = LoggingHost::start_running(
        host()
            .args(run_args_paced(data, store, EVENTS, KILLED_SPEED))
            .stdout(Stdio::null()),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while let Some(before) = before
        && stored_last_seq(data, store) <= before
    {
        assert!(
            std::time::Instant::now() < deadline,
            "kill {kill}: the restarted run made no durable progress beyond seq {before} in 30 s"
        );
        assert!(
            host.child.try_wait().unwrap().is_none(),
            "kill {kill}: the run ended before making progress"
        );
        std::thread::sleep(Duration::from_millis(20)); // polling interval, bounded by the deadline
    }
    std::thread::sleep(delay);
    assert!(
        host.child.try_wait().unwrap().is_none(),
        "kill {kill} came after the run had finished"
    );
    host.child.kill().unwrap(); // SIGKILL
    host.child.wait().unwrap();
    host.drain_log();
}

struct Durable {
    journal: Vec<JournalEntry>,
    orders: Vec<OrderRecord>,
    trades: Vec<TradeRecord>,
    final_state: Vec<u8>,
}

async fn read_back(location: StoreLocation, data: &Path) -> Durable {
    let store = SqlStore::open(location, data).await.unwrap();
    let mut orders = store.orders("momentum").await.unwrap();
    for o in &mut orders {
        o.created_at_ms = 0; // wall time differs between runs
    }
    Durable {
        journal: store.entries_after("momentum", 0).await.unwrap(),
        orders,
        trades: store.trades("momentum").await.unwrap(),
        final_state: store.checkpoints("momentum").await.unwrap()[0]
            .state
            .clone(),
    }
}

fn nothing_lost(killed: &Durable, reference: &Durable) {
    // Every journal seq present exactly once, without gaps.
    let seqs: Vec<u64> = killed.journal.iter().map(|e| e.event.seq).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "journal has gaps or repeats"
    );
    // Every intent the journal says was placed is recorded once, and no other.
    let placed: Vec<String> = killed
        .journal
        .iter()
        .flat_map(|e| match &e.outcome {
            polybot_host::store::Outcome::Handled(actions) => {
                polybot_host::supervisor::plan(e.event.seq, actions.clone())
            }
            _ => Vec::new(),
        })
        .filter(|p| !p.intent_id.is_empty())
        .map(|p| p.intent_id)
        .collect();
    let mut recorded: Vec<String> = killed.orders.iter().map(|o| o.intent_id.clone()).collect();
    let mut expected = placed.clone();
    recorded.sort();
    expected.sort();
    assert_eq!(
        recorded, expected,
        "orders table differs from the journal's intents"
    );
    let lost = reference.journal.len().saturating_sub(killed.journal.len());
    eprintln!(
        "nothing-lost check: acknowledged {} events / {} orders / {} fills; lost {lost}",
        killed.journal.len(),
        killed.orders.len(),
        killed.trades.len()
    );
    // The killed-and-resumed run is the uninterrupted one: same events, same
    // orders (none sent twice: a duplicate would show as a rejection), same
    // fills, same final state.
    assert_eq!(killed.journal.len(), reference.journal.len());
    if let Some(i) = (0..killed.journal.len()).find(|&i| killed.journal[i] != reference.journal[i])
    {
        panic!(
            "journals differ first at seq {}:\nkilled:    {:?}\nreference: {:?}",
            i + 1,
            killed.journal[i],
            reference.journal[i]
        );
    }
    assert_eq!(killed.orders, reference.orders);
    assert_eq!(killed.trades, reference.trades);
    assert_eq!(
        killed.final_state, reference.final_state,
        "final strategy state differs"
    );
    assert!(
        !killed.orders.is_empty(),
        "the run placed no orders, so the check proves little"
    );
}

/// The venue's own record — the paper account the final run ends with, and
/// the orders and fills it saw, replayed history included — is the
/// uninterrupted run's: an order sent twice would show here as an extra order
/// or fill and a different position.
fn same_venue_record(resumed: &serde_json::Value, reference: &serde_json::Value) {
    for key in ["orders", "fills", "cancels", "portfolio"] {
        assert_eq!(
            resumed["report"][key], reference["report"][key],
            "the venue's record of `{key}` differs from an uninterrupted run"
        );
    }
}

#[test]
fn sigkilled_host_resumes_exactly_with_sqlite() {
    let reference_dir = tempfile::tempdir().unwrap();
    let killed_dir = tempfile::tempdir().unwrap();
    let reference = run_to_end(reference_dir.path(), None);
    kill_repeatedly(killed_dir.path(), None, 4);
    let last = run_to_end(killed_dir.path(), None);
    assert_eq!(last["report"]["state"], "stopped");
    same_venue_record(&last, &reference);
    sqlite_nothing_lost(killed_dir.path(), reference_dir.path());
    // Four killed runs and the last one: five starts.
    let db = StoreLocation::Sqlite(killed_dir.path().join("polybot.db"));
    history_is_clean(db, killed_dir.path(), &last, 5);
}

/// The history checker over the store of a run that used the simulated
/// venue, against that venue's record (the paper account of the final run,
/// which the run rebuilt through the whole journal).
fn history_is_clean(db: StoreLocation, data: &Path, last: &serde_json::Value, starts: u64) {
    use polybot_tests::checker::{Expect, History, VenueRecord, check_and_print};
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let history = runtime.block_on(async {
        let store = SqlStore::open(db, data).await.unwrap();
        History::read(&store, &["momentum"]).await.unwrap()
    });
    let report = &last["report"];
    let venue = VenueRecord {
        order_count: report["orders"].as_u64(),
        fill_count: report["portfolio"]["fills"].as_u64(),
        // The paper account starts with 10,000 unless configured.
        cash_change: report["portfolio"]["cash"].as_f64().map(|c| c - 10_000.0),
        realized_pnl: report["portfolio"]["realized_pnl"].as_f64(),
        ..VenueRecord::default()
    };
    let verdict = check_and_print(
        &history,
        &Expect {
            venue: [("momentum".to_string(), venue)].into(),
            host_starts: Some(starts),
        },
    );
    verdict.assert_clean();
    assert!(
        verdict.tally("fills").recovered > 0,
        "no fills: the check proves little"
    );
}

#[test]
fn a_torn_journal_tail_is_discarded_and_the_run_resumes_exactly() {
    let reference_dir = tempfile::tempdir().unwrap();
    let torn_dir = tempfile::tempdir().unwrap();
    run_to_end(reference_dir.path(), None);
    // One kill, and no read of the store after it: a reader closing the
    // database would fold the write-ahead log back into it.
    kill_mid_run(torn_dir.path(), None, None, Duration::from_millis(300), 0);
    // Tear the last write: cut the tail off SQLite's write-ahead log, as a
    // crash in the middle of writing a commit would.
    let wal = torn_dir.path().join("polybot.db-wal");
    let wal_len = std::fs::metadata(&wal)
        .expect("a killed host leaves its write-ahead log")
        .len();
    assert!(wal_len > 1000, "the log holds commits ({wal_len} bytes)");
    let file = std::fs::OpenOptions::new().write(true).open(&wal).unwrap();
    file.set_len(wal_len - 777).unwrap();
    run_to_end(torn_dir.path(), None);
    sqlite_nothing_lost(torn_dir.path(), reference_dir.path());
}

/// Reads two SQLite data directories back and runs the nothing-lost check.
fn sqlite_nothing_lost(dir: &Path, reference_dir: &Path) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let read = |dir: &Path| {
        let db = StoreLocation::Sqlite(dir.join("polybot.db"));
        runtime.block_on(read_back(db, dir))
    };
    nothing_lost(&read(dir), &read(reference_dir));
}

#[test]
fn sigkilled_host_resumes_exactly_with_postgres() {
    let reference_db = TempDatabase::create("pb_ref");
    let killed_db = TempDatabase::create("pb_kill");
    let reference_dir = tempfile::tempdir().unwrap();
    let killed_dir = tempfile::tempdir().unwrap();
    let reference_report = run_to_end(reference_dir.path(), Some(&reference_db.url()));
    kill_repeatedly(killed_dir.path(), Some(&killed_db.url()), 4);
    let last = run_to_end(killed_dir.path(), Some(&killed_db.url()));
    same_venue_record(&last, &reference_report);

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let reference = runtime.block_on(read_back(
        StoreLocation::Postgres(reference_db.url()),
        reference_dir.path(),
    ));
    let killed = runtime.block_on(read_back(
        StoreLocation::Postgres(killed_db.url()),
        killed_dir.path(),
    ));
    nothing_lost(&killed, &reference);
    let db = StoreLocation::Postgres(killed_db.url());
    history_is_clean(db, killed_dir.path(), &last, 5);
}

#[test]
fn status_reads_the_store_while_the_host_is_down() {
    let dir = tempfile::tempdir().unwrap();
    run_to_end(dir.path(), None);
    let output = host()
        .args([
            "status",
            "--json",
            "--data-dir",
            dir.path().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let s = &json["strategies"][0];
    assert_eq!(s["name"], "momentum");
    assert_eq!(s["state"], "stopped");
    assert!(s["last_seq"].as_u64().unwrap() >= 6000);
    assert_eq!(s["last_checkpoint_seq"], s["last_seq"]);
    assert!(s["trades"].as_u64().unwrap() > 0);
    assert!(s["pnl"].as_f64().unwrap().is_finite());
    assert!(s["last_checkpoint_at"].as_u64().unwrap() > 0);

    let verify = host()
        .args([
            "checkpoints",
            "verify",
            "--data-dir",
            dir.path().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(verify.status.success());
    assert!(String::from_utf8_lossy(&verify.stdout).contains("3 checkpoints checked, 0 corrupt"));
}

#[test]
fn the_seed_monitoring_queries_answer_in_plain_sql() {
    let dir = tempfile::tempdir().unwrap();
    run_to_end(dir.path(), None);
    let db = dir.path().join("polybot.db");
    let query = |sql: &str| {
        let out = Command::new("sqlite3").arg(&db).arg(sql).output().unwrap();
        assert!(
            out.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    // Agent performance: trades, PnL and win rate per strategy.
    let row = query(
        "SELECT a.name, COUNT(t.seq), ROUND(SUM(t.pnl), 2), AVG(CASE WHEN t.pnl > 0 THEN 1.0 ELSE 0 END) \
         FROM strategies a LEFT JOIN trades t ON t.strategy_id = a.id GROUP BY a.name",
    );
    let cols: Vec<&str> = row.split('|').collect();
    assert_eq!(cols[0], "momentum");
    assert!(cols[1].parse::<u64>().unwrap() > 0);
    // Recent system events.
    let events = query(
        "SELECT timestamp, event_type, component, message FROM system_events ORDER BY timestamp_ms DESC LIMIT 10",
    );
    assert!(events.contains("state-change"));
}

#[test]
fn bad_stores_are_named_and_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let momentum = guest("momentum");
    let attempt = |store: &str| {
        host()
            .args([
                "run",
                "--strategy",
                momentum.to_str().unwrap(),
                "--events",
                "10",
                "--data-dir",
            ])
            .arg(&data)
            .args(["--store", store])
            .output()
            .unwrap()
    };
    let output = attempt("postgres://postgres@127.0.0.1:1/nowhere");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("connect to postgres postgres://postgres@127.0.0.1:1/nowhere"),
        "{stderr}"
    );
    let output = attempt("mysql://somewhere/db");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown scheme"));
    let output = attempt("postgres://u:secret@127.0.0.1:5432:99/x");
    assert_eq!(output.status.code(), Some(2));
    assert!(
        !String::from_utf8_lossy(&output.stderr).contains("secret"),
        "password leaked"
    );
    assert!(!data.exists(), "a failed start left files behind");

    // A data directory that cannot be created.
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let output = host()
        .args([
            "run",
            "--strategy",
            momentum.to_str().unwrap(),
            "--events",
            "10",
            "--data-dir",
        ])
        .arg(file.join("sub"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("plain-file/sub"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_checkpoints_fall_back_and_the_state_is_still_exact() {
    use polybot_host::supervisor::{Cell, CellSpec, CheckpointPolicy};
    let dir = tempfile::tempdir().unwrap();
    let location = StoreLocation::Sqlite(dir.path().join("polybot.db"));
    let sandbox = polybot_tests::sandbox(Default::default());
    let module = polybot_tests::load(&sandbox, "faulty");
    let spec = || CellSpec {
        name: "faulty".into(),
        module: module.clone(),
        config_json: "{}".into(),
        restart: polybot_tests::quick_restarts(10),
        checkpoint: CheckpointPolicy {
            every_events: 10,
            every_event_time: Duration::from_secs(3600),
        },
    };
    {
        let store: Arc<dyn StateStore> =
            Arc::new(SqlStore::open(location.clone(), dir.path()).await.unwrap());
        let mut cell = Cell::start(spec(), store.clone()).await.unwrap();
        for i in 0..35 {
            cell.handle(i, polybot_host::contract::EventKind::Timer(i))
                .await
                .unwrap();
        }
        // A crash: no final checkpoint, but the journal is durable and the
        // database free for the edit below.
        store.close().await.unwrap();
    }
    // Corrupt the newest checkpoint in the database and in its file copy.
    let db = dir.path().join("polybot.db");
    let status = Command::new("sqlite3")
        // Wait out a lock the closing pool may still hold for a moment.
        .args(["-cmd", ".timeout 5000"])
        .arg(&db)
        .arg("UPDATE checkpoints SET state = X'00' WHERE seq = (SELECT MAX(seq) FROM checkpoints)")
        .status()
        .unwrap();
    assert!(status.success());
    let copy = dir
        .path()
        .join("checkpoints/faulty/00000000000000000030.ckpt");
    std::fs::write(&copy, b"{torn").unwrap();

    let store: Arc<dyn StateStore> = Arc::new(SqlStore::open(location, dir.path()).await.unwrap());
    let mut cell = Cell::start(spec(), store.clone()).await.unwrap();
    assert_eq!(cell.last_seq(), 35);
    cell.stop().await;
    let events = store.system_events(100).await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.event_type == "checkpoint-rejected" && e.message.contains("seq 30")),
        "{events:?}"
    );
    let state: serde_json::Value =
        serde_json::from_slice(&store.checkpoints("faulty").await.unwrap()[0].state).unwrap();
    assert_eq!(
        state["count"], 35,
        "replayed from the older checkpoint to the exact state"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_journal_entry_is_named_not_skipped() {
    use polybot_host::supervisor::{Cell, CellSpec, CheckpointPolicy};
    let dir = tempfile::tempdir().unwrap();
    let location = StoreLocation::Sqlite(dir.path().join("polybot.db"));
    let sandbox = polybot_tests::sandbox(Default::default());
    let spec = CellSpec {
        name: "faulty".into(),
        module: polybot_tests::load(&sandbox, "faulty"),
        config_json: "{}".into(),
        restart: polybot_tests::quick_restarts(10),
        checkpoint: CheckpointPolicy::default(),
    };
    {
        let store: Arc<dyn StateStore> =
            Arc::new(SqlStore::open(location.clone(), dir.path()).await.unwrap());
        let mut cell = Cell::start(spec, store.clone()).await.unwrap();
        for i in 0..35 {
            cell.handle(i, polybot_host::contract::EventKind::Timer(i))
                .await
                .unwrap();
        }
        store.close().await.unwrap();
    }
    let status = Command::new("sqlite3")
        // Wait out a lock the closing pool may still hold for a moment.
        .args(["-cmd", ".timeout 5000"])
        .arg(dir.path().join("polybot.db"))
        .arg("UPDATE journal SET entry = '{\"event\": tor' WHERE seq = 17")
        .status()
        .unwrap();
    assert!(status.success());

    let store = SqlStore::open(location, dir.path()).await.unwrap();
    let error = store
        .entries_after("faulty", 0)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("faulty's journal entry 17"), "{error}");
    // Nothing was skipped or rewritten: asking again names the same entry.
    let again = store
        .entries_after("faulty", 0)
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(again, error);
}

/// A small filesystem of the test's own (a tmpfs mounted on a temp dir), so
/// the disk can really be filled: writes fail with ENOSPC, as on a full disk.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(megabytes: u32) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("run mount");
        assert!(
            output.status.success(),
            "the full-disk tests mount a small tmpfs to fill, which needs root: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        SmallDisk { dir }
    }

    fn data(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    fn filler(&self) -> std::path::PathBuf {
        self.dir.path().join("filler")
    }

    /// Writes a file until the filesystem has no space left.
    fn fill(&self) {
        use std::io::Write as _;
        let mut file = std::fs::File::create(self.filler()).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        loop {
            match file.write_all(&chunk).and_then(|()| file.flush()) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
                Err(e) => panic!("fill the disk: {e}"),
            }
        }
    }

    fn free(&self) {
        std::fs::remove_file(self.filler()).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Batches still waiting in the backlog.
fn backlog_batches(data: &Path) -> usize {
    std::fs::read_dir(data.join("backlog"))
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .count()
        })
        .unwrap_or(0)
}

/// Order rows in a SQLite data directory, read with the sqlite3 shell.
fn stored_orders(data: &Path) -> u64 {
    let out = Command::new("sqlite3")
        .arg(data.join("polybot.db"))
        .arg("SELECT COUNT(*) FROM orders")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

/// Events in the full-disk runs; paced so the run is still going when the
/// disk fills.
const PACED_EVENTS: &str = "4000";
const PACED_SPEED: &str = "100";

/// Issue 11 item 9: with the data directory full for a few seconds mid-run
/// (SQLite and the backlog both failing with ENOSPC), the writes are held
/// and retried, nothing is acknowledged that is not durable, and once space
/// returns everything reaches the database exactly once: no backlog left, the
/// same command again finishes, and the journal is an uninterrupted run's.
#[test]
fn a_transiently_full_disk_loses_nothing_and_the_database_catches_up() {
    let disk = SmallDisk::mount(16);
    let reference_dir = tempfile::tempdir().unwrap();
    let args = || run_args_paced(&disk.data(), None, PACED_EVENTS, PACED_SPEED);
    let reference = run_args_to_end(run_args_paced(
        reference_dir.path(),
        None,
        PACED_EVENTS,
        "max",
    ));

    let mut host = LoggingHost::start_running(host().args(args()).stdout(Stdio::piped()));
    disk.fill();
    host.wait_for("writes cannot be made durable");
    // The fault: the disk stays full for a few seconds, less than a sync waits.
    std::thread::sleep(Duration::from_secs(3));
    disk.free();
    host.wait_for("writes are durable again");
    host.drain_log();
    let status = host.child.wait().unwrap();
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut host.child.stdout.take().unwrap(), &mut stdout).unwrap();
    assert!(status.success(), "the run rode out the full disk: {stdout}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["report"]["fatal"], serde_json::Value::Null);

    assert_eq!(backlog_batches(&disk.data()), 0, "the backlog drained");
    let stored = stored_last_seq(&disk.data(), None);
    assert_eq!(
        stored,
        report["report"]["last_seq"].as_u64().unwrap(),
        "the database holds every event the run reports"
    );
    // The same command again finishes (no history mismatch) and the result
    // is exactly an uninterrupted run's.
    let again = run_args_to_end(args());
    assert_eq!(again["report"]["stop"], reference["report"]["stop"]);
    same_venue_record(&again, &reference);
    sqlite_nothing_lost(&disk.data(), reference_dir.path());
}

/// Issue 11 item 9: on a disk that stays full, a sync cannot be acknowledged,
/// so the run stops (exit 1) without sending the order whose intent is not
/// durable; every order it did send is journaled with its order row, and
/// once space returns the same command resumes to an uninterrupted run.
#[test]
fn on_a_full_disk_no_order_goes_out_before_it_is_durable() {
    let disk = SmallDisk::mount(16);
    let reference_dir = tempfile::tempdir().unwrap();
    let args = || run_args_paced(&disk.data(), None, PACED_EVENTS, PACED_SPEED);
    let reference = run_args_to_end(run_args_paced(
        reference_dir.path(),
        None,
        PACED_EVENTS,
        "max",
    ));

    let mut host = LoggingHost::start_running(host().args(args()).stdout(Stdio::piped()));
    // Fill the disk once the run has placed a few orders.
    let waited = std::time::Instant::now();
    while stored_orders(&disk.data()) < 3 {
        assert!(
            waited.elapsed() < Duration::from_secs(60),
            "no orders within a minute"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    disk.fill();
    host.wait_for("writes cannot be made durable");
    host.drain_log();
    let status = host.child.wait().unwrap();
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut host.child.stdout.take().unwrap(), &mut stdout).unwrap();
    assert_eq!(status.code(), Some(1), "{stdout}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let fatal = report["report"]["fatal"].as_str().unwrap_or_default();
    assert!(fatal.contains("not durable"), "{fatal}");
    let sent = report["report"]["orders"].as_u64().unwrap();

    disk.free();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let durable = runtime.block_on(read_back(
        StoreLocation::Sqlite(disk.data().join("polybot.db")),
        &disk.data(),
    ));
    let placed: Vec<String> = durable
        .journal
        .iter()
        .flat_map(|e| match &e.outcome {
            polybot_host::store::Outcome::Handled(actions) => {
                polybot_host::supervisor::plan(e.event.seq, actions.clone())
            }
            _ => Vec::new(),
        })
        .filter(|p| !p.intent_id.is_empty())
        .map(|p| p.intent_id)
        .collect();
    assert!(sent > 0, "the run placed orders before the disk filled");
    assert!(
        placed.len() as u64 >= sent,
        "{sent} orders went out but only {} are in the durable journal",
        placed.len()
    );
    let rows: Vec<&str> = durable
        .orders
        .iter()
        .map(|o| o.intent_id.as_str())
        .collect();
    for intent in &placed {
        assert!(
            rows.contains(&intent.as_str()),
            "journaled order {intent} has no order row"
        );
    }

    let again = run_args_to_end(args());
    same_venue_record(&again, &reference);
    sqlite_nothing_lost(&disk.data(), reference_dir.path());
}

/// Journal entries written as JSON by earlier versions (TEXT rows, mixed
/// with binary ones in one page) are still read, in order and unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journal_entries_written_as_json_are_still_read() {
    use polybot_host::supervisor::{Cell, CellSpec, CheckpointPolicy};
    let dir = tempfile::tempdir().unwrap();
    let location = StoreLocation::Sqlite(dir.path().join("polybot.db"));
    let sandbox = polybot_tests::sandbox(Default::default());
    let spec = CellSpec {
        name: "faulty".into(),
        module: polybot_tests::load(&sandbox, "faulty"),
        config_json: "{}".into(),
        restart: polybot_tests::quick_restarts(10),
        checkpoint: CheckpointPolicy::default(),
    };
    let written = {
        let store: Arc<dyn StateStore> =
            Arc::new(SqlStore::open(location.clone(), dir.path()).await.unwrap());
        let mut cell = Cell::start(spec, store.clone()).await.unwrap();
        for i in 0..20 {
            cell.handle(i, polybot_host::contract::EventKind::Timer(i))
                .await
                .unwrap();
        }
        let written = store.entries_after("faulty", 0).await.unwrap();
        store.close().await.unwrap();
        written
    };
    assert_eq!(written.len(), 20);
    // Rewrite the even entries as earlier versions stored them.
    let mut script = String::new();
    for entry in written.iter().filter(|e| e.event.seq % 2 == 0) {
        let json = serde_json::to_string(entry).unwrap().replace('\'', "''");
        script.push_str(&format!(
            "UPDATE journal SET entry = '{json}' WHERE seq = {};\n",
            entry.event.seq
        ));
    }
    let status = Command::new("sqlite3")
        // Wait out a lock the closing pool may still hold for a moment.
        .args(["-cmd", ".timeout 5000"])
        .arg(dir.path().join("polybot.db"))
        .arg(&script)
        .status()
        .unwrap();
    assert!(status.success());
    let store = SqlStore::open(location, dir.path()).await.unwrap();
    assert_eq!(store.entries_after("faulty", 0).await.unwrap(), written);
}
