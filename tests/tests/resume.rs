//! Resume cost, end to end with the real binary: a killed run resumes from
//! its newest host state and reads only the journal after it; catching up is
//! never paced; a data directory without usable host states still resumes,
//! from seq 1, and says why.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use polybot_tests::{LoggingHost, guest};

fn host(log: &str) -> Command {
    polybot_tests::host_command!(log)
}

fn run_args(data: &Path, events: u64, speed: &str) -> Vec<String> {
    let momentum = guest("momentum");
    [
        "run",
        "--strategy",
        momentum.to_str().unwrap(),
        "--speed",
        speed,
        "--events",
        &events.to_string(),
        "--json",
        "--data-dir",
        data.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Waits for `child` to exit, killing it after `limit` (a hang is a failure,
/// not a stuck suite).
fn finish(mut child: Child, limit: Duration) -> (std::process::ExitStatus, String) {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stdout = String::new();
            std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
            return (status, stdout);
        }
        if Instant::now() >= deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("the host did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs to the event limit and returns the JSON report.
fn run(data: &Path, events: u64, speed: &str, limit: Duration) -> serde_json::Value {
    let child = host("warn")
        .args(run_args(data, events, speed))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (status, stdout) = finish(child, limit);
    assert!(status.success(), "exit {status}");
    serde_json::from_str::<serde_json::Value>(&stdout).unwrap()["report"].clone()
}

fn sqlite(data: &Path, sql: &str) -> String {
    let out = Command::new("sqlite3")
        .arg(data.join("polybot.db"))
        .arg(sql)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn journal_end(data: &Path) -> u64 {
    sqlite(data, "SELECT MAX(seq) FROM journal")
        .parse()
        .unwrap()
}

#[test]
fn a_killed_run_resumes_reading_only_the_journal_after_its_host_state() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let mut running = LoggingHost::start_running(
        host("info,polybot_host::runner=debug")
            .args(run_args(data, 60_000, "max"))
            .stdout(Stdio::null()),
    );
    // Kill it once it has saved a host state past seq 20,000.
    loop {
        let line = running.wait_for("host state saved");
        let seq: u64 = line
            .split("seq=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no seq in `{line}`"));
        if seq >= 20_000 {
            break;
        }
    }
    running.child.kill().unwrap(); // SIGKILL
    running.child.wait().unwrap();
    running.drain_log();

    let end = journal_end(data);
    assert!(end >= 19_000, "journal ends at {end}");
    let report = run(data, end + 10, "max", Duration::from_secs(120));
    assert_eq!(report["stop"], "event-limit");
    assert_eq!(report["resumed_at_seq"], end);
    assert_eq!(report["last_seq"], end + 10);
    let catch_up = &report["catch_up"];
    let entries = catch_up["entries"].as_u64().unwrap();
    let from = catch_up["from_seq"].as_u64().unwrap();
    eprintln!("journal of {end}: caught up from host state {from}, reading {entries} entries");
    assert_eq!(catch_up["to_seq"], end);
    assert_eq!(
        entries,
        end - from,
        "exactly the entries after the host state"
    );
    assert!(
        entries < 2_000,
        "read {entries} journal entries to resume a journal of {end}"
    );
}

#[test]
fn catching_up_is_never_paced_and_needs_no_host_state() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    run(data, 3_000, "max", Duration::from_secs(120));
    // (The event limit is checked before every event: the run ends exactly at it.)
    let end = journal_end(data);
    // A data directory from before host states: the venue is driven from seq 1.
    sqlite(data, "DELETE FROM host_states");
    let first_ms: u64 = sqlite(data, "SELECT MIN(event_time_ms) FROM journal")
        .parse()
        .unwrap();
    let last_ms: u64 = sqlite(data, "SELECT MAX(event_time_ms) FROM journal")
        .parse()
        .unwrap();
    let span_ms = last_ms - first_ms;

    // At real-time speed, a paced catch-up would take the journal's event
    // time (ten minutes here); the limit fails such a run long before that.
    let report = run(data, end + 5, "1", Duration::from_secs(120));
    let last = report["last_seq"].as_u64().unwrap();
    assert!(last >= end + 5);
    let catch_up = &report["catch_up"];
    assert_eq!(catch_up["from_seq"], 0);
    assert_eq!(catch_up["entries"], end);
    let wall_ms = catch_up["wall_ms"].as_u64().unwrap();
    assert!(
        wall_ms * 10 < span_ms,
        "catching up {span_ms} ms of event time took {wall_ms} ms at speed 1"
    );
    // The run that caught up from seq 1 saved a host state again (at a tick
    // boundary: a run that stops mid-tick at its event limit saves none there).
    let newest: u64 = sqlite(data, "SELECT MAX(seq) FROM host_states")
        .parse()
        .unwrap();
    assert!(
        newest > 0 && newest <= last,
        "newest host state at {newest}"
    );
}

#[test]
fn a_corrupt_host_state_is_passed_over_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    run(data, 3_500, "max", Duration::from_secs(120));
    let end = journal_end(data);
    let kept = sqlite(data, "SELECT COUNT(*), MAX(seq) FROM host_states");
    assert_eq!(
        kept,
        format!("3|{end}"),
        "the newest three are kept, the last at the end"
    );
    let older: u64 = sqlite(
        data,
        &format!("SELECT MAX(seq) FROM host_states WHERE seq < {end}"),
    )
    .parse()
    .unwrap();
    sqlite(
        data,
        &format!("UPDATE host_states SET state = X'00' WHERE seq = {end}"),
    );

    let report = run(data, end + 10, "max", Duration::from_secs(120));
    assert!(report["last_seq"].as_u64().unwrap() >= end + 10);
    assert_eq!(report["catch_up"]["from_seq"], older);
    assert_eq!(report["catch_up"]["entries"], end - older);
    let rejected = sqlite(
        data,
        "SELECT message FROM system_events WHERE event_type = 'host-state-rejected'",
    );
    assert!(
        rejected.contains(&format!("seq {end}")) && rejected.contains("checksum"),
        "{rejected}"
    );
}
