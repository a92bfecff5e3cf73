//! Risk limits, the operator's halt and `[exec]`/`[risk]` config on the
//! simulated market, on the real binary: every refusal is a `rejected`
//! update with its reason and a system event; a halt is durable across
//! restarts; a killed run with refusals resumes exactly; intents and halts
//! live in PostgreSQL as in SQLite. (Live venue faults: `execution.rs`.)

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use polybot_host::contract::{EventKind, OrderStatus};
use polybot_host::store::sql::{SqlStore, StoreLocation};
use polybot_host::store::{IntentRow, StateStore};
use polybot_tests::guest;

const RUN_TIMEOUT: Duration = Duration::from_secs(120);
/// Momentum trading on every small trend, with no cooldown.
const STRATEGY: &str = "[strategy]\nlookback = 3\nthreshold = 0.01\ncooldown_ms = 0\n";

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
