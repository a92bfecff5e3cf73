//! `polybot-host serve`: many strategies in one host, on the real binary.
//!
//! - ten strategies (momentum variants and `faulty` set to trap, loop, hog
//!   memory at given seqs, one set to go fatal) trade side by side; killed
//!   with SIGKILL mid-run and started again with the same file, every one of
//!   them ends exactly where an uninterrupted run ends (journal, orders,
//!   fills);
//! - a bad fleet file is one line naming the table and key, exit 2, nothing
//!   written;
//! - a second host on the same store is refused naming the first; after
//!   SIGKILL of the first, a new host takes over;
//! - systemd: READY, WATCHDOG and STOPPING reach a socket of the test's own;
//! - Redis heartbeats appear with a TTL, survive Redis going away, resume;
//! - a strategy that stops handling events is restarted;
//! - SIGHUP adds and removes strategies and refuses a bad file.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use polybot_host::store::sql::{SqlStore, StoreLocation};
use polybot_host::store::{JournalEntry, OrderRecord, Outcome, StateStore, TradeRecord};
use polybot_tests::fleet::{eventually, wait_exit};
use polybot_tests::{LoggingHost, guest, serve_command};

fn host() -> Command {
    polybot_tests::host_command!("info")
}

/// One `[[strategy]]` table.
struct Strategy {
    name: String,
    module: &'static str,
    body: String,
}

fn momentum(name: &str, lookback: u32, seed: u64) -> Strategy {
    Strategy {
        name: name.into(),
        module: "momentum",
        body: format!("seed = {seed}\nconfig = {{ lookback = {lookback} }}\n"),
    }
}

fn faulty(name: &str, config: &str, extra: &str) -> Strategy {
    Strategy {
        name: name.into(),
        module: "faulty",
        body: format!("config = {{ {config} }}\n{extra}"),
    }
}

/// Writes a fleet file: `head` (host-wide sections), then each strategy with
/// `per_strategy` lines (limits, speed) added.
fn fleet_file(dir: &Path, head: &str, strategies: &[Strategy], per_strategy: &str) -> PathBuf {
    let mut text = head.to_string();
    for s in strategies {
        text.push_str(&format!(
            "\n[[strategy]]\nname = \"{}\"\nmodule = \"{}\"\n{}{}",
            s.name,
            guest(s.module).display(),
            per_strategy,
            s.body
        ));
    }
    let path = dir.join("fleet.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn serve_to_end(file: &Path, data: &Path) -> serde_json::Value {
    let output = serve_command!(file, data).output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn signal(child: &std::process::Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

struct Durable {
    journal: Vec<JournalEntry>,
    orders: Vec<OrderRecord>,
    trades: Vec<TradeRecord>,
}

fn read_back(dir: &Path, names: &[String]) -> Vec<Durable> {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = SqlStore::open(StoreLocation::Sqlite(dir.join("polybot.db")), dir)
            .await
            .unwrap();
        let mut all = Vec::new();
        for name in names {
            let mut orders = store.orders(name).await.unwrap();
            for o in &mut orders {
                o.created_at_ms = 0;
            }
            all.push(Durable {
                journal: store.entries_after(name, 0).await.unwrap(),
                orders,
                trades: store.trades(name).await.unwrap(),
            });
        }
        store.close().await.unwrap();
        all
    })
}

/// The ten strategies of the fleet test: 7 momentum variants, a faulty one
/// trapping at a few seqs, one looping into its deadline, one hogging memory
/// (each poison event is quarantined and the strategy goes on), and one
/// trapping on every event from seq 10 (fatal after its restarts).
fn ten() -> Vec<Strategy> {
    let mut all: Vec<Strategy> = (0..7)
        .map(|i| momentum(&format!("momentum-{i}"), 5 + 3 * i, 40 + u64::from(i)))
        .collect();
    all.push(faulty(
        "faulty-trap",
        "fault = \"panic\", at_seq = [40, 400, 900]",
        "",
    ));
    all.push(faulty(
        "faulty-loop",
        "fault = \"loop\", at_seq = [150]",
        "",
    ));
    all.push(faulty(
        "faulty-hog",
        "fault = \"hog\", at_seq = [250]",
        "sandbox = { memory_bytes = 16777216 }\n",
    ));
    let fatal_seqs: Vec<String> = (10..400).map(|s| s.to_string()).collect();
    all.push(faulty(
        "faulty-fatal",
        &format!(
            "fault = \"unreachable\", at_seq = [{}]",
            fatal_seqs.join(",")
        ),
        "supervisor = { max_restarts = 2, quarantine_after = 1000 }\n",
    ));
    all
}

const FLEET_HEAD: &str = "[supervisor]\nbackoff_initial = \"1ms\"\nbackoff_max = \"5ms\"\nquarantine_after = 2\n[checkpoint]\nevery_events = 200\n";

fn states(report: &serde_json::Value) -> std::collections::BTreeMap<String, serde_json::Value> {
    report["strategies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap().to_string(), s.clone()))
        .collect()
}

#[test]
fn ten_strategies_trade_side_by_side_and_resume_exactly_after_sigkill() {
    let events = 1500;
    let reference_dir = tempfile::tempdir().unwrap();
    let killed_dir = tempfile::tempdir().unwrap();
    let strategies = ten();
    let names: Vec<String> = strategies.iter().map(|s| s.name.clone()).collect();

    // Uninterrupted, as fast as it goes.
    let fast = format!("events = {events}\nspeed = \"max\"\n");
    let file = fleet_file(reference_dir.path(), FLEET_HEAD, &strategies, &fast);
    let reference = serve_to_end(&file, reference_dir.path());
    let by_name = states(&reference);
    for name in &names[..7] {
        let s = &by_name[name];
        assert_eq!(s["state"], "stopped", "{name}: {s}");
        assert_eq!(s["last_seq"], events, "{name} handled every event: {s}");
    }
    assert!(
        names[..7]
            .iter()
            .any(|n| by_name[n]["orders"].as_u64() > Some(0)),
        "the momentum strategies trade: {reference}"
    );
    for name in ["faulty-trap", "faulty-loop", "faulty-hog"] {
        let s = &by_name[name];
        assert_eq!(s["state"], "stopped", "{name} recovered: {s}");
        assert_eq!(s["last_seq"], events, "{name} went on to the end: {s}");
        assert!(
            s["restarts"].as_u64() > Some(0),
            "{name} was restarted: {s}"
        );
    }
    let fatal = &by_name["faulty-fatal"];
    assert_eq!(fatal["state"], "fatal", "{fatal}");
    assert_eq!(fatal["last_seq"], 9, "{fatal}");
    assert!(
        fatal["last_fault"]
            .as_str()
            .unwrap()
            .contains("unreachable"),
        "{fatal}"
    );

    // The same fleet, paced, killed twice mid-run, then run to the end.
    let paced = format!("events = {events}\nspeed = 20\n");
    let file = fleet_file(killed_dir.path(), FLEET_HEAD, &strategies, &paced);
    for kill in 0..2 {
        let mut host =
            LoggingHost::spawn(serve_command!(&file, killed_dir.path()).stdout(Stdio::null()));
        host.wait_for("fleet running");
        std::thread::sleep(Duration::from_millis(700 + 300 * kill));
        assert!(
            host.child.try_wait().unwrap().is_none(),
            "kill {kill} came after the end"
        );
        host.child.kill().unwrap();
        host.child.wait().unwrap();
        host.drain_log();
    }
    let file = fleet_file(killed_dir.path(), FLEET_HEAD, &strategies, &fast);
    let resumed = serve_to_end(&file, killed_dir.path());
    let resumed_by_name = states(&resumed);
    for name in &names {
        assert_eq!(
            resumed_by_name[name]["last_seq"], by_name[name]["last_seq"],
            "{name}: {}",
            resumed_by_name[name]
        );
    }
    let killed = read_back(killed_dir.path(), &names);
    let reference = read_back(reference_dir.path(), &names);
    for ((name, k), r) in names.iter().zip(&killed).zip(&reference) {
        assert_eq!(k.journal.len(), r.journal.len(), "{name}: journal length");
        // A quarantined event's reason says how the sandbox stopped it (the
        // hog meets its memory cap, or on a loaded machine its deadline
        // first): the event and the decision must match, not that text.
        let same = |a: &JournalEntry, b: &JournalEntry| match (&a.outcome, &b.outcome) {
            (Outcome::Quarantined { .. }, Outcome::Quarantined { .. }) => a.event == b.event,
            _ => a == b,
        };
        if let Some(i) = (0..k.journal.len()).find(|&i| !same(&k.journal[i], &r.journal[i])) {
            panic!(
                "{name}: journals differ at seq {}: {:?} vs the uninterrupted {:?}",
                i + 1,
                k.journal[i],
                r.journal[i]
            );
        }
        assert_eq!(k.orders, r.orders, "{name}: orders");
        assert_eq!(k.trades, r.trades, "{name}: fills");
    }
}

#[test]
fn a_bad_fleet_file_is_one_line_and_exit_2_with_nothing_written() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let m = guest("momentum").display().to_string();
    for (text, needle) in [
        (
            format!(
                "[[strategy]]\nname = \"a\"\nmodule = \"{m}\"\n[[strategy]]\nname = \"a\"\nmodule = \"{m}\"\n"
            ),
            "[[strategy]] `a`: the name is used twice",
        ),
        (
            "[[strategy]]\nname = \"a\"\nmodule = \"missing.wasm\"\n".to_string(),
            "missing.wasm: no such file",
        ),
        (
            format!("[[strategy]]\nname = \"a\"\nmodule = \"{m}\"\nlookback = 3\n"),
            "[[strategy]] `a`: unknown key `lookback`",
        ),
        (
            format!(
                "[[strategy]]\nname = \"a\"\nmodule = \"{m}\"\n[strategy.supervisor]\nmax_restart = 1\n"
            ),
            "max_restart",
        ),
        (
            format!(
                "[helth]\nstuck_after = \"1s\"\n[[strategy]]\nname = \"a\"\nmodule = \"{m}\"\n"
            ),
            "helth",
        ),
        (
            format!(
                "[[strategy]]\nname = \"a\"\nmodule = \"{}\"\nconfig = {{ fail_init = \"no\" }}\n",
                guest("faulty").display()
            ),
            "init refused",
        ),
        (
            format!("[redis]\nurl = \"not a url\"\n[[strategy]]\nname = \"a\"\nmodule = \"{m}\"\n"),
            "[redis] url",
        ),
    ] {
        let file = dir.path().join("fleet.toml");
        std::fs::write(&file, &text).unwrap();
        let output = serve_command!(&file, &data).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{text}: {stderr}");
        let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(lines.len(), 1, "{stderr}");
        assert!(lines[0].contains(needle), "`{needle}` not in: {}", lines[0]);
        assert!(lines[0].contains("fleet.toml"), "{}", lines[0]);
        assert!(!data.join("polybot.db").exists(), "{text}: nothing written");
    }
}

#[test]
fn a_second_host_on_the_same_store_is_refused_and_takes_over_after_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = fleet_file(
        dir.path(),
        "",
        &[momentum("a", 5, 1), momentum("b", 8, 2)],
        "speed = 20\n",
    );
    let mut first = LoggingHost::spawn(serve_command!(&file, &data).stdout(Stdio::null()));
    first.wait_for("fleet running");
    let second = serve_command!(&file, &data).output().unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(2), "{stderr}");
    let line = stderr.lines().find(|l| l.starts_with("error:")).unwrap();
    assert!(line.contains("already running"), "{line}");
    assert!(
        line.contains(&format!("pid {}", first.child.id())),
        "names the holder: {line}"
    );

    first.child.kill().unwrap();
    first.child.wait().unwrap();
    first.drain_log();
    let mut next = LoggingHost::spawn(serve_command!(&file, &data).stdout(Stdio::piped()));
    next.wait_for("fleet running");
    signal(&next.child, "TERM");
    let status = wait_exit(&mut next, Duration::from_secs(30));
    assert!(status.success(), "{status:?}");
    next.drain_log();
}

#[test]
fn systemd_hears_ready_watchdog_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let file = fleet_file(dir.path(), "", &[momentum("a", 5, 1)], "speed = 20\n");
    let mut host = LoggingHost::spawn(
        serve_command!(&file, &dir.path().join("data"))
            .env("NOTIFY_SOCKET", &socket_path)
            .env("WATCHDOG_USEC", "400000")
            .stdout(Stdio::null()),
    );
    let mut heard = Vec::new();
    let read_until = |needle: &str, heard: &mut Vec<String>| {
        let mut buf = [0u8; 4096];
        loop {
            let n = socket
                .recv(&mut buf)
                .expect("a notification within the timeout");
            let message = String::from_utf8_lossy(&buf[..n]).to_string();
            heard.push(message.clone());
            if message.lines().any(|l| l == needle) {
                return;
            }
        }
    };
    read_until("READY=1", &mut heard);
    read_until("WATCHDOG=1", &mut heard);
    read_until("WATCHDOG=1", &mut heard);
    signal(&host.child, "TERM");
    read_until("STOPPING=1", &mut heard);
    assert!(wait_exit(&mut host, Duration::from_secs(30)).success());
    host.drain_log();
    assert!(
        heard
            .iter()
            .any(|m| m.contains("STATUS=1 strategies: 1 running")),
        "{heard:?}"
    );

    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../host/deploy/polybot.service");
    assert!(unit.is_file());
    match Command::new("systemd-analyze").arg("--version").output() {
        Ok(o) if o.status.success() => {
            let out = Command::new("systemd-analyze")
                .args(["verify", "--man=no"])
                .arg(&unit)
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stderr);
            // The unit's binary lives where a deployment puts it; only the
            // unit's own syntax is judged here.
            let problems: Vec<&str> = text
                .lines()
                .filter(|l| !l.contains("/usr/local/bin/polybot-host") && !l.trim().is_empty())
                .filter(|l| !l.contains("Failed to prepare filename") && !l.contains("ExecStart"))
                .collect();
            assert!(problems.is_empty(), "systemd-analyze verify: {text}");
        }
        _ => eprintln!("note: systemd-analyze is not installed; the unit file is not verified"),
    }
}

/// A private redis-server on a spare port, stopped on drop.
struct Redis {
    child: std::process::Child,
    port: u16,
}

impl Redis {
    fn start(port: u16) -> Redis {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (these tests start their own)");
        let redis = Redis { child, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        while redis.cli(&["PING"]) != "PONG" {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        redis
    }

    fn cli(&self, args: &[&str]) -> String {
        Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    }

    fn stop(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spare_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn redis_heartbeats_appear_survive_redis_going_away_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    let port = spare_port();
    let redis = Redis::start(port);
    let head = "[host]\nid = \"h1\"\n[redis]\nevery = \"100ms\"\nttl = \"2s\"\n";
    let file = fleet_file(dir.path(), head, &[momentum("a", 5, 1)], "speed = 20\n");
    let url = format!("redis://127.0.0.1:{port}");
    let mut host = LoggingHost::spawn(
        serve_command!(&file, &dir.path().join("data"))
            .args(["--redis", &url])
            .stdout(Stdio::null()),
    );
    host.wait_for("fleet running");
    eventually(Duration::from_secs(20), "heartbeat:a appears", || {
        redis.cli(&["GET", "heartbeat:a"]).starts_with('{')
    });
    let beat: serde_json::Value =
        serde_json::from_str(&redis.cli(&["GET", "heartbeat:a"])).unwrap();
    for key in ["state", "last_seq", "last_event_ms", "restarts", "pnl"] {
        assert!(beat.get(key).is_some(), "`{key}` in {beat}");
    }
    let ttl: i64 = redis.cli(&["TTL", "heartbeat:a"]).parse().unwrap();
    assert!((1..=2).contains(&ttl), "TTL {ttl}");
    assert!(
        redis
            .cli(&["GET", "heartbeat:host:h1"])
            .contains("\"id\":\"h1\"")
    );

    // Redis goes away: trading goes on, the gap is noted.
    redis.stop();
    host.wait_for("Redis does not take heartbeats");
    let seq_at_gap = beat["last_seq"].as_u64().unwrap();
    // Back on the same port: heartbeats resume by themselves.
    let redis = Redis::start(port);
    host.wait_for("heartbeats resumed");
    eventually(Duration::from_secs(20), "heartbeat:a is back", || {
        redis.cli(&["GET", "heartbeat:a"]).starts_with('{')
    });
    let beat: serde_json::Value =
        serde_json::from_str(&redis.cli(&["GET", "heartbeat:a"])).unwrap();
    assert!(
        beat["last_seq"].as_u64().unwrap() > seq_at_gap,
        "trading went on while Redis was away: {beat}"
    );
    signal(&host.child, "TERM");
    assert!(wait_exit(&mut host, Duration::from_secs(30)).success());
    host.drain_log();
}

#[test]
fn an_unreachable_redis_is_a_warning_and_the_host_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let file = fleet_file(
        dir.path(),
        "",
        &[momentum("a", 5, 1)],
        "events = 300\nspeed = \"max\"\n",
    );
    let url = format!("redis://127.0.0.1:{}", spare_port());
    let output = serve_command!(&file, &dir.path().join("data"))
        .args(["--redis", &url])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("Redis does not take heartbeats"),
        "the gap is reported: {stderr}"
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["strategies"][0]["last_seq"], 300);
}

#[test]
fn a_strategy_that_stops_handling_events_is_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let head = "[health]\nstuck_after = \"500ms\"\n";
    let stuck = faulty(
        "stuck",
        "fault = \"sleep\", sleep_ms = 20000, at_seq = [30]",
        "sandbox = { call_deadline = \"60s\" }\n",
    );
    let file = fleet_file(
        dir.path(),
        head,
        &[stuck, momentum("a", 5, 1)],
        "speed = 20\n",
    );
    let mut host =
        LoggingHost::spawn(serve_command!(&file, &dir.path().join("data")).stdout(Stdio::piped()));
    host.wait_for("fleet running");
    let started = Instant::now();
    let line = host.wait_for_within("stuck:", Duration::from_secs(30));
    assert!(line.contains("stuck"), "{line}");
    host.wait_for_within("restarting the strategy", Duration::from_secs(10));
    eprintln!(
        "stuck detected and restarted {:?} after start",
        started.elapsed()
    );
    signal(&host.child, "TERM");
    assert!(wait_exit(&mut host, Duration::from_secs(30)).success());
    host.drain_log();
    let mut out = String::new();
    use std::io::Read as _;
    host.child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let by_name = states(&report);
    assert!(
        by_name["stuck"]["stuck_restarts"].as_u64() >= Some(1),
        "{report}"
    );
    assert!(
        by_name["a"]["last_seq"].as_u64() > Some(30),
        "the other strategy traded on: {report}"
    );
}

#[test]
fn sighup_adds_and_removes_strategies_and_refuses_a_bad_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = fleet_file(
        dir.path(),
        "",
        &[momentum("a", 5, 1), momentum("b", 6, 2)],
        "speed = 20\n",
    );
    let mut host = LoggingHost::spawn(serve_command!(&file, &data).stdout(Stdio::piped()));
    host.wait_for("fleet running");
    fleet_file(
        dir.path(),
        "",
        &[momentum("b", 6, 2), momentum("c", 7, 3)],
        "speed = 20\n",
    );
    signal(&host.child, "HUP");
    let line = host.wait_for("reloaded");
    assert!(line.contains("\"c\"") && line.contains("\"a\""), "{line}");
    std::fs::write(&file, "[[strategy]]\nname = \"b\"\n").unwrap();
    signal(&host.child, "HUP");
    let line = host.wait_for("reload refused");
    assert!(line.contains("module is missing"), "{line}");
    signal(&host.child, "TERM");
    assert!(wait_exit(&mut host, Duration::from_secs(30)).success());
    host.drain_log();
    let mut out = String::new();
    use std::io::Read as _;
    host.child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let names: Vec<&str> = report["strategies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["b", "c"], "{report}");
    // Every strategy stopped with a final checkpoint: `a` when the reload
    // removed it, `b` and `c` on SIGTERM.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = SqlStore::open(StoreLocation::Sqlite(data.join("polybot.db")), &data)
            .await
            .unwrap();
        for name in ["a", "b", "c"] {
            let last = store.last_seq(name).await.unwrap();
            let newest = store.checkpoints(name).await.unwrap()[0].seq;
            assert!(last > 0 || name == "c", "{name} ran");
            assert_eq!(
                newest, last,
                "{name}'s final checkpoint is at its last event"
            );
        }
        store.close().await.unwrap();
    });
}

#[test]
fn two_hosts_sharing_postgres_from_two_data_directories() {
    let db = polybot_tests::TempDatabase::create("pb_serve");
    let dir = tempfile::tempdir().unwrap();
    let file = fleet_file(
        dir.path(),
        "[lease]\nttl = \"2s\"\n",
        &[momentum("a", 5, 1), momentum("b", 8, 2)],
        "speed = 20\n",
    );
    let with_store = |data: &str| {
        let mut command = serve_command!(&file, &dir.path().join(data));
        command.args(["--store", &db.url()]);
        command
    };
    let mut first = LoggingHost::spawn(with_store("one").stdout(Stdio::null()));
    first.wait_for("fleet running");
    let second = with_store("two").output().unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(2), "{stderr}");
    let line = stderr.lines().find(|l| l.starts_with("error:")).unwrap();
    assert!(
        line.contains("already running") && line.contains(&format!("pid {}", first.child.id())),
        "names the first host: {line}"
    );

    first.child.kill().unwrap();
    first.child.wait().unwrap();
    first.drain_log();
    // The dead host's leases lapse within their TTL; no cleanup by hand. The
    // new host's file ends each strategy at once (its journal is past one
    // event), so taking over shows as a clean exit.
    let takeover = fleet_file(
        dir.path(),
        "[lease]\nttl = \"2s\"\n",
        &[momentum("a", 5, 1), momentum("b", 8, 2)],
        "speed = 20\nevents = 1\n",
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let report = loop {
        let output = serve_command!(&takeover, &dir.path().join("two"))
            .args(["--store", &db.url()])
            .output()
            .unwrap();
        if output.status.success() {
            break serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap();
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.code() == Some(2) && stderr.contains("already running"),
            "{stderr}"
        );
        assert!(
            Instant::now() < deadline,
            "no take-over within 20 s: {stderr}"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    for s in report["strategies"].as_array().unwrap() {
        assert!(
            s["last_seq"].as_u64() >= Some(1),
            "resumed from the first host's journal: {s}"
        );
    }
}

#[test]
fn a_fatal_strategy_stays_fatal_while_the_others_trade_unless_exit_on_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let fatal = faulty(
        "doomed",
        "fault = \"unreachable\", at_seq = [3, 4, 5, 6, 7, 8, 9, 10]",
        "supervisor = { max_restarts = 1, quarantine_after = 100, backoff_initial = \"1ms\", backoff_max = \"2ms\" }\n",
    );
    let file = fleet_file(
        dir.path(),
        "",
        &[fatal, momentum("a", 5, 1)],
        "speed = \"max\"\nevents = 400\n",
    );
    // Without the flag: `doomed` ends fatal, `a` runs to its end, exit 0.
    let report = serve_to_end(&file, &dir.path().join("kept"));
    let by_name = states(&report);
    assert_eq!(by_name["doomed"]["state"], "fatal", "{report}");
    assert_eq!(by_name["a"]["last_seq"], 400, "{report}");
    // With it: the host stops at the first fatal strategy, exit 1.
    let output = serve_command!(&file, &dir.path().join("exits"))
        .arg("--exit-on-fatal")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("error: strategy doomed is fatal (--exit-on-fatal)"),
        "{stderr}"
    );
}

#[test]
fn watch_hot_swaps_a_changed_module_of_a_running_fleet() {
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("momentum.wasm");
    let original = std::fs::read(guest("momentum")).unwrap();
    std::fs::write(&module, &original).unwrap();
    let text = format!(
        "[[strategy]]\nname = \"a\"\nmodule = \"{0}\"\nspeed = 20\n\
         [[strategy]]\nname = \"b\"\nmodule = \"{1}\"\nspeed = 20\n",
        module.display(),
        guest("momentum").display()
    );
    let file = dir.path().join("fleet.toml");
    std::fs::write(&file, text).unwrap();
    let mut host = LoggingHost::spawn(
        serve_command!(&file, &dir.path().join("data"))
            .arg("--watch")
            .stdout(Stdio::null()),
    );
    host.wait_for("fleet running");
    // A new build of `a`'s module: the same code with a custom section added.
    let mut changed = original.clone();
    let name = b"polybot-test";
    changed.extend_from_slice(&[0x00, (1 + name.len() + 2) as u8, name.len() as u8]);
    changed.extend_from_slice(name);
    changed.extend_from_slice(b"v2");
    std::fs::write(&module, &changed).unwrap();
    let reloaded = host.wait_for("reloaded");
    assert!(reloaded.contains("swapped=[\"a\"]"), "{reloaded}");
    let swapped = host.wait_for("hot swap:");
    assert!(
        swapped.contains("strategy{name=a}"),
        "in a's span: {swapped}"
    );
    signal(&host.child, "TERM");
    assert!(wait_exit(&mut host, Duration::from_secs(30)).success());
    host.drain_log();
}

fn status_command(data: &Path) -> Command {
    let mut command = host();
    command.args(["status", "--data-dir", data.to_str().unwrap()]);
    command
}

#[test]
fn status_lists_every_strategy_of_a_stopped_fleet_and_watch_redraws() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let head = "[health]\nbeat_every = \"50ms\"\n[supervisor]\nbackoff_initial = \"1ms\"\nbackoff_max = \"5ms\"\n";
    let strategies = [
        momentum("alpha", 5, 1),
        momentum("beta", 9, 2),
        faulty(
            "gamma",
            "fault = \"panic\", at_seq = [100, 200]",
            "supervisor = { restart_window = \"7d\" }\n",
        ),
    ];
    let file = fleet_file(
        dir.path(),
        head,
        &strategies,
        "events = 600\nspeed = \"max\"\n",
    );
    serve_to_end(&file, &data);

    // The host is down: status reads the store.
    let output = status_command(&data).arg("--json").output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let by_name = states(&report);
    assert_eq!(
        by_name.keys().collect::<Vec<_>>(),
        ["alpha", "beta", "gamma"],
        "{report}"
    );
    for (name, s) in &by_name {
        assert_eq!(s["state"], "stopped", "{name}: {s}");
        assert_eq!(s["last_seq"], 600, "{name}: {s}");
        assert!(s["restarts_in_window"].is_u64(), "{name}: {s}");
        assert!(
            s["events_per_sec"].is_null() || s["events_per_sec"].as_f64() >= Some(0.0),
            "{name}: {s}"
        );
        assert!(s["checkpoint_age_ms"].is_u64(), "{name}: {s}");
        assert!(s["open_orders"].is_u64(), "{name}: {s}");
        assert!(s["pnl"].is_f64(), "{name}: {s}");
        assert!(
            s["heartbeat_age_ms"].is_u64(),
            "the final beat: {name}: {s}"
        );
        assert_eq!(s["stuck"], false, "{name}: {s}");
    }
    assert!(by_name["gamma"]["restarts"].as_u64() >= Some(2), "{report}");
    assert_eq!(
        by_name["gamma"]["restarts_in_window"], by_name["gamma"]["restarts"],
        "a window longer than the run counts every restart: {report}"
    );
    assert_eq!(by_name["alpha"]["restarts"], 0, "{report}");

    // Bounded watch: one JSON object per frame.
    let output = status_command(&data)
        .args(["--watch", "--json", "--interval", "20ms", "--count", "3"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let frames: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(frames.len(), 3);
    for f in &frames {
        assert_eq!(f["strategies"].as_array().unwrap().len(), 3, "{f}");
    }

    // Unbounded watch whose reader goes away: it ends by itself, cleanly.
    let mut watch = status_command(&data)
        .args(["--watch", "--interval", "20ms"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    {
        use std::io::BufRead as _;
        let mut out = std::io::BufReader::new(watch.stdout.take().unwrap());
        out.read_line(&mut first).unwrap();
    }
    assert!(first.starts_with("strategy"), "a table: {first}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = watch.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "watch did not end on a closed pipe"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    use std::io::Read as _;
    watch
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_strategy_stuck_again_and_again_goes_fatal_after_its_restart_budget() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let head = "[health]\nstuck_after = \"500ms\"\n";
    // Seq 30 blocks for 20 s in a WASI sleep, well inside its call deadline:
    // only the stuck detector ends it, and it blocks again on every restart.
    let stuck = faulty(
        "stuck",
        "fault = \"sleep\", sleep_ms = 20000, at_seq = [30]",
        "sandbox = { call_deadline = \"60s\" }\nsupervisor = { max_restarts = 2 }\n",
    );
    let file = fleet_file(
        dir.path(),
        head,
        &[stuck, momentum("a", 5, 1)],
        "speed = 20\n",
    );
    let mut host = LoggingHost::spawn(serve_command!(&file, &data).stdout(Stdio::piped()));
    host.wait_for("fleet running");
    host.wait_for_within("faulty: sleeping", Duration::from_secs(60));
    let slept = Instant::now();
    let line = host.wait_for_within("stuck 3 times", Duration::from_secs(60));
    assert!(line.contains("limit 2"), "{line}");
    // Three stuck calls, each cut short: waited out, one alone takes 20 s.
    assert!(
        slept.elapsed() < Duration::from_secs(18),
        "stuck calls were waited out: fatal {:?} after the first one began",
        slept.elapsed()
    );
    signal(&host.child, "TERM");
    assert!(wait_exit(&mut host, Duration::from_secs(30)).success());
    host.drain_log();
    let mut out = String::new();
    use std::io::Read as _;
    host.child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let by_name = states(&report);
    assert_eq!(by_name["stuck"]["state"], "fatal", "{report}");
    assert_eq!(by_name["stuck"]["stuck_restarts"], 3, "{report}");
    assert!(
        by_name["stuck"]["last_fault"]
            .as_str()
            .is_some_and(|f| f.contains("stuck 3 times")),
        "{report}"
    );
    assert!(
        by_name["a"]["last_seq"].as_u64() > Some(30),
        "the other strategy traded on: {report}"
    );

    // The store tells the same while the host is down.
    let output = status_command(&data)
        .args(["--json", "--events", "1000"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(states(&status)["stuck"]["state"], "fatal", "{status}");
    let events = status["system_events"].as_array().unwrap();
    let of = |kind: &str| {
        events
            .iter()
            .filter(|e| e["component"] == "fleet/stuck" && e["event_type"] == kind)
            .map(|e| e["message"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let stuck = of("strategy-stuck");
    assert_eq!(stuck.len(), 3, "{stuck:?}");
    assert!(
        stuck.iter().all(|m| m.contains("with none handled")),
        "{stuck:?}"
    );
    let fatal = of("strategy-fatal");
    assert_eq!(fatal.len(), 1, "{fatal:?}");
    assert!(fatal[0].contains("stuck 3 times"), "{fatal:?}");
}
