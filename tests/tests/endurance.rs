//! The seed's test 4 ("7-day endurance"), compressed: `polybot-host serve`
//! with momentum variants and a `faulty` strategy that traps about once per
//! simulated day, on the simulated market, for `POLYBOT_SOAK_DAYS` days of
//! event time (default 1 in CI; `scripts/soak.sh` runs 7). Asserts:
//! - the host is started once and exits by itself (host restarts: 0);
//! - the faulty strategy's restarts are counted and each has a system event;
//! - each momentum strategy makes more than 100 trades per 7 days (the bar
//!   scaled to the days run);
//! - memory is flat: the slope of the host's RSS over the second half of the
//!   run, reported in MiB per simulated day, stays under a bound;
//! - the database's size per simulated day is reported;
//! - the history checker is clean for every strategy.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use polybot_host::store::StateStore;
use polybot_host::store::sql::{SqlStore, StoreLocation};
use polybot_tests::checker::{Expect, History, VenueRecord, check_and_print};
use polybot_tests::guest;

/// Event time between two market steps: 43,200 events per simulated day.
const TICK_MS: u64 = 2_000;
const DAY_MS: u64 = 86_400_000;
/// RSS growth per simulated day above which memory is not flat.
const MAX_MIB_PER_DAY: f64 = 8.0;
const MOMENTUM: [&str; 3] = ["momentum-a", "momentum-b", "momentum-c"];
const FAULTY: &str = "faulty-daily";

fn days() -> u64 {
    std::env::var("POLYBOT_SOAK_DAYS")
        .ok()
        .map(|d| {
            d.parse()
                .expect("POLYBOT_SOAK_DAYS is a whole number of days")
        })
        .unwrap_or(1)
        .max(1)
}

fn fleet(dir: &Path, days: u64) -> PathBuf {
    let events_per_day = DAY_MS / TICK_MS;
    let mut text = String::from(
        "[supervisor]\nbackoff_initial = \"1ms\"\nbackoff_max = \"5ms\"\nquarantine_after = 2\n\
         [checkpoint]\nevery_events = 5000\n",
    );
    let common = format!(
        "duration = \"{}h\"\nspeed = \"max\"\nsim = {{ tick_ms = {TICK_MS} }}\n",
        days * 24
    );
    for (i, name) in MOMENTUM.iter().enumerate() {
        text.push_str(&format!(
            "\n[[strategy]]\nname = \"{name}\"\nmodule = \"{}\"\nseed = {}\n{common}\
             config = {{ lookback = {}, cooldown_ms = 600000 }}\n",
            guest("momentum").display(),
            100 + i,
            5 + 3 * i,
        ));
    }
    // A trap about once per simulated day, somewhere in its middle.
    let seqs: Vec<String> = (0..days)
        .map(|d| (d * events_per_day + events_per_day / 2).to_string())
        .collect();
    text.push_str(&format!(
        "\n[[strategy]]\nname = \"{FAULTY}\"\nmodule = \"{}\"\nseed = 7\n{common}\
         config = {{ fault = \"panic\", at_seq = [{}] }}\n",
        guest("faulty").display(),
        seqs.join(", ")
    ));
    let path = dir.join("fleet.toml");
    std::fs::write(&path, text).expect("write the fleet file");
    path
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Least-squares slope of `y` over `x`.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let (num, den) = points.iter().fold((0.0, 0.0), |(a, b), (x, y)| {
        (a + (x - mx) * (y - my), b + (x - mx) * (x - mx))
    });
    if den == 0.0 { 0.0 } else { num / den }
}

fn dir_bytes(data: &Path) -> u64 {
    std::fs::read_dir(data)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with("polybot.db"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn days_of_event_time_with_a_daily_trap_keep_memory_flat_and_the_history_clean() {
    let days = days();
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let file = fleet(dir.path(), days);
    let started = Instant::now();
    let mut child = polybot_tests::host_command!("warn")
        .args(["serve", "--json", "--config"])
        .arg(&file)
        .arg("--data-dir")
        .arg(&data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the host");
    let pid = child.id();
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut text).expect("read the report");
        text
    });
    // RSS samples (wall seconds, MiB) until the host exits.
    let bound = Duration::from_secs(600 * days.max(1));
    let mut samples = Vec::new();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > bound {
            child.kill().expect("kill");
            child.wait().expect("reap");
            panic!("the host did not finish {days} simulated days within {bound:?}");
        }
        if let Some(kib) = rss_kib(pid) {
            samples.push((started.elapsed().as_secs_f64(), kib as f64 / 1024.0));
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let wall = started.elapsed();
    let report: serde_json::Value =
        serde_json::from_str(&reader.join().expect("reader")).expect("the report is JSON");
    assert!(status.success(), "the host exited with {status}: {report}");

    // Memory: slope over the second half, per simulated day (the run is
    // unpaced, so event time advances at a steady rate of wall time).
    let second_half: Vec<(f64, f64)> = samples
        .iter()
        .copied()
        .filter(|(t, _)| *t >= wall.as_secs_f64() / 2.0)
        .collect();
    let wall_per_day = wall.as_secs_f64() / days as f64;
    let mib_per_day = slope(&second_half) * wall_per_day;
    let peak = samples.iter().map(|s| s.1).fold(0.0, f64::max);
    let db = dir_bytes(&data);

    let strategies: Vec<&str> = MOMENTUM.iter().copied().chain([FAULTY]).collect();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (history, restarts) = runtime.block_on(async {
        let store = SqlStore::open(StoreLocation::Sqlite(data.join("polybot.db")), &data)
            .await
            .expect("open the store");
        let history = History::read_with_intents(&store, &strategies)
            .await
            .expect("read the history");
        let status = store.status().await.expect("status");
        (history, status)
    });
    let by_name: std::collections::BTreeMap<String, serde_json::Value> = report["strategies"]
        .as_array()
        .expect("strategies in the report")
        .iter()
        .map(|s| (s["name"].as_str().unwrap_or("").to_string(), s.clone()))
        .collect();
    let mut expect = Expect {
        venue: Default::default(),
        host_starts: Some(1),
    };
    for name in &strategies {
        let r = &by_name[*name];
        expect.venue.insert(
            name.to_string(),
            VenueRecord {
                fill_count: r["portfolio"]["fills"].as_u64(),
                cash_change: r["portfolio"]["cash"].as_f64().map(|c| c - 10_000.0),
                ..VenueRecord::default()
            },
        );
    }
    let verdict = check_and_print(&history, &expect);
    let trades: Vec<(String, usize)> = MOMENTUM
        .iter()
        .map(|n| (n.to_string(), history.trades[*n].len()))
        .collect();
    let faulty_restarts = restarts
        .iter()
        .find(|s| s.name == FAULTY)
        .map_or(0, |s| s.restarts);
    let fault_events = history
        .system_events
        .iter()
        .filter(|e| e.component.ends_with(FAULTY) && e.event_type == "fault")
        .count() as u64;
    eprintln!(
        "endurance: {days} simulated days in {wall:.1?} wall; trades {trades:?}; host restarts 0; \
         {FAULTY} restarts {faulty_restarts} ({fault_events} fault system events); RSS peak \
         {peak:.1} MiB, second-half slope {mib_per_day:+.2} MiB/day ({} samples); database \
         {:.2} MiB = {:.2} MiB/day",
        samples.len(),
        db as f64 / 1048576.0,
        db as f64 / 1048576.0 / days as f64
    );
    verdict.assert_clean();
    let bar = (100 * days).div_ceil(7) as usize;
    for (name, n) in &trades {
        assert!(
            *n > bar,
            "{name} made {n} trades in {days} days (bar: > {bar})"
        );
    }
    assert!(
        faulty_restarts >= days,
        "{FAULTY} should trap about once a day: {faulty_restarts} restarts in {days} days"
    );
    assert!(
        fault_events >= faulty_restarts,
        "every restart is explained by a system event: {fault_events} fault events for \
         {faulty_restarts} restarts"
    );
    assert!(
        second_half.len() < 5 || mib_per_day.abs() < MAX_MIB_PER_DAY,
        "memory grows {mib_per_day:+.2} MiB per simulated day"
    );
}
