//! The execution layer end to end, on the real binary: every order goes
//! through the executor, on the simulated venue and live against the local
//! CLOB server (`SimServer`, in this process on 127.0.0.1, port 0) with fault
//! plans; intents are read back from the store and compared with the
//! server's own order log.
//!
//! Risk limits, halts and config on the simulated market: `risk_and_halt.rs`.
//!
//! Nothing here contacts Polymarket. Each run is a few seconds of wall time:
//! breakers, retries and windows are shortened through `[exec]`; every wait
//! on the host is bounded by a timeout.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use polybot_host::contract::{EventKind, OrderStatus, VenueHealth};
use polybot_host::store::sql::{SqlStore, StoreLocation};
use polybot_host::store::{IntentRow, StateStore};
use polybot_polymarket::server::{Fault, FaultPlan, FaultRule, SimHandle};
use polybot_tests::clob::{live_env, on_server, server, start_feed};
use polybot_tests::guest;

const RUN_TIMEOUT: Duration = Duration::from_secs(120);
/// Momentum trading on every small trend, with no cooldown.
const STRATEGY: &str = "[strategy]\nlookback = 3\nthreshold = 0.01\ncooldown_ms = 0\n";
/// Short breaker, retry and window times, so a fault plan plays out in seconds.
const FAST_EXEC: &str = "[exec]\nmax_wait_ms = 20000\n\
    [exec.retry]\ninitial_backoff_ms = 20\nmax_backoff_ms = 300\nmax_attempts = 30\nmax_elapsed_ms = 20000\n\
    [exec.breaker]\nwindow_size = 6\nminimum_calls = 3\nopen_ms = 200\nhalf_open_calls = 1\n\
    [exec.windows]\ntoo_early_probe_ms = 200\nhalted_probe_ms = 200\npost_only_ms = 1000\n";

async fn output(mut command: tokio::process::Command) -> Output {
    command.kill_on_drop(true);
    for (name, _) in std::env::vars().filter(|(k, _)| k.starts_with("POLYMARKET_")) {
        command.env_remove(name);
    }
    match tokio::time::timeout(RUN_TIMEOUT, command.output()).await {
        Ok(output) => output.expect("run polybot-host"),
        Err(_) => panic!("polybot-host did not finish within {RUN_TIMEOUT:?}"),
    }
}

fn host() -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_polybot-host-e2e"));
    command
        .env("POLYBOT_LOG", "warn")
        .env_remove("DATABASE_URL");
    command
}

/// `polybot-host run` live on the local server with `config`.
async fn run_live(server: &SimHandle, dir: &Path, events: u64, config: &str) -> Output {
    let path = dir.join("exec.toml");
    std::fs::write(&path, config).expect("write config");
    let mut command = host();
    command
        .args(["run", "--strategy"])
        .arg(guest("momentum"))
        .arg("--config")
        .arg(&path)
        .arg("--live")
        .args(["--events", &events.to_string(), "--json", "--data-dir"])
        .arg(dir.join("data"));
    on_server(&mut command, server);
    for (name, value) in live_env() {
        command.env(name, value);
    }
    output(command).await
}

/// Another `polybot-host` command on the run's data directory.
async fn cli(dir: &Path, args: &[&str]) -> Output {
    let mut command = host();
    command.args(args).arg("--data-dir").arg(dir.join("data"));
    output(command).await
}

fn report(output: &Output) -> serde_json::Value {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "exit {:?}: {stderr}",
        output.status
    );
    let json: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("a JSON report on stdout");
    json["report"].clone()
}

async fn store(dir: &Path) -> SqlStore {
    let data = dir.join("data");
    SqlStore::open(StoreLocation::Sqlite(data.join("polybot.db")), &data)
        .await
        .expect("open the run's store")
}

fn is_terminal(state: &str) -> bool {
    matches!(state, "filled" | "cancelled" | "rejected")
}

/// The server's order log and the intents agree: no order at the server
/// that no intent names (none duplicated: ids are the order hashes, and
/// each appears once), every intent the venue accepted is there (none lost),
/// and every intent ended in a terminal state.
fn assert_agreement(server: &SimHandle, intents: &[IntentRow]) {
    let on_server: Vec<String> = server.orders().into_iter().map(|o| o.id).collect();
    let unique: BTreeSet<&String> = on_server.iter().collect();
    assert_eq!(unique.len(), on_server.len(), "an order posted twice");
    let refs: HashMap<&str, &IntentRow> = intents
        .iter()
        .filter_map(|i| i.venue_ref.as_deref().map(|r| (r, i)))
        .collect();
    for id in &on_server {
        assert!(refs.contains_key(id.as_str()), "order {id} has no intent");
    }
    for i in intents {
        assert!(is_terminal(&i.state), "intent not terminal: {i:?}");
        if matches!(i.state.as_str(), "filled" | "cancelled") {
            let r = i.venue_ref.as_deref().expect("a sent intent has its hash");
            assert!(unique.contains(&r.to_string()), "intent lost: {i:?}");
        }
    }
}

async fn system_event_types(dir: &Path) -> Vec<(String, String)> {
    store(dir)
        .await
        .system_events(100_000)
        .await
        .expect("system events")
        .into_iter()
        .map(|e| (e.event_type, e.message))
        .collect()
}

/// Runs momentum live through `plan`; returns the intents and the journal's
/// venue statuses, after checking the server and the intents agree.
async fn live_through(
    plan: FaultPlan,
    events: u64,
) -> (
    Vec<IntentRow>,
    Vec<VenueHealth>,
    tempfile::TempDir,
    SimHandle,
) {
    let (server, feed) = server(plan).await;
    let _feed = start_feed(feed);
    let dir = tempfile::tempdir().expect("temp dir");
    let config = format!("{STRATEGY}{FAST_EXEC}");
    let report = report(&run_live(&server, dir.path(), events, &config).await);
    assert!(report["orders"].as_u64().expect("orders") > 0, "{report}");
    let store = store(dir.path()).await;
    let intents = store.intents(Some("momentum")).await.expect("intents");
    assert_eq!(
        intents.len() as u64,
        report["orders"].as_u64().expect("orders")
    );
    assert_agreement(&server, &intents);
    let statuses = store
        .entries_after("momentum", 0)
        .await
        .expect("journal")
        .into_iter()
        .filter_map(|e| match e.event.kind {
            EventKind::VenueStatus(s) => Some(s.health),
            _ => None,
        })
        .collect();
    (intents, statuses, dir, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_storm_opens_the_breaker_pauses_placement_and_trading_resumes_by_itself() {
    let plan = FaultPlan {
        seed: 1,
        rules: vec![FaultRule {
            endpoint: "POST /order".into(),
            fault: Fault::RateLimited {
                retry_after_s: None,
            },
            count: Some(15),
            probability: None,
            skip: 2,
        }],
    };
    let (intents, statuses, dir, server) = live_through(plan, 400).await;
    assert_eq!(server.faults().rules[0].count, Some(0), "the storm ran");
    let open = statuses
        .iter()
        .position(|h| *h == VenueHealth::CircuitOpen)
        .expect("the strategy saw the circuit open");
    assert!(
        statuses[open..].contains(&VenueHealth::Recovered),
        "and recover: {statuses:?}"
    );
    let events = system_event_types(dir.path()).await;
    assert!(
        events.iter().any(|(t, _)| t == "exec-breaker"),
        "{events:?}"
    );
    // Orders were accepted after the storm: trading resumed by itself.
    let last_refused = intents
        .iter()
        .rposition(|i| i.state == "rejected")
        .unwrap_or(0);
    assert!(
        intents[last_refused..].iter().any(|i| i.state == "filled"),
        "nothing filled after the storm"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_response_is_looked_up_and_the_order_exists_once() {
    let plan = FaultPlan {
        seed: 1,
        rules: vec![FaultRule {
            endpoint: "POST /order".into(),
            fault: Fault::LoseResponse,
            count: Some(1),
            probability: None,
            skip: 2,
        }],
    };
    let (intents, _, dir, server) = live_through(plan, 250).await;
    assert_eq!(server.faults().rules[0].count, Some(0), "the fault fired");
    let moves = store(dir.path())
        .await
        .intent_transitions("momentum")
        .await
        .expect("transitions");
    let lost: Vec<&str> = moves
        .iter()
        .filter(|m| m.to == "unknown")
        .map(|m| m.intent_id.as_str())
        .collect();
    assert_eq!(lost.len(), 1, "{moves:?}");
    let after: Vec<&str> = moves
        .iter()
        .filter(|m| m.intent_id == lost[0] && m.from.as_deref() == Some("unknown"))
        .map(|m| m.to.as_str())
        .collect();
    assert!(
        matches!(
            after.first(),
            Some(&("acknowledged" | "filled" | "partially-filled" | "cancelled"))
        ),
        "unknown settles by lookup: {after:?}"
    );
    let intent = intents
        .iter()
        .find(|i| i.intent_id == lost[0])
        .expect("the intent");
    let hash = intent.venue_ref.clone().expect("hash");
    let copies = server.orders().iter().filter(|o| o.id == hash).count();
    assert_eq!(copies, 1, "exactly one order at the server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_on_60_percent_of_posts_lose_and_duplicate_nothing() {
    let plan = FaultPlan {
        seed: 7,
        rules: vec![FaultRule {
            endpoint: "POST /order".into(),
            fault: Fault::ServerError,
            count: None,
            probability: Some(0.6),
            skip: 0,
        }],
    };
    let (intents, _, _dir, _server) = live_through(plan, 200).await;
    assert!(
        intents.iter().filter(|i| i.state == "filled").count() > 0,
        "orders still got through"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_425_window_then_post_only_pauses_placement_and_it_resumes_without_a_restart() {
    let plan = FaultPlan {
        seed: 1,
        rules: vec![FaultRule {
            endpoint: "POST /order".into(),
            fault: Fault::TooEarly,
            count: Some(4),
            probability: None,
            skip: 2,
        }],
    };
    let (intents, statuses, dir, server) = live_through(plan, 1500).await;
    assert_eq!(server.faults().rules[0].count, Some(0), "the window ran");
    assert!(statuses.contains(&VenueHealth::Degraded), "{statuses:?}");
    let post_only = intents.iter().position(|i| {
        i.reason
            .as_deref()
            .is_some_and(|r| r.contains("only resting orders"))
    });
    let events = system_event_types(dir.path()).await;
    assert!(events.iter().any(|(t, _)| t == "exec-window"), "{events:?}");
    // Placement resumed after the window (and the post-only minutes).
    let from = post_only.expect("fill-and-kill orders refused in the post-only minutes");
    assert!(
        intents[from..].iter().any(|i| i.state == "filled"),
        "nothing filled after the window: {intents:?}"
    );
}

/// `polybot-host run` live, as a child process the test controls.
fn spawn_live(server: &SimHandle, dir: &Path, events: u64, config: &str) -> tokio::process::Child {
    let path = dir.join("exec.toml");
    std::fs::write(&path, config).expect("write config");
    let mut command = host();
    command
        .args(["run", "--strategy"])
        .arg(guest("momentum"))
        .arg("--config")
        .arg(&path)
        .arg("--live")
        .args(["--events", &events.to_string(), "--json", "--data-dir"])
        .arg(dir.join("data"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    on_server(&mut command, server);
    for (name, value) in live_env() {
        command.env(name, value);
    }
    command.spawn().expect("start polybot-host")
}

/// The intents `orders --json` lists, once one satisfies `until` (bounded wait).
async fn wait_for_intent(
    dir: &Path,
    what: &str,
    until: impl Fn(&serde_json::Value) -> bool,
) -> Vec<serde_json::Value> {
    wait_for_rows(dir, what, |rows| rows.iter().any(&until)).await
}

/// Polls `orders --json` until its rows (in creation order) satisfy `until`.
async fn wait_for_rows(
    dir: &Path,
    what: &str,
    until: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let out = cli(dir, &["orders", "--json"]).await;
        if out.status.success()
            && let Ok(json) = serde_json::from_slice::<serde_json::Value>(&out.stdout)
        {
            let rows = json["intents"].as_array().cloned().unwrap_or_default();
            if until(&rows) {
                return rows;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no intent {what} within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_killed_between_intent_durable_and_ack_reconciles_on_restart() {
    // The third order hangs before the server processes it.
    let plan = FaultPlan {
        seed: 1,
        rules: vec![FaultRule {
            endpoint: "POST /order".into(),
            fault: Fault::Latency { ms: 60_000 },
            count: Some(1),
            probability: None,
            skip: 2,
        }],
    };
    let (server, feed) = server(plan).await;
    let _feed = start_feed(feed);
    let dir = tempfile::tempdir().expect("temp dir");
    let config = format!("{STRATEGY}{FAST_EXEC}");
    let mut child = spawn_live(&server, dir.path(), 1_000_000, &config);
    // The third intent is the hanging order (another may be `sent` for a
    // moment on its way to the venue).
    let rows = wait_for_rows(dir.path(), "hanging as sent", |rows| {
        rows.get(2).is_some_and(|r| r["state"] == "sent")
    })
    .await;
    let hung = rows[2]["intent_id"]
        .as_str()
        .expect("the hanging intent")
        .to_string();
    child.start_kill().expect("kill -9");
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("the host dies")
        .expect("wait");
    assert!(!status.success());
    server.clear_faults();

    let last_seq = store(dir.path())
        .await
        .last_seq("momentum")
        .await
        .expect("last seq");
    let report = report(&run_live(&server, dir.path(), last_seq + 300, &config).await);
    assert_eq!(report["resumed_at_seq"], last_seq);
    let store = store(dir.path()).await;
    let intents = store.intents(Some("momentum")).await.expect("intents");
    // Every intent, the killed one included, settled; the server's orders are the intents'.
    assert_agreement(&server, &intents);
    let moves = store.intent_transitions("momentum").await.expect("moves");
    let settled: Vec<(&str, &str)> = moves
        .iter()
        .filter(|m| m.intent_id == hung && m.from.as_deref() == Some("sent"))
        .map(|m| (m.to.as_str(), m.reason.as_deref().unwrap_or("")))
        .collect();
    assert_eq!(
        settled,
        vec![("rejected", "never reached the venue")],
        "the restart looked it up: {moves:?}"
    );
    let journal = store.entries_after("momentum", 0).await.expect("journal");
    let told = journal.iter().any(|e| {
        matches!(&e.event.kind, EventKind::OrderUpdate(u)
            if u.intent_id == hung && u.status == OrderStatus::Rejected)
    });
    assert!(
        told,
        "the strategy is told its order never reached the venue"
    );
    let events = system_event_types(dir.path()).await;
    assert!(
        events.iter().any(|(t, _)| t == "exec-reconciled"),
        "{events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_live_host_picks_up_a_halt_and_refuses_every_order_after_it() {
    let (server, feed) = server(FaultPlan::default()).await;
    let _feed = start_feed(feed);
    let dir = tempfile::tempdir().expect("temp dir");
    let config = format!("{STRATEGY}{FAST_EXEC}");
    let child = spawn_live(&server, dir.path(), 2_500, &config);
    wait_for_intent(dir.path(), "filled", |r| r["state"] == "filled").await;
    let halt = cli(
        dir.path(),
        &["halt", "--strategy", "momentum", "--reason", "test"],
    )
    .await;
    assert!(halt.status.success(), "{halt:?}");
    let output = tokio::time::timeout(RUN_TIMEOUT, child.wait_with_output())
        .await
        .expect("the run ends")
        .expect("output");
    report(&output);

    let intents = store(dir.path())
        .await
        .intents(Some("momentum"))
        .await
        .expect("intents");
    assert_agreement(&server, &intents);
    let halted = |i: &IntentRow| i.reason.as_deref() == Some("strategy halted by operator: test");
    let first = intents
        .iter()
        .position(halted)
        .expect("orders refused after the halt");
    assert!(first > 0, "orders went out before the halt");
    assert!(
        intents[first..].iter().all(halted),
        "nothing placed after the halt took effect"
    );
    let events = system_event_types(dir.path()).await;
    assert!(events.iter().any(|(t, _)| t == "exec-halted"), "{events:?}");
    assert!(events.iter().any(|(t, _)| t == "halt"), "{events:?}");
}
