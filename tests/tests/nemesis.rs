//! Nemesis: a seeded schedule of combined faults over a compressed
//! `polybot-host serve` run with healthy and hostile strategies side by
//! side, on PostgreSQL through the fault proxy:
//! - `kill -9` of the host at seeded moments, the harness starting it again
//!   as systemd would (each kill is asserted to land while the host runs);
//! - the database cut through the proxy for a seeded while, at a seeded
//!   moment (the host keeps going on local files and resyncs);
//! - hostile strategies (`faulty` trapping, hogging memory) beside momentum.
//!
//! The seed is printed first; `POLYBOT_SOAK_SEED=N` replays the same
//! schedule. `POLYBOT_NEMESIS_EVENTS` lengthens the run (default 6000 events
//! per strategy; `scripts/soak.sh` runs longer). The history checker judges
//! every strategy at the end.
//!
//! Not covered here: the venue-side faults of the local CLOB server (429
//! storms, 5xx bursts, 425 windows, lost responses, …), which need a live
//! run: `nemesis_live.rs` injects them.

use std::time::{Duration, Instant};

use polybot_host::store::sql::{SqlStore, StoreLocation};
use polybot_tests::checker::{Expect, History, VenueRecord, check_and_print};
use polybot_tests::proxy::FaultProxy;
use polybot_tests::sim::Rng;
use polybot_tests::{LoggingHost, POSTGRES, TempDatabase, guest};

const MOMENTUM: [&str; 3] = ["momentum-a", "momentum-b", "momentum-c"];
const HOSTILE: [&str; 2] = ["faulty-trap", "faulty-hog"];
/// Bound on one host run, and on a restart being let in by the lease.
const RUN_BOUND: Duration = Duration::from_secs(300);

fn seed() -> u64 {
    std::env::var("POLYBOT_SOAK_SEED")
        .ok()
        .map(|s| s.parse().expect("POLYBOT_SOAK_SEED is a number"))
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
}

fn events() -> u64 {
    std::env::var("POLYBOT_NEMESIS_EVENTS")
        .ok()
        .map(|s| s.parse().expect("POLYBOT_NEMESIS_EVENTS is a number"))
        .unwrap_or(6000)
}

fn fleet(dir: &std::path::Path, events: u64) -> std::path::PathBuf {
    let mut text = String::from(
        "[lease]\nttl = \"2s\"\n[supervisor]\nbackoff_initial = \"1ms\"\nbackoff_max = \"5ms\"\n\
         quarantine_after = 2\n[checkpoint]\nevery_events = 500\n",
    );
    let common = format!("events = {events}\nspeed = 400\n");
    for (i, name) in MOMENTUM.iter().enumerate() {
        text.push_str(&format!(
            "\n[[strategy]]\nname = \"{name}\"\nmodule = \"{}\"\nseed = {}\n{common}\
             config = {{ lookback = {}, cooldown_ms = 0 }}\n",
            guest("momentum").display(),
            10 + i,
            3 + 2 * i
        ));
    }
    text.push_str(&format!(
        "\n[[strategy]]\nname = \"{}\"\nmodule = \"{}\"\nseed = 20\n{common}\
         config = {{ fault = \"panic\", at_seq = [{}, {}, {}] }}\n",
        HOSTILE[0],
        guest("faulty").display(),
        events / 5,
        events / 2,
        events * 4 / 5
    ));
    text.push_str(&format!(
        "\n[[strategy]]\nname = \"{}\"\nmodule = \"{}\"\nseed = 21\n{common}\
         sandbox = {{ memory_bytes = 16777216 }}\nconfig = {{ fault = \"hog\", at_seq = [{}] }}\n",
        HOSTILE[1],
        guest("faulty").display(),
        events / 3
    ));
    let path = dir.join("fleet.toml");
    std::fs::write(&path, text).expect("write the fleet file");
    path
}

/// One step of the schedule, at a delay after the host reported running.
#[derive(Debug, Clone, Copy)]
enum Action {
    Kill,
    Cut(Duration),
}

fn schedule(rng: &mut Rng) -> Vec<(Duration, Action)> {
    let mut plan = Vec::new();
    let kills = 1 + rng.below(3);
    for _ in 0..kills {
        plan.push((Duration::from_millis(500 + rng.below(3000)), Action::Kill));
    }
    // The cut goes into one of the runs (a kill ends the run it is in).
    let cut_run = rng.below(kills + 1) as usize;
    plan.insert(
        cut_run,
        (
            Duration::from_millis(300 + rng.below(1000)),
            Action::Cut(Duration::from_millis(500 + rng.below(2500))),
        ),
    );
    plan
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeded_schedule_of_kills_and_database_cuts_leaves_a_clean_history() {
    let seed = seed();
    eprintln!("nemesis seed {seed} (replay: POLYBOT_SOAK_SEED={seed})");
    let mut rng = Rng::new(seed);
    let events = events();
    let plan = schedule(&mut rng);
    eprintln!("schedule: {plan:?}");
    let db = TempDatabase::create("pb_nemesis");
    let proxy = FaultProxy::start(POSTGRES.parse().expect("address"))
        .await
        .expect("start the fault proxy");
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let file = fleet(dir.path(), events);
    let url = db.url_via(&proxy.addr().to_string());
    let command = || {
        let mut c = polybot_tests::host_command!("info");
        c.args(["serve", "--json", "--config"])
            .arg(&file)
            .arg("--data-dir")
            .arg(&data)
            .args(["--store", &url]);
        c
    };
    let started = Instant::now();
    let (mut starts, mut kills, mut cuts) = (0u64, 0u64, 0u64);
    let mut host = LoggingHost::start_fleet(&command, RUN_BOUND);
    starts += 1;
    let mut since = Instant::now();
    for (delay, action) in &plan {
        // The schedule's own timing: when to inject, not a wait for state.
        tokio::time::sleep(delay.saturating_sub(since.elapsed())).await;
        match action {
            Action::Kill => {
                assert!(
                    host.child.try_wait().expect("poll the host").is_none(),
                    "kill {} came after the run ended: lengthen POLYBOT_NEMESIS_EVENTS",
                    kills + 1
                );
                host.child.kill().expect("kill -9");
                host.child.wait().expect("reap");
                host.drain_log();
                kills += 1;
                host = LoggingHost::start_fleet(&command, RUN_BOUND);
                starts += 1;
                since = Instant::now();
            }
            Action::Cut(length) => {
                proxy.cut();
                cuts += 1;
                tokio::time::sleep(*length).await;
                proxy.restore();
            }
        }
    }
    // The last run goes to the end by itself.
    let status = host.exit_within(RUN_BOUND).await;
    host.drain_log();
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut host.child.stdout.take().expect("stdout"), &mut stdout)
        .expect("read the report");
    assert!(status.success(), "the last run exited with {status}");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("the report is JSON");

    let store = SqlStore::open(StoreLocation::Postgres(db.url()), &data)
        .await
        .expect("open the store");
    let names: Vec<&str> = MOMENTUM.iter().chain(HOSTILE.iter()).copied().collect();
    let history = History::read_with_intents(&store, &names)
        .await
        .expect("read the history");
    let mut expect = Expect {
        venue: Default::default(),
        host_starts: Some(starts),
    };
    for s in report["strategies"].as_array().expect("strategies") {
        let name = s["name"].as_str().unwrap_or("").to_string();
        expect.venue.insert(
            name,
            VenueRecord {
                fill_count: s["portfolio"]["fills"].as_u64(),
                cash_change: s["portfolio"]["cash"].as_f64().map(|c| c - 10_000.0),
                ..VenueRecord::default()
            },
        );
    }
    let verdict = check_and_print(&history, &expect);
    let fills: usize = MOMENTUM.iter().map(|n| history.trades[*n].len()).sum();
    eprintln!(
        "nemesis seed {seed}: {kills} kills, {cuts} database cuts, {starts} host starts, \
         {fills} momentum fills, {:.1?} wall",
        started.elapsed()
    );
    verdict.assert_clean();
    assert!(fills > 0, "no fills: the check proves little");
    for name in MOMENTUM {
        assert_eq!(
            history.journal[name].len() as u64,
            events,
            "{name} handled every event"
        );
    }
}
