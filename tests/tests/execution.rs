//! The execution layer end to end, on the real binary: every order goes
//! through the executor, on the simulated venue and live against the local
//! CLOB server (`SimServer`, in this process on 127.0.0.1, port 0) with fault
//! plans; intents are read back from the store and compared with the
//! server's own order log.
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
use polybot_polymarket::order::OrderSigner;
use polybot_polymarket::server::{
    Fault, FaultPlan, FaultRule, FeedHandle, SimCredentials, SimHandle, SimOptions, SimServer,
};
use polybot_tests::guest;
use tokio::task::JoinHandle;

const TOKENS: [&str; 2] = ["1001", "1002"];
const CONDITION: &str = "0x00000000000000000000000000000000000000000000000000000000000000c1";
/// Hardhat's first well-known test key; holds nothing anywhere.
const KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
const RUN_TIMEOUT: Duration = Duration::from_secs(120);
/// Momentum trading on every small trend, with no cooldown.
const STRATEGY: &str = "[strategy]\nlookback = 3\nthreshold = 0.01\ncooldown_ms = 0\n";
/// Short breaker, retry and window times, so a fault plan plays out in seconds.
const FAST_EXEC: &str = "[exec]\nmax_wait_ms = 20000\n\
    [exec.retry]\ninitial_backoff_ms = 20\nmax_backoff_ms = 300\nmax_attempts = 30\nmax_elapsed_ms = 20000\n\
    [exec.breaker]\nwindow_size = 6\nminimum_calls = 3\nopen_ms = 200\nhalf_open_calls = 1\n\
    [exec.windows]\ntoo_early_probe_ms = 200\nhalted_probe_ms = 200\npost_only_ms = 1000\n";

fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

async fn server(faults: FaultPlan) -> (SimHandle, FeedHandle) {
    let options = SimOptions {
        faults,
        ..SimOptions::default()
    };
    SimServer::start("127.0.0.1:0".parse().expect("address"), options)
        .await
        .expect("start the local CLOB server")
}

/// Each token's mid walks up 20 cents and back down, one cent a step.
fn publish_step(feed: &FeedHandle, step: u64) {
    for (i, token) in TOKENS.iter().enumerate() {
        let phase = (step + 7 * i as u64) % 40;
        let mid = 30 + if phase < 20 { phase } else { 40 - phase };
        let cents = |c: u64| c as f64 / 100.0;
        feed.publish_book(
            token,
            CONDITION,
            &[(cents(mid - 1), 100.0), (cents(mid - 2), 200.0)],
            &[(cents(mid + 1), 100.0), (cents(mid + 2), 200.0)],
            wall_ms(),
        );
    }
}

struct Feed(JoinHandle<()>);

impl Drop for Feed {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn start_feed(feed: FeedHandle) -> Feed {
    publish_step(&feed, 0);
    Feed(tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_millis(10));
        for step in 1.. {
            every.tick().await;
            publish_step(&feed, step);
        }
    }))
}

fn live_env() -> Vec<(&'static str, String)> {
    let creds = SimCredentials::test();
    let signer = OrderSigner::from_private_key(KEY).expect("test key");
    vec![
        ("POLYMARKET_API_KEY", creds.api_key.clone()),
        ("POLYMARKET_API_SECRET", creds.secret.clone()),
        ("POLYMARKET_API_PASSPHRASE", creds.passphrase.clone()),
        ("POLYMARKET_ADDRESS", signer.address().to_checksum(None)),
        ("POLYMARKET_PRIVATE_KEY", KEY.to_string()),
    ]
}

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
        .args(["--venue", "polymarket", "--live"])
        .args(["--clob-url", &server.base_url()])
        .args(["--ws-url", &server.ws_url()])
        .args(["--gamma-url", &server.gamma_url()])
        .args(["--events", &events.to_string(), "--json", "--data-dir"])
        .arg(dir.join("data"));
    for token in TOKENS {
        command.args(["--market", token]);
    }
    for (name, value) in live_env() {
        command.env(name, value);
    }
    output(command).await
}

/// `polybot-host run` on the simulated market, as fast as it goes.
async fn run_sim(dir: &Path, events: u64, config: &str) -> Output {
    let path = dir.join("exec.toml");
    std::fs::write(&path, config).expect("write config");
    let mut command = host();
    command
        .args(["run", "--strategy"])
        .arg(guest("momentum"))
        .arg("--config")
        .arg(&path)
        .args(["--speed", "max", "--events", &events.to_string(), "--json"])
        .arg("--data-dir")
        .arg(dir.join("data"));
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn risk_limits_refuse_orders_with_rejected_updates_and_system_events() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = format!("{STRATEGY}[risk]\nmax_order_size = 5.0\n");
    let report = report(&run_sim(dir.path(), 1500, &config).await);
    let orders = report["orders"].as_u64().expect("orders");
    assert!(orders > 0, "{report}");
    assert_eq!(report["fills"], 0, "{report}");

    let store = store(dir.path()).await;
    let intents = store.intents(Some("momentum")).await.expect("intents");
    assert_eq!(intents.len() as u64, orders);
    for i in &intents {
        assert_eq!(i.state, "rejected", "{i:?}");
        assert!(
            i.reason
                .as_deref()
                .is_some_and(|r| r.contains("max_order_size")),
            "{i:?}"
        );
    }
    let journal = store.entries_after("momentum", 0).await.expect("journal");
    let rejected = journal
        .iter()
        .filter(|e| {
            matches!(&e.event.kind, EventKind::OrderUpdate(u)
            if u.status == OrderStatus::Rejected
                && u.reason.as_deref().is_some_and(|r| r.contains("max_order_size")))
        })
        .count();
    assert_eq!(rejected, intents.len(), "the strategy is told of each");
    let events = system_event_types(dir.path()).await;
    let risk = events.iter().filter(|(t, _)| t == "exec-risk").count();
    assert_eq!(risk, intents.len(), "each refusal is a system event");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_exec_and_risk_config_is_one_line_and_exit_2() {
    for (text, needle) in [
        ("[risk]\nmax_order_size = -1.0\n", "[risk] max_order_size"),
        ("[risk]\nmax_open_orders = 0\n", "[risk] max_open_orders"),
        ("[exec]\nmax_wait = 5\n", "max_wait"),
        ("[exec.breaker]\nopen_for = 3\n", "open_for"),
        (
            "[exec.retry]\nmax_attempts = 0\n",
            "[exec.retry] max_attempts",
        ),
    ] {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = run_sim(dir.path(), 10, text).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}: {stderr}");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{text}: {stderr}");
        assert!(lines[0].contains("exec.toml"), "names the file: {stderr}");
        assert!(lines[0].contains(needle), "{text}: {stderr}");
        assert!(!dir.path().join("data").exists(), "nothing written");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_halt_refuses_orders_survives_a_restart_and_resume_lifts_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let halt = cli(dir.path(), &["halt", "--strategy", "momentum"]).await;
    assert!(halt.status.success(), "{halt:?}");

    let first = report(&run_sim(dir.path(), 800, STRATEGY).await);
    let second = report(&run_sim(dir.path(), 1600, STRATEGY).await);
    assert_eq!(second["resumed_at_seq"], first["last_seq"]);
    let store_now = store(dir.path()).await;
    let intents = store_now.intents(Some("momentum")).await.expect("intents");
    let orders = second["orders"].as_u64().expect("orders");
    assert!(
        orders > first["orders"].as_u64().expect("orders"),
        "{second}"
    );
    assert_eq!(intents.len() as u64, orders);
    for i in &intents {
        assert_eq!(i.state, "rejected", "{i:?}");
        assert!(
            i.reason
                .as_deref()
                .is_some_and(|r| r.starts_with("strategy halted by operator")),
            "{i:?}"
        );
    }
    assert_eq!(second["fills"], 0, "{second}");
    drop(store_now);

    let listed = cli(dir.path(), &["orders", "--strategy", "momentum", "--json"]).await;
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("orders JSON");
    assert_eq!(
        listed["intents"].as_array().expect("array").len(),
        intents.len()
    );
    let open = cli(dir.path(), &["orders", "--open", "--json"]).await;
    let open: serde_json::Value = serde_json::from_slice(&open.stdout).expect("orders JSON");
    assert!(open["intents"].as_array().expect("array").is_empty());

    let resume = cli(dir.path(), &["resume", "--strategy", "momentum"]).await;
    assert!(resume.status.success(), "{resume:?}");
    let third = report(&run_sim(dir.path(), 2400, STRATEGY).await);
    assert!(third["fills"].as_u64().expect("fills") > 0, "{third}");
    let status = cli(dir.path(), &["status", "--json"]).await;
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status JSON");
    let counts = &status["intents"]["momentum"];
    assert_eq!(
        counts["rejected"].as_u64(),
        Some(intents.len() as u64),
        "{status}"
    );
    assert!(counts["filled"].as_u64().unwrap_or(0) > 0, "{status}");
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
        .args(["--venue", "polymarket", "--live"])
        .args(["--clob-url", &server.base_url()])
        .args(["--ws-url", &server.ws_url()])
        .args(["--gamma-url", &server.gamma_url()])
        .args(["--events", &events.to_string(), "--json", "--data-dir"])
        .arg(dir.join("data"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    for token in TOKENS {
        command.args(["--market", token]);
    }
    for (name, _) in std::env::vars().filter(|(k, _)| k.starts_with("POLYMARKET_")) {
        command.env_remove(name);
    }
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
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let out = cli(dir, &["orders", "--json"]).await;
        if out.status.success()
            && let Ok(json) = serde_json::from_slice::<serde_json::Value>(&out.stdout)
        {
            let rows = json["intents"].as_array().cloned().unwrap_or_default();
            if rows.iter().any(&until) {
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
    let rows = wait_for_intent(dir.path(), "sent", |r| r["state"] == "sent").await;
    let hung = rows
        .iter()
        .find(|r| r["state"] == "sent")
        .and_then(|r| r["intent_id"].as_str())
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

/// `run` on the simulated market with `config`, for `events` at `speed`.
fn sim_command(dir: &Path, config: &Path, events: &str, speed: &str) -> std::process::Command {
    let mut command = polybot_tests::host_command!("info");
    command
        .args(["run", "--strategy"])
        .arg(guest("momentum"))
        .arg("--config")
        .arg(config)
        .args(["--speed", speed, "--events", events, "--json", "--data-dir"])
        .arg(dir.join("data"));
    command
}

/// Intents and their moves as a run left them, for comparing two runs.
async fn intent_record(dir: &Path) -> (Vec<(String, String, u64, Option<String>)>, usize) {
    let store = store(dir).await;
    let intents = store
        .intents(Some("momentum"))
        .await
        .expect("intents")
        .into_iter()
        .map(|i| (i.intent_id, i.state, (i.filled * 1e6) as u64, i.reason))
        .collect();
    let moves = store.intent_transitions("momentum").await.expect("moves");
    (intents, moves.len())
}

#[test]
fn a_killed_sim_run_with_risk_refusals_resumes_to_the_same_journal_and_intents() {
    const EVENTS: &str = "4000";
    let config_text = format!("{STRATEGY}[risk]\nmax_orders_per_minute = 2\n");
    let reference = tempfile::tempdir().expect("temp dir");
    let killed = tempfile::tempdir().expect("temp dir");
    let config = reference.path().join("exec.toml");
    std::fs::write(&config, &config_text).expect("write config");

    let out = sim_command(reference.path(), &config, EVENTS, "max")
        .stdout(std::process::Stdio::piped())
        .output()
        .expect("reference run");
    assert!(out.status.success(), "{out:?}");
    for kill in 0..3u64 {
        let mut host = polybot_tests::LoggingHost::start_running(
            sim_command(killed.path(), &config, EVENTS, "150").stdout(std::process::Stdio::null()),
        );
        std::thread::sleep(Duration::from_millis(150 + 200 * kill));
        let _ = host.child.kill(); // SIGKILL
        host.child.wait().expect("wait");
        host.drain_log();
    }
    let out = sim_command(killed.path(), &config, EVENTS, "max")
        .stdout(std::process::Stdio::piped())
        .output()
        .expect("final run");
    assert!(out.status.success(), "{out:?}");

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let journal = |dir: std::path::PathBuf| async move {
            store(&dir)
                .await
                .entries_after("momentum", 0)
                .await
                .expect("journal")
        };
        let a = journal(reference.path().to_path_buf()).await;
        let b = journal(killed.path().to_path_buf()).await;
        assert_eq!(a.len(), b.len());
        if let Some(i) = (0..a.len()).find(|&i| a[i] != b[i]) {
            panic!("journals differ at seq {}: {:?} vs {:?}", i + 1, b[i], a[i]);
        }
        let (ref_intents, ref_moves) = intent_record(reference.path()).await;
        let (intents, moves) = intent_record(killed.path()).await;
        assert_eq!(
            intents, ref_intents,
            "intents differ from an uninterrupted run"
        );
        assert_eq!(moves, ref_moves, "a replay recorded a move twice");
        let refused = intents
            .iter()
            .filter(|i| {
                i.3.as_deref()
                    .is_some_and(|r| r.contains("max_orders_per_minute"))
            })
            .count();
        let filled = intents.iter().filter(|i| i.1 == "filled").count();
        assert!(
            refused > 0 && filled > 0,
            "refused {refused}, filled {filled}"
        );
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intents_and_halts_live_in_postgres_too() {
    let db = polybot_tests::TempDatabase::create("pb_exec");
    let url = db.url();
    let dir = tempfile::tempdir().expect("temp dir");
    let halt = cli(
        dir.path(),
        &["halt", "--strategy", "momentum", "--store", &url],
    )
    .await;
    assert!(halt.status.success(), "{halt:?}");
    let config = dir.path().join("exec.toml");
    std::fs::write(&config, STRATEGY).expect("write config");
    let mut command = host();
    command
        .args(["run", "--strategy"])
        .arg(guest("momentum"))
        .arg("--config")
        .arg(&config)
        .args(["--speed", "max", "--events", "800", "--json"])
        .args(["--store", &url, "--data-dir"])
        .arg(dir.path().join("data"));
    let report = report(&output(command).await);
    let orders = report["orders"].as_u64().expect("orders");
    assert!(orders > 0, "{report}");

    let listed = cli(
        dir.path(),
        &[
            "orders",
            "--strategy",
            "momentum",
            "--json",
            "--store",
            &url,
        ],
    )
    .await;
    assert!(listed.status.success(), "{listed:?}");
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("JSON");
    let rows = listed["intents"].as_array().expect("intents");
    assert_eq!(rows.len() as u64, orders);
    assert!(
        rows.iter()
            .all(|r| r["state"] == "rejected" && r["reason"] == "strategy halted by operator")
    );
    let all = cli(dir.path(), &["orders", "--json", "--store", &url]).await;
    let all: serde_json::Value = serde_json::from_slice(&all.stdout).expect("JSON");
    assert_eq!(
        all["intents"], listed["intents"],
        "one strategy in the store"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daily_loss_limit_stops_placement_for_the_day() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = format!("{STRATEGY}[risk]\nmax_daily_loss = 0.5\n");
    let report = report(&run_sim(dir.path(), 3000, &config).await);
    let intents = store(dir.path())
        .await
        .intents(Some("momentum"))
        .await
        .expect("intents");
    let stopped = |i: &IntentRow| {
        i.reason
            .as_deref()
            .is_some_and(|r| r.contains("max_daily_loss"))
    };
    let first = intents
        .iter()
        .position(stopped)
        .unwrap_or_else(|| panic!("the loss limit was never reached: {report}"));
    assert!(intents[..first].iter().any(|i| i.state == "filled"));
    assert!(
        intents[first..].iter().all(stopped),
        "every order after the limit is refused"
    );
    let realized = report["portfolio"]["realized_pnl"].as_f64().expect("pnl");
    assert!(realized <= -0.5, "{report}");
}
