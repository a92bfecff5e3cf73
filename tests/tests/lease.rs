//! One host per strategy: a second `run` on the same data directory, or on
//! the same PostgreSQL database from another data directory, is refused with
//! one line naming the holder; a host killed with `kill -9` is taken over
//! without manual cleanup; a host whose lease is taken over stops.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use polybot_tests::{LoggingHost, TempDatabase, guest};

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `run momentum` in `dir` with extra arguments (warn logging, so stderr holds
/// only problems).
fn run(dir: &Path, extra: &[&str]) -> Output {
    let momentum = guest("momentum");
    polybot_tests::host_command!("warn")
        .current_dir(dir)
        .args(["run", "--strategy", momentum.to_str().unwrap()])
        .args(extra)
        .output()
        .expect("run polybot-host")
}

/// A host running momentum in real time (until stopped) from `dir`.
fn start_holder(dir: &Path, extra: &[&str]) -> LoggingHost {
    let momentum = guest("momentum");
    LoggingHost::start_running(
        polybot_tests::host_command!("info")
            .current_dir(dir)
            .args([
                "run",
                "--strategy",
                momentum.to_str().unwrap(),
                "--speed",
                "1",
            ])
            .args(extra)
            .stdout(Stdio::null()),
    )
}

fn status_json(dir: &Path, extra: &[&str]) -> serde_json::Value {
    let output = polybot_tests::host_command!("warn")
        .current_dir(dir)
        .args(["status", "--json"])
        .args(extra)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Checks `output` is the refusal of a second host: exit 2, one line naming
/// the holder's pid, nothing on stdout.
fn assert_refused_naming(output: &Output, holder_pid: u32, holder_dir: &Path) {
    let text = stderr(output);
    assert_eq!(output.status.code(), Some(2), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line: {text}");
    let line = lines[0];
    assert!(line.starts_with("error: "), "{line}");
    assert!(line.contains("already running"), "{line}");
    assert!(line.contains(&format!("pid {holder_pid}")), "{line}");
    assert!(line.contains(&holder_dir.display().to_string()), "{line}");
    assert!(line.contains(" since "), "{line}");
    assert!(output.stdout.is_empty());
}

fn kill(signal: &str, pid: u32) {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn journal_length(status: &serde_json::Value) -> u64 {
    status["strategies"][0]["last_seq"].as_u64().unwrap()
}

#[test]
fn a_second_host_on_the_same_data_dir_is_refused_naming_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut first = start_holder(dir.path(), &[]);
    let pid = first.child.id();
    let events_before = status_json(dir.path(), &[])["system_events"]
        .as_array()
        .unwrap()
        .len();

    let second = run(dir.path(), &["--speed", "max", "--events", "10"]);
    assert_refused_naming(&second, pid, &std::path::absolute(&data).unwrap());

    // The second host wrote nothing: no system event of its own, and status
    // names the first as the holder.
    let status = status_json(dir.path(), &[]);
    assert_eq!(
        status["system_events"].as_array().unwrap().len(),
        events_before,
        "{status}"
    );
    let lease = &status["leases"][0];
    assert_eq!(lease["strategy"], "momentum");
    assert_eq!(lease["holder"]["pid"], pid);
    assert_eq!(lease["held"], true);

    kill("-INT", pid);
    first.drain_log();
    assert!(first.child.wait().unwrap().success());
    // Stopped cleanly: the lease is free, the next start takes it at once.
    let third = run(dir.path(), &["--speed", "max", "--events", "10"]);
    assert!(third.status.success(), "{}", stderr(&third));
}

#[test]
fn after_kill_9_a_restart_on_the_same_data_dir_takes_over_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = start_holder(dir.path(), &[]);
    let pid = first.child.id();
    kill("-KILL", pid);
    first.child.wait().unwrap();

    // The lease row still names the dead process and has not expired; the
    // lock file shows it dead, so the new host takes over without waiting.
    let held = status_json(dir.path(), &[]);
    assert_eq!(held["leases"][0]["holder"]["pid"], pid);
    assert_eq!(held["leases"][0]["held"], true);
    let resumed_from = journal_length(&held);
    let again = run(
        dir.path(),
        &["--speed", "max", "--events", "5000", "--json"],
    );
    assert!(again.status.success(), "{}", stderr(&again));
    let report: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert!(report["report"]["resumed_at_seq"].as_u64().unwrap() >= resumed_from);

    let status = status_json(dir.path(), &[]);
    let lease = &status["leases"][0];
    assert_eq!(lease["token"], 2, "one take-over: {status}");
    assert_ne!(lease["holder"]["pid"], pid);
    assert_eq!(lease["held"], false, "released at the end of the run");
}

#[test]
fn two_data_dirs_on_one_postgres_database_take_turns() {
    let db = TempDatabase::create("lease_pg");
    let url = db.url();
    let one = tempfile::tempdir().unwrap();
    let two = tempfile::tempdir().unwrap();
    std::fs::write(one.path().join("lease.toml"), "[lease]\nttl = \"8s\"\n").unwrap();
    let mut first = start_holder(one.path(), &["--store", &url, "--config", "lease.toml"]);
    let pid = first.child.id();

    let second = run(
        two.path(),
        &["--store", &url, "--speed", "max", "--events", "10"],
    );
    assert_refused_naming(&second, pid, &one.path().join("data"));
    assert!(
        !two.path().join("data").exists(),
        "the refused host created its data directory"
    );

    // kill -9: the lease lapses after its TTL, then the other directory's
    // host takes over without any cleanup.
    kill("-KILL", pid);
    first.child.wait().unwrap();
    let killed_at = Instant::now();
    let early = run(
        two.path(),
        &["--store", &url, "--speed", "max", "--events", "10"],
    );
    // The lease was renewed at most a third of its TTL before the kill, so it
    // holds for at least 5.3 s after it.
    if killed_at.elapsed() < Duration::from_secs(5) {
        assert_eq!(
            early.status.code(),
            Some(2),
            "taken before expiry: {}",
            stderr(&early)
        );
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let attempt = run(
            two.path(),
            &["--store", &url, "--speed", "max", "--events", "10"],
        );
        if attempt.status.success() {
            break;
        }
        assert_eq!(attempt.status.code(), Some(2), "{}", stderr(&attempt));
        assert!(
            Instant::now() < deadline,
            "no take-over within 60 s of kill -9: {}",
            stderr(&attempt)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        killed_at.elapsed() >= Duration::from_secs(5),
        "taken over before the TTL ran out"
    );
    let status = status_json(two.path(), &["--store", &url]);
    assert_eq!(status["leases"][0]["token"], 2, "{status}");
}

#[test]
fn a_host_whose_lease_is_taken_over_stops_with_an_error_and_a_system_event() {
    let db = TempDatabase::create("lease_lost");
    let url = db.url();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("lease.toml"), "[lease]\nttl = \"3s\"\n").unwrap();
    let mut host = start_holder(dir.path(), &["--store", &url, "--config", "lease.toml"]);
    // Another host takes the strategy over behind this one's back.
    db.execute(
        "UPDATE leases SET token = token + 1, holder_host = 'intruder', holder_pid = 1 \
         WHERE strategy = 'momentum'",
    );
    let lost = host.wait_for_within("lost the lease", Duration::from_secs(30));
    assert!(lost.contains("intruder"), "{lost}");
    let rest = host.drain_log();
    let status = host.child.wait().unwrap();
    assert_eq!(status.code(), Some(1), "{rest:?}");
    let error = rest
        .iter()
        .find(|l| l.starts_with("error:"))
        .expect("an error line");
    assert!(
        error.contains("lost the lease of strategy `momentum`"),
        "{error}"
    );

    let status = status_json(dir.path(), &["--store", &url]);
    let events = status["system_events"].as_array().unwrap();
    assert!(
        events.iter().any(|e| e["event_type"] == "lease-lost"),
        "{status}"
    );
    // The intruder still holds it: this host did not release it, and did not
    // record the strategy as stopped over the new holder's records.
    assert_eq!(status["leases"][0]["holder"]["host"], "intruder");
    assert_eq!(status["strategies"][0]["state"], "running", "{status}");
}
