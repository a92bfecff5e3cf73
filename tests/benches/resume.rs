//! Resume benchmark, with the real binary and momentum on the simulated
//! market (SQLite store); prints two tables.
//!
//! - Restart time against journal length: for each length, a run at
//!   `--speed max` is SIGKILLed once it has saved a host state past that
//!   length; then the same command is started again to handle one more
//!   event. Reported: the wall time from that start to its exit (kill → first
//!   new event, process start and store close included), the journal entries
//!   it read to catch the venue up, and its peak RSS.
//! - RSS over a long run: one `--speed max --duration` run, its RSS sampled
//!   at every host state it saves (every 1,000 events); reported at the
//!   start, middle and end, with the peak.
//!
//! Run: `cargo bench -p polybot-tests --bench resume`. Journal lengths and
//! the long run's event time can be set with `POLYBOT_BENCH_LENGTHS=10000,100000`
//! and `POLYBOT_BENCH_DURATION=2d`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use polybot_tests::guest;

fn host(log: &str) -> Command {
    polybot_tests::host_command!(log)
}

fn run_args(data: &Path, extra: &[&str]) -> Vec<String> {
    let momentum = guest("momentum");
    let mut args: Vec<String> = [
        "run",
        "--strategy",
        momentum.to_str().unwrap(),
        "--speed",
        "max",
        "--json",
        "--data-dir",
        data.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// `VmRSS` or `VmHWM` of a live process, in KiB.
fn proc_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The seq in a `host state saved … seq=N …` log line.
fn saved_seq(line: &str) -> Option<u64> {
    if !line.contains("host state saved") {
        return None;
    }
    line.split("seq=")
        .nth(1)?
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// Spawns a run logging every host state it saves.
fn spawn_logging(data: &Path, extra: &[&str]) -> (Child, impl Iterator<Item = String> + use<>) {
    let mut child = host("warn,polybot_host::runner=debug")
        .args(run_args(data, extra))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the host");
    let log = BufReader::new(child.stderr.take().expect("piped stderr"))
        .lines()
        .map_while(Result::ok);
    (child, log)
}

/// A journal of at least `length` events left by a SIGKILL.
fn killed_journal(data: &Path, length: u64) {
    let limit = (length * 2).to_string();
    let (mut child, log) = spawn_logging(data, &["--events", &limit]);
    for line in log {
        if saved_seq(&line).is_some_and(|seq| seq >= length) {
            break;
        }
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
}

struct Resumed {
    wall: Duration,
    journal: u64,
    entries: u64,
    from_seq: u64,
    peak_kib: u64,
}

/// Starts the run again to handle one more event; times it to its exit.
fn resume(data: &Path, journal: u64) -> Resumed {
    let events = (journal + 1).to_string();
    let started = Instant::now();
    let mut child = host("warn")
        .args(run_args(data, &["--events", &events]))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the host");
    let pid = child.id();
    let mut peak_kib = 0;
    let deadline = started + Duration::from_secs(1800);
    let status = loop {
        peak_kib = peak_kib.max(proc_kib(pid, "VmHWM:").unwrap_or(0));
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "resume did not finish");
        std::thread::sleep(Duration::from_millis(2));
    };
    let wall = started.elapsed();
    assert!(status.success(), "resume failed: {status}");
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("JSON report");
    let catch_up = &report["report"]["catch_up"];
    Resumed {
        wall,
        journal,
        entries: catch_up["entries"].as_u64().unwrap_or(0),
        from_seq: catch_up["from_seq"].as_u64().unwrap_or(0),
        peak_kib,
    }
}

fn journal_end(data: &Path) -> u64 {
    let out = Command::new("sqlite3")
        .arg(data.join("polybot.db"))
        .arg("SELECT MAX(seq) FROM journal")
        .output()
        .expect("sqlite3");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a journal")
}

fn restart_table() {
    let lengths: Vec<u64> = std::env::var("POLYBOT_BENCH_LENGTHS")
        .unwrap_or_else(|_| "10000,100000,300000".into())
        .split(',')
        .map(|n| n.trim().parse().expect("POLYBOT_BENCH_LENGTHS: numbers"))
        .collect();
    println!("restart after SIGKILL (kill → first new event), momentum, SQLite");
    println!(
        "{:>10} {:>12} {:>14} {:>12} {:>14}",
        "journal", "host state", "entries read", "restart ms", "peak RSS MiB"
    );
    for length in lengths {
        let dir = tempfile::tempdir().expect("tempdir");
        killed_journal(dir.path(), length);
        let r = resume(dir.path(), journal_end(dir.path()));
        println!(
            "{:>10} {:>12} {:>14} {:>12.0} {:>14.1}",
            r.journal,
            r.from_seq,
            r.entries,
            r.wall.as_secs_f64() * 1000.0,
            r.peak_kib as f64 / 1024.0
        );
    }
}

fn rss_table() {
    let duration = std::env::var("POLYBOT_BENCH_DURATION").unwrap_or_else(|_| "1d".into());
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut child, log) = spawn_logging(dir.path(), &["--duration", &duration]);
    let pid = child.id();
    let mut samples: Vec<(u64, u64)> = Vec::new();
    for line in log {
        if let Some(seq) = saved_seq(&line)
            && let Some(rss) = proc_kib(pid, "VmRSS:")
        {
            samples.push((seq, rss));
        }
    }
    let status = child.wait().expect("wait");
    assert!(status.success(), "long run failed: {status}");
    assert!(samples.len() >= 3, "too short a run to sample");
    let mib = |kib: u64| kib as f64 / 1024.0;
    let (start, middle, end) = (
        samples[0],
        samples[samples.len() / 2],
        samples[samples.len() - 1],
    );
    let peak = samples.iter().map(|s| s.1).max().unwrap_or(0);
    println!();
    println!("RSS over a {duration} run of momentum at --speed max (sampled every 1,000 events)");
    println!("{:>8} {:>10} {:>10}", "", "seq", "RSS MiB");
    for (name, (seq, rss)) in [("start", start), ("middle", middle), ("end", end)] {
        println!("{name:>8} {seq:>10} {:>10.1}", mib(rss));
    }
    println!("{:>8} {:>10} {:>10.1}", "peak", "", mib(peak));
}

fn main() {
    restart_table();
    rss_table();
}
