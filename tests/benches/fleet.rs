//! Fleet benchmark, with the real binary: N momentum strategies (100 by
//! default) in one `serve` host on the simulated market (SQLite store).
//! Prints one table:
//!
//! - start-up: process start until the host logs that every strategy runs;
//! - RSS: the host's resident memory with N idle strategies (paced at real
//!   time, so mostly waiting for their next tick), against one strategy, and
//!   the difference per strategy;
//! - resume: after `kill -9`, process start until every strategy runs again
//!   (each caught up with its journal);
//! - throughput: N strategies at `speed = "max"` for a fixed number of
//!   events each; all events handled over the wall time.
//!
//! Run: `cargo bench -p polybot-tests --bench fleet`; `POLYBOT_BENCH_FLEET=20`
//! sets N, `POLYBOT_BENCH_FLEET_EVENTS=2000` the events per strategy.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use polybot_tests::guest;

fn fleet_file(dir: &Path, n: usize, per_strategy: &str) -> PathBuf {
    let momentum = guest("momentum");
    let mut text = String::from("[checkpoint]\nevery_events = 1000\n");
    for i in 0..n {
        text.push_str(&format!(
            "\n[[strategy]]\nname = \"m{i}\"\nmodule = \"{}\"\nseed = {i}\nconfig = {{ lookback = {} }}\n{per_strategy}",
            momentum.display(),
            5 + i % 20
        ));
    }
    let path = dir.join("fleet.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn serve(file: &Path, data: &Path) -> Command {
    polybot_tests::serve_command!(file, data)
}

/// Starts the host and returns it once it logs `fleet running`, with the time that took.
fn start_until_running(command: &mut Command) -> (Child, Duration) {
    let started = Instant::now();
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if line.contains("fleet running") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(600))
        .expect("the fleet did not report running within 10 minutes");
    (child, started.elapsed())
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

fn idle_rss(n: usize, settle: Duration) -> (u64, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let file = fleet_file(dir.path(), n, "speed = 1\n");
    let (mut child, startup) = start_until_running(&mut serve(&file, &dir.path().join("data")));
    std::thread::sleep(settle);
    let rss = rss_kib(child.id());
    child.kill().unwrap();
    child.wait().unwrap();
    (rss, startup)
}

fn main() {
    let n: usize = std::env::var("POLYBOT_BENCH_FLEET")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let events: u64 = std::env::var("POLYBOT_BENCH_FLEET_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let settle = Duration::from_secs(3);

    let (rss_one, _) = idle_rss(1, settle);
    let (rss_n, startup) = idle_rss(n, settle);
    let per = (rss_n.saturating_sub(rss_one)) as f64 / (n.max(2) - 1) as f64 / 1024.0;

    // Resume: a fleet that has journaled for a while, killed, started again.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = fleet_file(dir.path(), n, "speed = 50\n");
    let (mut child, _) = start_until_running(&mut serve(&file, &data));
    std::thread::sleep(Duration::from_secs(5));
    child.kill().unwrap();
    child.wait().unwrap();
    let (mut child, resume) = start_until_running(&mut serve(&file, &data));
    child.kill().unwrap();
    child.wait().unwrap();

    // Throughput: every strategy at full speed for `events` events.
    let dir = tempfile::tempdir().unwrap();
    let file = fleet_file(
        dir.path(),
        n,
        &format!("speed = \"max\"\nevents = {events}\n"),
    );
    let started = Instant::now();
    let output = serve(&file, &dir.path().join("data")).output().unwrap();
    let wall = started.elapsed();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let handled: u64 = report["strategies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["last_seq"].as_u64().unwrap_or(0))
        .sum();

    println!("fleet benchmark: {n} momentum strategies, SQLite, simulated market");
    println!("| measure | value |");
    println!("| --- | --- |");
    println!(
        "| start-up of {n} strategies (process start → all running) | {:.2} s |",
        startup.as_secs_f64()
    );
    println!(
        "| RSS, 1 idle strategy | {:.1} MiB |",
        rss_one as f64 / 1024.0
    );
    println!(
        "| RSS, {n} idle strategies | {:.1} MiB |",
        rss_n as f64 / 1024.0
    );
    println!("| RSS per added strategy | {per:.2} MiB |");
    println!(
        "| resume of {n} strategies after kill -9 (process start → all running) | {:.2} s |",
        resume.as_secs_f64()
    );
    println!(
        "| aggregate throughput, {n} × {events} events at full speed | {:.0} events/s ({handled} events in {:.2} s) |",
        handled as f64 / wall.as_secs_f64(),
        wall.as_secs_f64()
    );
}
