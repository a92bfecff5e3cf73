//! The seed's test 4 ("7-day endurance"), compressed: `polybot-host serve`
//! with momentum variants and a `faulty` strategy that traps about once per
//! simulated day, for days of event time, in two settings:
//! - on the simulated market, `POLYBOT_SOAK_DAYS` days (default 1 in CI;
//!   `scripts/soak.sh` runs 7);
//! - live through the local CLOB server (in this process on 127.0.0.1), whose
//!   feed the test publishes with compressed timestamps (10 s of event time a
//!   step, a price move every 20 steps), each momentum strategy on its own
//!   token, for
//!   `POLYBOT_SOAK_LIVE_HOURS` hours of event time (default 24 in CI;
//!   `scripts/soak.sh` runs 168), judged against the server's own order and
//!   trade log.
//!
//! Asserts:
//! - the host is started once and exits by itself (host restarts: 0);
//! - the faulty strategy's restarts are counted and each has a system event;
//! - each momentum strategy makes more than 100 trades per 7 days (the bar
//!   scaled to the time run);
//! - memory is flat: the slope of the host's RSS over the second half of the
//!   run, reported in MiB per simulated day, stays under a bound;
//! - the database's size per simulated day is reported;
//! - the history checker is clean for every strategy.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use polybot_host::store::StateStore;
use polybot_host::store::sql::{SqlStore, StoreLocation};
use polybot_polymarket::server::FaultPlan;
use polybot_tests::checker::{Expect, History, VenueRecord, check_and_print};
use polybot_tests::clob::{live_env, publish_held_at, server, venue_record_of, wall_ms};
use polybot_tests::guest;

/// Event time between two market steps: 43,200 events per simulated day.
const TICK_MS: u64 = 2_000;
const DAY_MS: u64 = 86_400_000;
/// RSS growth per simulated day above which memory is not flat.
const MAX_MIB_PER_DAY: f64 = 8.0;
const MOMENTUM: [&str; 3] = ["momentum-a", "momentum-b", "momentum-c"];
const FAULTY: &str = "faulty-daily";
/// Live: event time between two steps of the published market.
const LIVE_TICK_MS: u64 = 10_000;
/// Live: wall time between two published steps.
const LIVE_STEP: Duration = Duration::from_millis(4);
/// Live: steps each price is held. The market moves a cent every 80 ms of
/// wall time (200 s of event time): a fill-and-kill order the host sends on
/// a move has that long to reach the server before the price it saw is
/// gone (a debug build's path from book to order takes about 10 ms, and
/// sometimes several times that beside the rest of the suite).
const LIVE_HOLD: u64 = 20;
/// Live: each momentum strategy's token; the faulty one shares the first
/// (it places no orders).
const LIVE_TOKENS: [&str; 3] = ["4001", "4002", "4003"];

fn live_hours() -> u64 {
    std::env::var("POLYBOT_SOAK_LIVE_HOURS")
        .ok()
        .map(|h| {
            h.parse()
                .expect("POLYBOT_SOAK_LIVE_HOURS is a whole number of hours")
        })
        .unwrap_or(24)
        .max(1)
}

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

/// The live fleet: the same strategies, each momentum variant on its own
/// token of `server`, trading live; `hours` of event time.
fn live_fleet(dir: &Path, server: &polybot_polymarket::server::SimHandle, hours: u64) -> PathBuf {
    let endpoints = format!(
        "polymarket = {{ clob_url = \"{}\", ws_url = \"{}\", gamma_url = \"{}\", live = true }}\n",
        server.base_url(),
        server.ws_url(),
        server.gamma_url()
    );
    let mut text = String::from(
        "[supervisor]\nbackoff_initial = \"1ms\"\nbackoff_max = \"5ms\"\nquarantine_after = 2\n\
         [checkpoint]\nevery_events = 5000\n",
    );
    let common = |token: &str| {
        format!(
            "venue = \"polymarket\"\nmarkets = [\"{token}\"]\nduration = \"{hours}h\"\n{endpoints}"
        )
    };
    // The market moves a cent at a time, less often than the lookback: a
    // move of half a cent counts as a trend.
    for (i, name) in MOMENTUM.iter().enumerate() {
        text.push_str(&format!(
            "\n[[strategy]]\nname = \"{name}\"\nmodule = \"{}\"\n{}\
             config = {{ lookback = {}, threshold = 0.005, cooldown_ms = 600000 }}\n",
            guest("momentum").display(),
            common(LIVE_TOKENS[i]),
            5 + 3 * i,
        ));
    }
    // One book event a price move (a book that did not change is not
    // told): a trap in the middle of each whole day, or of a shorter run.
    let move_ms = LIVE_TICK_MS * LIVE_HOLD;
    let per_day = DAY_MS / move_ms;
    let seqs: Vec<String> = if hours >= 24 {
        (0..hours / 24)
            .map(|d| (d * per_day + per_day / 2).to_string())
            .collect()
    } else {
        vec![(hours * 3_600_000 / move_ms / 2).to_string()]
    };
    text.push_str(&format!(
        "\n[[strategy]]\nname = \"{FAULTY}\"\nmodule = \"{}\"\n{}\
         config = {{ fault = \"panic\", at_seq = [{}] }}\n",
        guest("faulty").display(),
        common(LIVE_TOKENS[0]),
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

/// What one `serve` run left: its report, RSS samples (wall seconds, MiB)
/// and wall time.
struct Run {
    report: serde_json::Value,
    samples: Vec<(f64, f64)>,
    wall: Duration,
}

/// Runs `serve` on `file` until it exits by itself (at most `bound`),
/// sampling its RSS.
fn serve(file: &Path, data: &Path, env: &[(&str, String)], bound: Duration) -> Run {
    let started = Instant::now();
    let mut command = polybot_tests::host_command!("warn");
    command
        .args(["serve", "--json", "--no-http", "--config"])
        .arg(file)
        .arg("--data-dir")
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (name, _) in std::env::vars().filter(|(k, _)| k.starts_with("POLYMARKET_")) {
        command.env_remove(name);
    }
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("start the host");
    let pid = child.id();
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut text).expect("read the report");
        text
    });
    let mut samples = Vec::new();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > bound {
            child.kill().expect("kill");
            child.wait().expect("reap");
            panic!("the host did not finish within {bound:?}");
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
    Run {
        report,
        samples,
        wall,
    }
}

/// Judges a run of `days` simulated days: the history checker against
/// `venue` (per strategy), the trade bar, the daily trap's restarts and
/// their system events, flat memory; prints the figures.
async fn judge(
    what: &str,
    run: &Run,
    data: &Path,
    days: f64,
    venue: BTreeMap<String, VenueRecord>,
) {
    // Memory: slope over the second half, per simulated day (event time
    // advances at a steady rate of wall time).
    let wall = run.wall;
    let second_half: Vec<(f64, f64)> = run
        .samples
        .iter()
        .copied()
        .filter(|(t, _)| *t >= wall.as_secs_f64() / 2.0)
        .collect();
    let wall_per_day = wall.as_secs_f64() / days;
    let mib_per_day = slope(&second_half) * wall_per_day;
    let peak = run.samples.iter().map(|s| s.1).fold(0.0, f64::max);
    let db = dir_bytes(data);

    let strategies: Vec<&str> = MOMENTUM.iter().copied().chain([FAULTY]).collect();
    let store = SqlStore::open(StoreLocation::Sqlite(data.join("polybot.db")), data)
        .await
        .expect("open the store");
    let history = History::read_with_intents(&store, &strategies)
        .await
        .expect("read the history");
    let restarts = store.status().await.expect("status");
    let expect = Expect {
        venue,
        host_starts: Some(1),
    };
    let verdict = check_and_print(&history, &expect);
    let trades: Vec<(String, usize)> = MOMENTUM
        .iter()
        .map(|n| (n.to_string(), history.trades[*n].len()))
        .collect();
    let events: usize = history.journal.values().map(Vec::len).sum();
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
        "endurance ({what}): {days:.2} simulated days in {wall:.1?} wall; {events} events; trades \
         {trades:?}; host restarts 0; {FAULTY} restarts {faulty_restarts} ({fault_events} fault \
         system events); RSS peak {peak:.1} MiB, second-half slope {mib_per_day:+.2} MiB/day ({} \
         samples); database {:.2} MiB = {:.2} MiB/day",
        run.samples.len(),
        db as f64 / 1048576.0,
        db as f64 / 1048576.0 / days
    );
    verdict.assert_clean();
    // The seed's bar, more than 100 trades per 7 days, scaled to the days run.
    let bar = 100.0 * days / 7.0;
    for (name, n) in &trades {
        assert!(
            *n as f64 > bar,
            "{name} made {n} trades in {days:.2} days (bar: > {bar:.1})"
        );
    }
    let traps = (days.floor() as u64).max(1);
    assert!(
        faulty_restarts >= traps,
        "{FAULTY} should trap about once a day: {faulty_restarts} restarts in {days:.2} days"
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

#[test]
fn days_of_event_time_with_a_daily_trap_keep_memory_flat_and_the_history_clean() {
    let days = days();
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let file = fleet(dir.path(), days);
    let run = serve(&file, &data, &[], Duration::from_secs(600 * days.max(1)));
    // The simulated venue's own account: fills and cash, from the report.
    let venue = run.report["strategies"]
        .as_array()
        .expect("strategies in the report")
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap_or("").to_string(),
                VenueRecord {
                    fill_count: r["portfolio"]["fills"].as_u64(),
                    cash_change: r["portfolio"]["cash"].as_f64().map(|c| c - 10_000.0),
                    ..VenueRecord::default()
                },
            )
        })
        .collect();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(judge("simulated", &run, &data, days as f64, venue));
}

#[test]
fn hours_of_event_time_live_through_the_local_clob_keep_memory_flat_and_the_history_clean() {
    let hours = live_hours();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (server, feed) = runtime.block_on(server(FaultPlan::default()));
    // The market, with compressed event time: a step every LIVE_STEP of
    // wall time, LIVE_TICK_MS of event time apart, from now on (the
    // server stamps the books its matches change with the wall clock,
    // which is then behind: event time never goes back).
    let start_ms = wall_ms();
    publish_held_at(&feed, &LIVE_TOKENS, 0, LIVE_HOLD, start_ms);
    let market = runtime.spawn(async move {
        let mut every = tokio::time::interval(LIVE_STEP);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for step in 1.. {
            every.tick().await;
            let ts = start_ms + step * LIVE_TICK_MS;
            publish_held_at(&feed, &LIVE_TOKENS, step, LIVE_HOLD, ts);
        }
    });
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let file = live_fleet(dir.path(), &server, hours);
    let bound = Duration::from_secs(120 + 5 * hours);
    let run = serve(&file, &data, &live_env(), bound);
    market.abort();
    let mut venue: BTreeMap<String, VenueRecord> = MOMENTUM
        .iter()
        .zip(LIVE_TOKENS)
        .map(|(name, token)| (name.to_string(), venue_record_of(&server, &[token])))
        .collect();
    venue.insert(
        FAULTY.to_string(),
        VenueRecord {
            orders: Some(Vec::new()),
            ..VenueRecord::default()
        },
    );
    runtime.block_on(judge("live", &run, &data, hours as f64 / 24.0, venue));
}
