//! The control plane of `polybot-host serve`, on the real binary with its
//! HTTP API on an ephemeral port:
//!
//! - every route answers; every guarded route refuses a missing or wrong
//!   token with 401 and a JSON error; the generated token file is mode 600;
//! - malformed queries and bodies, unknown routes and methods, and bodies
//!   over the cap get 4xx JSON errors;
//! - pause, resume, restart and halt act on the strategies through the API;
//! - `/metrics` parses as Prometheus text with the families and types the
//!   README lists, and a strategy's trap moves its restarts counter;
//! - a non-loopback address without an explicit token is refused (exit 2,
//!   one line, nothing written), and accepted with one.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use polybot_tests::fleet::{events_of, eventually, get, post, terminate, view};
use polybot_tests::guest;
use polybot_tests::http::{request, start};
use serde_json::Value;

/// Writes a fleet file with the given `[[strategy]]` bodies (name, module,
/// rest). The call deadline is long: these tests count restarts, and on a
/// loaded machine the default 100 ms can fault a healthy strategy.
fn fleet_file(dir: &Path, strategies: &[(&str, &str, &str)]) -> PathBuf {
    let mut text = String::from(
        "[sandbox]\ncall_deadline = \"10s\"\n[supervisor]\nbackoff_initial = \"1ms\"\nbackoff_max = \"5ms\"\nquarantine_after = 2\n[checkpoint]\nevery_events = 50\n",
    );
    for (name, module, rest) in strategies {
        text.push_str(&format!(
            "\n[[strategy]]\nname = \"{name}\"\nmodule = \"{}\"\nspeed = 50\n{rest}\n",
            guest(module).display()
        ));
    }
    let path = dir.join("fleet.toml");
    std::fs::write(&path, text).unwrap();
    path
}

const BOUND: Duration = Duration::from_secs(60);

fn serve(file: &Path, data: &Path) -> Command {
    let mut command = polybot_tests::serve_command!(file, data);
    command.stdout(Stdio::null());
    command
}

fn has_event(addr: &str, token: &str, name: &str, kind: &str) -> bool {
    !events_of(addr, token, name, kind).is_empty()
}

#[test]
fn every_route_answers_and_pause_resume_restart_halt_work_with_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = fleet_file(
        dir.path(),
        &[
            ("a", "momentum", "config = { lookback = 5 }"),
            ("b", "momentum", "seed = 9\nconfig = { lookback = 8 }"),
            (
                "trap",
                "faulty",
                "config = { fault = \"panic\", at_seq = [20, 40] }",
            ),
        ],
    );
    let (host, addr) = start(&mut serve(&file, &data));

    // The token was generated into DIR/api-token, readable by its owner only.
    let token_path = data.join("api-token");
    let token = std::fs::read_to_string(&token_path)
        .unwrap()
        .trim()
        .to_string();
    assert!(token.len() >= 32);
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&token_path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // Open routes.
    let health = request(&addr, "GET", "/healthz", None, b"");
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["status"], "ok");
    eventually(BOUND, "ready", || {
        let ready = request(&addr, "GET", "/readyz", None, b"");
        ready.status == 200 && ready.json()["ready"] == true
    });
    let page = request(&addr, "GET", "/", None, b"");
    assert_eq!(page.status, 200);
    assert!(page.headers.contains("text/html"));
    assert!(page.body.contains("<canvas") || page.body.contains("dashboard.js"));
    let script = request(&addr, "GET", "/dashboard.js", None, b"");
    assert_eq!(script.status, 200);
    assert!(script.body.contains("getContext(\"2d\")"));

    // Guarded routes: missing and wrong tokens.
    for path in [
        "/api/strategies",
        "/api/strategies/a",
        "/api/strategies/a/orders",
        "/api/strategies/a/trades",
        "/api/strategies/a/events",
        "/api/strategies/a/checkpoints",
        "/api/stream",
        "/api/events",
    ] {
        request(&addr, "GET", path, None, b"").assert_error(401);
        request(&addr, "GET", path, Some("wrong-token-wrong-token"), b"").assert_error(401);
        let prefix = &token[..token.len() - 1];
        request(&addr, "GET", path, Some(prefix), b"").assert_error(401);
    }
    // The token as a query parameter: wrong is refused on the stream, and
    // a right one is refused on every other route (headers only there).
    request(
        &addr,
        "GET",
        "/api/stream?token=wrong-token-wrong",
        None,
        b"",
    )
    .assert_error(401);
    request(
        &addr,
        "GET",
        &format!("/api/stream?token={}", &token[1..]),
        None,
        b"",
    )
    .assert_error(401);
    for path in ["/api/strategies", "/api/events", "/api/strategies/a/orders"] {
        request(&addr, "GET", &format!("{path}?token={token}"), None, b"").assert_error(401);
    }
    for path in ["/api/strategies/a/pause", "/api/halt"] {
        request(&addr, "POST", path, None, b"").assert_error(401);
        request(&addr, "POST", path, Some("nope"), b"").assert_error(401);
    }
    // Nothing was paused by the refused requests.
    assert_ne!(view(&addr, &token, "a")["state"], "paused");

    // The registry's views.
    let all = get(&addr, "/api/strategies", &token).json();
    let names: Vec<&str> = all["strategies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b", "trap"]);
    assert_eq!(view(&addr, &token, "a")["name"], "a");
    get(&addr, "/api/strategies/nope", &token).assert_error(404);
    get(&addr, "/api/strategies/nope/trades", &token).assert_error(404);

    // Store reads: orders and trades appear, checkpoints are listed, the
    // trapping strategy's faults are its system events.
    eventually(BOUND, "orders and trades of a", || {
        let orders = get(&addr, "/api/strategies/a/orders", &token).json();
        let trades = get(&addr, "/api/strategies/a/trades", &token).json();
        !orders["orders"].as_array().unwrap().is_empty()
            && !trades["trades"].as_array().unwrap().is_empty()
    });
    let one = get(&addr, "/api/strategies/a/orders?limit=1", &token).json();
    assert_eq!(one["orders"].as_array().unwrap().len(), 1);
    eventually(BOUND, "a checkpoint of a", || {
        let list = get(&addr, "/api/strategies/a/checkpoints", &token).json();
        list["checkpoints"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["intact"] == true && c["seq"].as_u64() > Some(0))
    });
    eventually(BOUND, "trap restarted", || {
        view(&addr, &token, "trap")["restarts"].as_u64() >= Some(1)
    });
    let trap_events = get(&addr, "/api/strategies/trap/events", &token).json();
    let trap_events = trap_events["events"].as_array().unwrap();
    assert!(
        trap_events.iter().any(|e| e["event_type"] == "fault"),
        "{trap_events:?}"
    );
    let times: Vec<u64> = trap_events
        .iter()
        .map(|e| e["timestamp_ms"].as_u64().unwrap())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {times:?}"
    );
    assert!(
        trap_events
            .iter()
            .all(|e| e["component"].as_str().unwrap().ends_with("/trap")),
        "only the strategy's own events"
    );
    let one = get(&addr, "/api/strategies/trap/events?limit=1", &token).json();
    assert_eq!(one["events"].as_array().unwrap().len(), 1);
    assert_eq!(one["events"][0], trap_events[0]);
    // Every component's system events, newest first.
    let all = get(&addr, "/api/events?limit=500", &token).json();
    let all = all["events"].as_array().unwrap();
    assert!(
        all.iter()
            .any(|e| e["component"].as_str().unwrap().ends_with("/trap"))
            && all
                .iter()
                .any(|e| !e["component"].as_str().unwrap().ends_with("/trap")),
        "{all:?}"
    );
    let times: Vec<u64> = all
        .iter()
        .map(|e| e["timestamp_ms"].as_u64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first");
    get(&addr, "/api/events?limit=0", &token).assert_error(400);

    // Malformed requests: 4xx JSON, never a panic.
    get(&addr, "/api/strategies/a/trades?limit=abc", &token).assert_error(400);
    get(&addr, "/api/strategies/a/trades?limit=0", &token).assert_error(400);
    get(&addr, "/api/strategies/a/trades?bogus=1", &token).assert_error(400);
    post(&addr, "/api/strategies/b/restart", &token, "{not json").assert_error(400);
    post(&addr, "/api/strategies/b/restart", &token, "{\"why\": 1}").assert_error(400);
    post(&addr, "/api/strategies/b/restart", &token, "[1,2]").assert_error(400);
    post(&addr, "/api/strategies/a/explode", &token, "").assert_error(404);
    get(&addr, "/no/such/route", &token).assert_error(404);
    get(&addr, "/api/halt", &token).assert_error(405);
    let big = format!("{{\"reason\": \"{}\"}}", "x".repeat(100 * 1024));
    post(&addr, "/api/strategies/b/restart", &token, &big).assert_error(413);
    assert_eq!(
        view(&addr, &token, "b")["restarts"],
        0,
        "nothing restarted b yet"
    );

    // The stream sends the registry's views and the system events, with
    // the token in the header or (this route only) in the query.
    for auth in [format!("Authorization: Bearer {token}\r\n"), String::new()] {
        let query = if auth.is_empty() {
            format!("?token={token}")
        } else {
            String::new()
        };
        let mut stream = TcpStream::connect(&addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(
            stream,
            "GET /api/stream{query} HTTP/1.1\r\nHost: {addr}\r\n{auth}\r\n"
        )
        .unwrap();
        let mut seen = String::new();
        let mut buf = [0u8; 4096];
        while !(seen.contains("event: strategies")
            && seen.contains("\"name\":\"trap\"")
            && seen.contains("event: events")
            && seen.contains("\"event_type\":\"fault\""))
        {
            let n = stream.read(&mut buf).expect("a stream event within 10 s");
            assert!(n > 0, "the stream ended: {seen}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        assert!(seen.contains("text/event-stream"), "{seen}");
    }

    // Pause and resume.
    let reply = post(&addr, "/api/strategies/a/pause", &token, "");
    assert_eq!(reply.status, 202, "{}", reply.body);
    eventually(BOUND, "a paused", || {
        view(&addr, &token, "a")["state"] == "paused"
    });
    let paused_at = view(&addr, &token, "a")["last_seq"].as_u64().unwrap();
    assert!(has_event(&addr, &token, "a", "strategy-paused"));
    // Paused on purpose: still ready.
    let ready = request(&addr, "GET", "/readyz", None, b"");
    assert_eq!(ready.status, 200, "{}", ready.body);
    // While b goes on by at least 20 events, a handles none.
    let b_before = view(&addr, &token, "b")["last_seq"].as_u64().unwrap();
    eventually(BOUND, "b trades on", || {
        view(&addr, &token, "b")["last_seq"].as_u64().unwrap() >= b_before + 20
    });
    assert_eq!(
        view(&addr, &token, "a")["last_seq"].as_u64(),
        Some(paused_at)
    );
    let reply = post(&addr, "/api/strategies/a/resume", &token, "");
    assert_eq!(reply.status, 202, "{}", reply.body);
    eventually(BOUND, "a resumed and handling events", || {
        let v = view(&addr, &token, "a");
        v["state"] == "running" && v["last_seq"].as_u64().unwrap() > paused_at
    });
    assert!(has_event(&addr, &token, "a", "strategy-resumed"));
    assert_eq!(
        view(&addr, &token, "a")["restarts"],
        0,
        "a pause and resume is not a restart"
    );

    // Restart with a reason.
    let reply = post(
        &addr,
        "/api/strategies/b/restart",
        &token,
        "{\"reason\": \"operator check\", \"grace_ms\": 2000}",
    );
    assert_eq!(reply.status, 202, "{}", reply.body);
    eventually(BOUND, "b restarted", || {
        view(&addr, &token, "b")["restarts"].as_u64() >= Some(1)
    });
    let events = get(&addr, "/api/strategies/b/events", &token).json();
    assert!(
        events["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["event_type"] == "strategy-restart"
                && e["message"].as_str().unwrap().contains("operator check")),
        "{events}"
    );

    // Halt stops placement of every strategy, durably; the strategies keep running.
    let reply = post(&addr, "/api/halt", &token, "{\"reason\": \"test halt\"}");
    assert_eq!(reply.status, 202, "{}", reply.body);
    assert_eq!(reply.json()["halted"].as_array().unwrap().len(), 3);
    for name in ["a", "b", "trap"] {
        assert!(has_event(&addr, &token, name, "halt"), "{name} halted");
    }
    let moving = view(&addr, &token, "a")["last_seq"].as_u64().unwrap();
    eventually(BOUND, "a halted strategy keeps handling events", || {
        view(&addr, &token, "a")["last_seq"].as_u64().unwrap() > moving + 5
    });
    // Resume lifts the halt of one strategy.
    let reply = post(&addr, "/api/strategies/a/resume", &token, "");
    assert_eq!(reply.status, 202, "{}", reply.body);
    assert!(has_event(&addr, &token, "a", "resume"));
    assert!(
        !has_event(&addr, &token, "b", "resume"),
        "only a was resumed"
    );
    terminate(host);
}

#[test]
fn metrics_parse_as_prometheus_text_and_a_trap_moves_the_restarts_counter() {
    use prometheus_parse::{Scrape, Value as Sample};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = fleet_file(
        dir.path(),
        &[
            ("calm", "momentum", "config = { lookback = 5 }"),
            (
                "trap",
                "faulty",
                "config = { fault = \"panic\", at_seq = [30] }",
            ),
        ],
    );
    let (host, addr) = start(&mut serve(&file, &data));
    let scrape = || {
        let reply = request(&addr, "GET", "/metrics", None, b"");
        assert_eq!(reply.status, 200);
        assert!(reply.headers.contains("text/plain"), "{}", reply.headers);
        Scrape::parse(reply.body.lines().map(|l| Ok(l.to_string()))).unwrap()
    };
    let restarts = |scrape: &Scrape, name: &str| {
        scrape
            .samples
            .iter()
            .find(|s| {
                s.metric == "polybot_strategy_restarts_total"
                    && s.labels.get("strategy") == Some(name)
            })
            .map(|s| match s.value {
                Sample::Counter(v) => v,
                ref other => panic!("restarts is not a counter: {other:?}"),
            })
    };
    let first = scrape();
    assert_eq!(restarts(&first, "calm"), Some(0.0));

    eventually(BOUND, "trap's restarts counter moves", || {
        restarts(&scrape(), "trap").unwrap_or(0.0) >= 1.0
    });
    let last = scrape();
    assert_eq!(
        restarts(&last, "calm"),
        Some(0.0),
        "the other one did not restart"
    );
    let kind = |metric: &str| -> Vec<&'static str> {
        last.samples
            .iter()
            .filter(|s| s.metric == metric)
            .map(|s| match s.value {
                Sample::Counter(_) => "counter",
                Sample::Gauge(_) => "gauge",
                _ => "other",
            })
            .collect()
    };
    for (family, expected, per_strategy) in [
        ("polybot_events_total", "counter", true),
        ("polybot_strategy_restarts_total", "counter", true),
        ("polybot_strategy_stuck_restarts_total", "counter", true),
        ("polybot_quarantined_events_total", "counter", true),
        ("polybot_orders_total", "counter", true),
        ("polybot_fills_total", "counter", true),
        ("polybot_pnl", "gauge", true),
        ("polybot_checkpoint_age_seconds", "gauge", true),
        ("polybot_journal_uncheckpointed_events", "gauge", true),
        ("polybot_queue_depth", "gauge", true),
        ("polybot_last_event_age_seconds", "gauge", true),
        ("polybot_divergences_total", "counter", true),
        ("polybot_rate_limit_waits_total", "counter", true),
        ("polybot_venue_feed_staleness_seconds", "gauge", true),
        ("polybot_open_positions", "gauge", true),
        ("polybot_instance_memory_bytes", "gauge", true),
        ("polybot_store_outage", "gauge", false),
        ("polybot_process_resident_memory_bytes", "gauge", false),
        ("polybot_strategies", "gauge", false),
        ("polybot_uptime_seconds", "gauge", false),
    ] {
        let kinds = kind(family);
        let want = if per_strategy { 2 } else { 1 };
        assert_eq!(kinds.len(), want, "{family}: {kinds:?}");
        assert!(kinds.iter().all(|k| *k == expected), "{family}: {kinds:?}");
        assert!(last.docs.contains_key(family), "{family} has no HELP");
    }
    // One state gauge per state, exactly one of them 1 per strategy.
    for name in ["calm", "trap"] {
        let states: Vec<(String, f64)> = last
            .samples
            .iter()
            .filter(|s| {
                s.metric == "polybot_strategy_state" && s.labels.get("strategy") == Some(name)
            })
            .map(|s| match s.value {
                Sample::Gauge(v) => (s.labels.get("state").unwrap().to_string(), v),
                ref other => panic!("state is not a gauge: {other:?}"),
            })
            .collect();
        assert_eq!(states.len(), 8, "{states:?}");
        assert_eq!(states.iter().filter(|(_, v)| *v == 1.0).count(), 1);
    }
    let store_outage = last
        .samples
        .iter()
        .find(|s| s.metric == "polybot_store_outage")
        .unwrap();
    assert_eq!(store_outage.value, Sample::Gauge(0.0));
    for name in ["calm", "trap"] {
        let of = |metric: &str| -> Vec<&prometheus_parse::Sample> {
            last.samples
                .iter()
                .filter(|s| s.metric == metric && s.labels.get("strategy") == Some(name))
                .collect()
        };
        // Intents: one gauge per status.
        let intents = of("polybot_intents");
        assert_eq!(intents.len(), 8, "{name}: {intents:?}");
        assert!(
            intents
                .iter()
                .all(|s| matches!(s.value, Sample::Gauge(_)) && s.labels.get("status").is_some())
        );
        // Breakers: per endpoint group, one gauge per state, exactly one of them 1.
        let breakers = of("polybot_breaker_state");
        assert_eq!(breakers.len(), 9, "{name}: {breakers:?}");
        for group in ["orders", "cancels", "market-data"] {
            let on: Vec<_> = breakers
                .iter()
                .filter(|s| s.labels.get("group") == Some(group))
                .map(|s| match s.value {
                    Sample::Gauge(v) => v,
                    ref other => panic!("breaker state is not a gauge: {other:?}"),
                })
                .collect();
            assert_eq!(on.len(), 3, "{name} {group}");
            assert_eq!(
                on.iter().filter(|v| **v == 1.0).count(),
                1,
                "{name} {group}"
            );
        }
        // The latency histogram: real buckets, cumulative, up to +Inf.
        let handle = of("polybot_event_handle_seconds");
        assert_eq!(handle.len(), 1, "{name}: {handle:?}");
        let Sample::Histogram(buckets) = &handle[0].value else {
            panic!("event latency is not a histogram: {:?}", handle[0].value)
        };
        assert!(buckets.len() >= 10, "{buckets:?}");
        assert!(buckets.windows(2).all(|w| w[0].count <= w[1].count));
        assert!(buckets.last().unwrap().less_than.is_infinite());
        assert!(
            buckets.last().unwrap().count >= 1.0,
            "{name} handled events: {buckets:?}"
        );
    }
    assert!(last.docs.contains_key("polybot_event_handle_seconds"));
    // The instance's memory is the real figure, published with the counters.
    eventually(BOUND, "calm's instance memory is published", || {
        scrape().samples.iter().any(|s| {
            s.metric == "polybot_instance_memory_bytes"
                && s.labels.get("strategy") == Some("calm")
                && matches!(s.value, Sample::Gauge(v) if v >= 65536.0)
        })
    });
    terminate(host);
}

#[test]
fn a_non_loopback_address_without_a_token_is_refused_and_accepted_with_one() {
    let dir = tempfile::tempdir().unwrap();
    let file = fleet_file(dir.path(), &[("a", "momentum", "")]);

    let data = dir.path().join("refused");
    let output = serve(&file, &data)
        .args(["--http", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].contains("[http] addr") && lines[0].contains("POLYBOT_API_TOKEN"),
        "{stderr}"
    );
    assert!(
        !data.join("polybot.db").exists() && !data.join("api-token").exists(),
        "nothing written"
    );

    let output = serve(&file, &data)
        .args(["--http", "not-an-address"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("not-an-address"));

    // With an explicit token it serves, and only that token opens the API.
    let token = "an-operator-chosen-token-0123456789";
    let data = dir.path().join("open");
    let (host, addr) = start(
        serve(&file, &data)
            .args(["--http", "0.0.0.0:0"])
            .env("POLYBOT_API_TOKEN", token),
    );
    let port = addr.rsplit(':').next().unwrap();
    let local = format!("127.0.0.1:{port}");
    assert_eq!(get(&local, "/api/strategies", token).status, 200);
    get(
        &local,
        "/api/strategies",
        "an-operator-chosen-token-012345678",
    )
    .assert_error(401);
    assert!(
        !data.join("api-token").exists(),
        "no token file with an explicit token"
    );
    terminate(host);
}

#[test]
fn the_control_command_is_a_client_of_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = fleet_file(dir.path(), &[("a", "momentum", ""), ("b", "momentum", "")]);
    let (host, addr) = start(&mut serve(&file, &data));
    let token = std::fs::read_to_string(data.join("api-token"))
        .unwrap()
        .trim()
        .to_string();
    let control = |args: &[&str]| {
        let mut command = polybot_tests::host_command!("warn");
        command.arg("control").args(args).args([
            "--http",
            &addr,
            "--data-dir",
            data.to_str().unwrap(),
        ]);
        command.output().unwrap()
    };
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).to_string();

    let list = control(&["list"]);
    assert!(list.status.success(), "{}", text(&list.stderr));
    let out = text(&list.stdout);
    assert!(out.contains("a ") && out.contains("b "), "{out}");
    let json = control(&["list", "--json"]);
    let value: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(value["strategies"].as_array().unwrap().len(), 2);

    let pause = control(&["pause", "--strategy", "a"]);
    assert!(pause.status.success(), "{}", text(&pause.stderr));
    assert!(text(&pause.stdout).contains("pause requested for a"));
    eventually(BOUND, "a paused", || {
        view(&addr, &token, "a")["state"] == "paused"
    });
    let resume = control(&["resume", "--strategy", "a"]);
    assert!(resume.status.success(), "{}", text(&resume.stderr));
    eventually(BOUND, "a running", || {
        view(&addr, &token, "a")["state"] == "running"
    });

    // An unknown strategy is bad input: one line, exit 2.
    let unknown = control(&["pause", "--strategy", "nope"]);
    assert_eq!(unknown.status.code(), Some(2));
    let err = text(&unknown.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("nope") && err.contains("not found"), "{err}");

    // A wrong token: exit 2, and the token is not printed.
    let mut command = polybot_tests::host_command!("warn");
    let wrong = command
        .args(["control", "list", "--http", &addr])
        .env("POLYBOT_API_TOKEN", "a-wrong-token-0123456789")
        .output()
        .unwrap();
    assert_eq!(wrong.status.code(), Some(2));
    let err = text(&wrong.stderr);
    assert!(
        err.contains("401") && !err.contains("a-wrong-token"),
        "{err}"
    );

    // No host there: exit 1.
    let mut command = polybot_tests::host_command!("warn");
    let gone = command
        .args(["control", "list", "--http", "127.0.0.1:9"])
        .args(["--data-dir", data.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(gone.status.code(), Some(1), "{}", text(&gone.stderr));
    assert!(text(&gone.stderr).contains("cannot reach the API"));
    terminate(host);
}
