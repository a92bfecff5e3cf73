//! The `polybot-host` command line as a user meets it: a real run on the
//! simulated market, and one clear error line (exit code 2, nothing written)
//! for each kind of bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use polybot_tests::{LoggingHost, guest};

fn host() -> Command {
    polybot_tests::host_command!("warn")
}

fn run_in(dir: &Path, args: &[&str]) -> Output {
    host()
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run polybot-host")
}

/// Runs the `faulty` fixture at full speed with `config` as its TOML config.
fn run_faulty(dir: &Path, config: &[u8], events: &str, extra: &[&str]) -> Output {
    let config = write(dir, "faulty.toml", config);
    let faulty = guest("faulty");
    let mut args = vec![
        "run",
        "--strategy",
        faulty.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "--speed",
        "max",
        "--events",
        events,
    ];
    args.extend_from_slice(extra);
    run_in(dir, &args)
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The error line: exactly one line starting with `error:`.
fn error_line(output: &Output) -> String {
    let text = stderr(output);
    let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "expected one error line, got:\n{text}");
    errors[0].to_string()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn assert_bad_input(dir: &Path, args: &[&str], expected: &[&str]) {
    let output = run_in(dir, args);
    assert_eq!(output.status.code(), Some(2), "stderr: {}", stderr(&output));
    let line = error_line(&output);
    for needle in expected {
        assert!(line.contains(needle), "`{needle}` not in: {line}");
    }
    assert!(
        !dir.join("data").exists(),
        "bad input left a data directory behind"
    );
}

/// `run`s `strategy` with a config file named `name` holding `toml`, and
/// checks it is refused as bad input whose error line holds `expected`.
fn assert_config_refused(strategy: &str, name: &str, toml: &[u8], expected: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), name, toml);
    let module = guest(strategy);
    assert_bad_input(
        dir.path(),
        &[
            "run",
            "--strategy",
            module.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ],
        expected,
    );
}

#[test]
fn momentum_trades_on_the_simulated_market() {
    let dir = tempfile::tempdir().unwrap();
    let momentum = guest("momentum");
    let output = run_in(
        dir.path(),
        &[
            "run",
            "--strategy",
            momentum.to_str().unwrap(),
            "--speed",
            "max",
            "--events",
            "20000",
            "--json",
        ],
    );
    assert!(output.status.success(), "stderr: {}", stderr(&output));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON report");
    let report = &json["report"];
    assert_eq!(report["events"], 20000);
    assert_eq!(report["state"], "stopped");
    assert_eq!(report["stop"], "event-limit");
    assert!(report["orders"].as_u64().unwrap() > 10, "{report}");
    assert!(report["fills"].as_u64().unwrap() > 10, "{report}");
    let pnl = report["portfolio"]["realized_pnl"].as_f64().unwrap();
    assert!(pnl.is_finite() && pnl != 0.0, "{report}");
    // The compiled code was cached for the next start.
    let cache = dir.path().join("data/cache");
    assert_eq!(std::fs::read_dir(cache).unwrap().count(), 1);
}

#[test]
fn a_second_start_resumes_from_the_store_with_cached_code_and_the_same_seed_repeats() {
    let dir = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    let momentum = guest("momentum");
    let args = [
        "run",
        "--strategy",
        momentum.to_str().unwrap(),
        "--speed",
        "max",
        "--events",
        "3000",
        "--json",
    ];
    let report = |o: &Output| {
        assert!(o.status.success(), "stderr: {}", stderr(o));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["report"].clone()
    };
    let first = report(&run_in(dir.path(), &args));
    let elsewhere = report(&run_in(other.path(), &args));
    // Same seed, same market, same strategy: the same trading, whatever the data directory.
    for key in ["last_seq", "orders", "fills", "portfolio"] {
        assert_eq!(first[key], elsewhere[key], "{key}");
    }
    // Started again on the same data: resumes at the end of its journal, with cached code.
    let again = host()
        .current_dir(dir.path())
        .env("POLYBOT_LOG", "info")
        .args(args)
        .output()
        .unwrap();
    assert!(stderr(&again).contains("cached=true"), "{}", stderr(&again));
    let again = report(&again);
    assert_eq!(again["resumed_at_seq"], first["last_seq"]);
    assert_eq!(again["events"], 0, "nothing left to do");
}

#[test]
fn a_faulty_strategy_is_restarted_and_the_run_completes() {
    let dir = tempfile::tempdir().unwrap();
    let output = run_faulty(
        dir.path(),
        b"[strategy]\nfault = \"panic\"\nafter_calls = 500\n[checkpoint]\nevery_events = 100\n",
        "3000",
        &["--json"],
    );
    assert!(output.status.success(), "stderr: {}", stderr(&output));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(
        json["report"]["cell"]["restarts"].as_u64().unwrap() >= 5,
        "{json}"
    );
    assert_eq!(json["report"]["cell"]["quarantined"], 0);
}

#[test]
fn a_strategy_that_keeps_faulting_ends_fatal_with_exit_code_1() {
    let dir = tempfile::tempdir().unwrap();
    let output = run_faulty(
        dir.path(),
        b"[strategy]\nfault = \"panic\"\nafter_calls = 1\n[supervisor]\nmax_restarts = 3\nbackoff_initial = \"1ms\"\nbackoff_max = \"2ms\"\n",
        "100",
        &[],
    );
    assert_eq!(output.status.code(), Some(1), "stderr: {}", stderr(&output));
    let line = error_line(&output);
    assert!(
        line.contains("fatal") && line.contains("4 restarts"),
        "{line}"
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("state        fatal"));
}

#[test]
fn a_file_that_is_not_wasm_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "notes.wasm", b"this is not a module");
    assert_bad_input(
        dir.path(),
        &["run", "--strategy", path.to_str().unwrap()],
        &["notes.wasm", "not a WebAssembly file"],
    );
}

#[test]
fn a_core_module_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "core.wasm", b"\0asm\x01\0\0\0");
    assert_bad_input(
        dir.path(),
        &["run", "--strategy", path.to_str().unwrap()],
        &["core.wasm", "core WebAssembly module", "wasm32-wasip2"],
    );
}

#[test]
fn a_component_without_the_strategy_exports_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // The smallest valid component: no imports, no exports.
    let path = write(dir.path(), "empty.wasm", b"\0asm\x0d\0\x01\0");
    assert_bad_input(
        dir.path(),
        &["run", "--strategy", path.to_str().unwrap()],
        &[
            "empty.wasm",
            "does not implement the polybot:strategy world",
        ],
    );
}

#[test]
fn a_truncated_component_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(guest("momentum")).unwrap();
    let path = write(dir.path(), "cut.wasm", &bytes[..bytes.len() / 2]);
    assert_bad_input(
        dir.path(),
        &["run", "--strategy", path.to_str().unwrap()],
        &["cut.wasm", "not a valid WebAssembly component"],
    );
}

#[test]
fn a_missing_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    assert_bad_input(
        dir.path(),
        &["run", "--strategy", "nowhere.wasm"],
        &["nowhere.wasm", "cannot read"],
    );
}

#[test]
fn init_refusing_its_config_is_reported() {
    assert_config_refused(
        "faulty",
        "refuse.toml",
        b"[strategy]\nfail_init = \"threshold too high\"\n",
        &[
            "faulty.wasm",
            "init refused the configuration",
            "threshold too high",
        ],
    );
}

#[test]
fn momentum_refuses_bad_parameters() {
    assert_config_refused(
        "momentum",
        "m.toml",
        b"[strategy]\nlookback = 0\n",
        &["init refused", "lookback must be at least 1"],
    );
}

#[test]
fn a_config_that_does_not_parse_is_named() {
    assert_config_refused(
        "momentum",
        "bad.toml",
        b"[supervisor]\nmax_restarts = \"many\"\n",
        &["bad.toml", "max_restarts"],
    );
    assert_config_refused(
        "momentum",
        "typo.toml",
        b"[sandbox]\nmemory = 5\n",
        &["typo.toml", "memory"],
    );
}

#[test]
fn inspect_shows_the_contract() {
    let momentum = guest("momentum");
    let output = host()
        .args(["inspect", momentum.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let text = String::from_utf8_lossy(&output.stdout);
    for needle in [
        "on-event",
        "snapshot",
        "restore",
        "polybot:strategy/types",
        "momentum 0.1.0",
        "satisfies polybot:strategy",
    ] {
        assert!(text.contains(needle), "`{needle}` not in:\n{text}");
    }
    let dir = tempfile::tempdir().unwrap();
    let empty = write(dir.path(), "empty.wasm", b"\0asm\x0d\0\x01\0");
    let output = host()
        .args(["inspect", empty.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(error_line(&output).contains("does not implement"));
}

#[test]
fn ctrl_c_and_sigterm_stop_cleanly_with_a_summary() {
    for signal in ["-INT", "-TERM"] {
        let dir = tempfile::tempdir().unwrap();
        let momentum = guest("momentum");
        // Wait for the host to say it is running, then signal it.
        let host = LoggingHost::start_running(
            polybot_tests::host_command!("info")
                .current_dir(dir.path())
                .args([
                    "run",
                    "--strategy",
                    momentum.to_str().unwrap(),
                    "--speed",
                    "1",
                ])
                .stdout(Stdio::piped()),
        );
        let status = Command::new("kill")
            .args([signal, &host.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let output = host.child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "{signal}: exit {:?}",
            output.status
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            stdout.contains("stopped on request") && stdout.contains("state        stopped"),
            "{signal}: {stdout}"
        );
    }
}

#[test]
fn help_explains_the_commands() {
    let output = host().arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("run") && text.contains("inspect"));
    let output = host().args(["run", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--strategy",
        "--config",
        "--market",
        "--seed",
        "--speed",
        "--events",
        "--duration",
        "--data-dir",
    ] {
        assert!(text.contains(flag), "{flag} missing from run --help");
    }
}

#[test]
fn watch_hot_swaps_a_changed_strategy_file_while_running() {
    let dir = tempfile::tempdir().unwrap();
    let strategy = dir.path().join("strategy.wasm");
    let original = std::fs::read(guest("momentum")).unwrap();
    std::fs::write(&strategy, &original).unwrap();
    let mut host = LoggingHost::start_running(
        polybot_tests::host_command!("info")
            .current_dir(dir.path())
            .args([
                "run",
                "--strategy",
                strategy.to_str().unwrap(),
                "--speed",
                "20",
                "--watch",
            ])
            .stdout(Stdio::piped()),
    );
    // A new build of the module: the same code with a custom section added,
    // so its digest differs.
    let mut changed = original.clone();
    let name = b"polybot-test";
    changed.extend_from_slice(&[0x00, (1 + name.len() + 2) as u8, name.len() as u8]);
    changed.extend_from_slice(name);
    changed.extend_from_slice(b"v2");
    std::fs::write(&strategy, &changed).unwrap();
    let swapped = host.wait_for("hot swap:");
    assert!(swapped.contains("replaced momentum"), "{swapped}");
    Command::new("kill")
        .args(["-INT", &host.child.id().to_string()])
        .status()
        .unwrap();
    let output = host.child.wait_with_output().unwrap();
    assert!(output.status.success());
    let status = polybot_tests::host_command!("warn")
        .current_dir(dir.path())
        .args(["status", "--json"])
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let events = json["system_events"].as_array().unwrap();
    assert!(
        events.iter().any(|e| e["event_type"] == "hot-swap"),
        "{json}"
    );
    assert_eq!(json["strategies"][0]["state"], "stopped");
}

#[test]
fn a_module_whose_describe_loops_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let stuck = guest("stuck_describe");
    assert_bad_input(
        dir.path(),
        &[
            "run",
            "--strategy",
            stuck.to_str().unwrap(),
            "--events",
            "5",
        ],
        &["stuck_describe.wasm", "describe failed"],
    );
}

#[test]
fn every_refused_config_value_names_the_file_and_the_key() {
    let cases: &[(&str, &[&str])] = &[
        ("[sim]\nmarkets = []\n", &["[sim] markets", "empty"]),
        (
            "[sim]\nmarkets = [\"a\", \"b\", \"a\"]\n",
            &["[sim] markets", "`a` is listed twice"],
        ),
        ("[sim]\nmarkets = [\"\"]\n", &["[sim] markets"]),
        ("[sim]\nvolatility = nan\n", &["[sim] volatility"]),
        (
            "[sim]\ntrade_probability = 1.5\n",
            &["[sim] trade_probability"],
        ),
        ("[sim]\ntick_ms = 0\n", &["[sim] tick_ms"]),
        ("[sim]\ndepth = 0\n", &["[sim] depth"]),
        (
            "[sandbox]\nmax_actions_per_event = 0\n",
            &["[sandbox] max_actions_per_event"],
        ),
        (
            "[sandbox]\ncall_deadline = \"1ms\"\n",
            &["[sandbox] call_deadline", "epoch tick"],
        ),
        (
            "[sandbox]\ncall_deadline = \"2h\"\n",
            &["[sandbox] call_deadline"],
        ),
        (
            "[sandbox]\nmemory_bytes = 1000\n",
            &["[sandbox] memory_bytes"],
        ),
        (
            "[sandbox]\nmax_instances = 0\n",
            &["[sandbox] max_instances"],
        ),
        (
            "[supervisor]\nrestart_window = \"0s\"\n",
            &["[supervisor] restart_window"],
        ),
        (
            "[supervisor]\nbackoff_initial = \"0s\"\n",
            &["[supervisor] backoff_initial"],
        ),
        (
            "[supervisor]\nbackoff_initial = \"10s\"\nbackoff_max = \"1s\"\n",
            &["[supervisor] backoff_max"],
        ),
        (
            "[supervisor]\nquarantine_after = 0\n",
            &["[supervisor] quarantine_after"],
        ),
        (
            "[checkpoint]\nevery_event_time = \"0s\"\n",
            &["[checkpoint] every_event_time"],
        ),
        (
            "[checkpoint]\nevery_events = 0\n",
            &["[checkpoint] every_events"],
        ),
        ("[paper]\nfee_bps = -5.0\n", &["[paper] fee_bps"]),
        (
            "[paper]\nstarting_cash = -1.0\n",
            &["[paper] starting_cash"],
        ),
        ("[paper]\nstarting_cash = inf\n", &["[paper] starting_cash"]),
        ("[lease]\nttl = \"10ms\"\n", &["[lease] ttl"]),
        ("[sim]\ntick_ms = -3\n", &["tick_ms"]),
    ];
    for (toml, expected) in cases {
        let mut needles = vec!["values.toml"];
        needles.extend_from_slice(expected);
        assert_config_refused("momentum", "values.toml", toml.as_bytes(), &needles);
    }
}

#[test]
fn duplicate_or_empty_market_flags_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let momentum = guest("momentum");
    let m = momentum.to_str().unwrap();
    assert_bad_input(
        dir.path(),
        &["run", "--strategy", m, "--market", "x", "--market", "x"],
        &["--market", "`x` is listed twice"],
    );
}

#[test]
fn store_credentials_never_appear_in_messages_or_help() {
    let dir = tempfile::tempdir().unwrap();
    let momentum = guest("momentum");
    let m = momentum.to_str().unwrap();
    for url in [
        "mysql://bot:hunter2@db.example/polybot",
        "postgres://bot@127.0.0.1:1/polybot?password=hunter2",
        "postgres://bot:hunter2@127.0.0.1:1/polybot",
    ] {
        let output = run_in(dir.path(), &["run", "--strategy", m, "--store", url]);
        assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
        let text = stderr(&output);
        assert!(!text.contains("hunter2"), "password shown: {text}");
        assert!(error_line(&output).contains("***"), "{text}");
        // The same through the environment, for a read-only command.
        let output = host()
            .current_dir(dir.path())
            .env("DATABASE_URL", url)
            .arg("status")
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2));
        assert!(!stderr(&output).contains("hunter2"), "{}", stderr(&output));
    }
    let help = host()
        .env("DATABASE_URL", "postgres://bot:hunter2@db/polybot")
        .args(["run", "--help"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("DATABASE_URL"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
    assert!(!dir.path().join("data").exists());
}

#[test]
fn printing_into_a_closed_pipe_ends_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let momentum = guest("momentum");
    let done = run_in(
        dir.path(),
        &[
            "run",
            "--strategy",
            momentum.to_str().unwrap(),
            "--speed",
            "max",
            "--events",
            "200",
        ],
    );
    assert!(done.status.success(), "{}", stderr(&done));
    for args in [
        &["status", "--json"][..],
        &["status"][..],
        &["checkpoints", "list"][..],
        &[
            "run",
            "--strategy",
            momentum.to_str().unwrap(),
            "--speed",
            "max",
            "--events",
            "300",
            "--json",
        ][..],
    ] {
        // A pipe whose reader is already gone: every write fails with EPIPE.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let output = host()
            .current_dir(dir.path())
            .args(args)
            .stdout(writer)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
            .wait_with_output()
            .unwrap();
        let text = stderr(&output);
        assert!(!text.contains("panicked"), "{args:?}: {text}");
        assert!(text.trim().is_empty(), "{args:?}: {text}");
        assert_eq!(output.status.code(), Some(0), "{args:?}: {text}");
    }
}
