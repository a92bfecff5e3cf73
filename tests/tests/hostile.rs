//! Hostile strategies: each class of misbehaviour the sandbox must contain,
//! driven through the real `polybot-host` binary (and, for the properties a
//! process cannot show, through the library). Every case ends within a bound,
//! ends as documented (recovered, quarantined, or fatal with one error line),
//! and keeps the host's peak resident memory under [`RSS_BOUND`].
//!
//! | strategy does                          | ends as                                   |
//! |----------------------------------------|-------------------------------------------|
//! | sleeps in a WASI call                  | deadline fault; event quarantined; SIGTERM stops it at once |
//! | calls `exit`                           | `exit` guest fault; event quarantined     |
//! | returns a 40 MiB market id             | invalid output, refused before the copy; quarantined |
//! | returns many actions with long strings | invalid output; quarantined               |
//! | returns a string that is not UTF-8     | invalid output; quarantined               |
//! | returns a NaN price or infinite size   | invalid output before the journal; a restart reads the journal |
//! | returns an oversize snapshot           | invalid output at each checkpoint; fatal  |
//! | floods its log                         | lines over the rate dropped and counted   |
//! | burns CPU                              | other strategies keep running meanwhile   |

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use polybot_host::contract::{Event, EventKind};
use polybot_host::sandbox::{CallError, GuestFault, SandboxLimits};
use polybot_tests::{guest, load, sandbox};

/// The host's peak resident memory (VmHWM) must stay under this in every
/// hostile case. The guest's own linear memory (64 MiB at most) lives in the
/// host process and counts; a host copy of a 40 MiB string would break it.
const RSS_BOUND_KIB: u64 = 200 * 1024;
const RSS_BOUND: &str = "200 MiB";

/// Building tens of MiB of strings takes the guest longer than the default
/// 100 ms deadline on a loaded machine; these cases are about output, not time.
const SLOW_GUEST: &str = "[sandbox]\ncall_deadline = \"2s\"\n";

/// Longest any hostile run may take before the test calls it a hang.
const RUN_BOUND: Duration = Duration::from_secs(90);

/// A finished run of the binary: exit status, stdout, stderr and peak RSS.
struct Finished {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    peak_rss_kib: u64,
}

impl Finished {
    fn report(&self) -> serde_json::Value {
        let json: serde_json::Value = serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not the JSON report ({e}):\n{}", self.stdout));
        json["report"].clone()
    }

    fn error_lines(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| l.starts_with("error:"))
            .collect()
    }

    fn assert_rss_bounded(&self) {
        eprintln!("peak RSS of the host: {} MiB", self.peak_rss_kib / 1024);
        assert!(
            self.peak_rss_kib > 0,
            "the host's peak RSS was never sampled"
        );
        assert!(
            self.peak_rss_kib < RSS_BOUND_KIB,
            "peak RSS {} MiB is over the {RSS_BOUND} bound",
            self.peak_rss_kib / 1024
        );
    }
}

/// Peak resident memory of process `pid` so far, in KiB (0 once it is gone).
/// VmHWM is the kernel's high-water mark, so a sample taken after a spike
/// still sees it; only the last moments before exit can escape the sampling.
fn vm_hwm_kib(pid: u32) -> u64 {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return 0;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A host process being watched: its stderr is collected by a thread, and its
/// peak RSS is sampled until it exits.
struct Watched {
    child: Child,
    stderr: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    peak_rss_kib: u64,
}

impl Watched {
    fn spawn(command: &mut Command) -> Watched {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the host");
        let pipe = child.stderr.take().expect("piped stderr");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let sink = stderr.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        Watched {
            child,
            stderr,
            reader: Some(reader),
            peak_rss_kib: 0,
        }
    }

    fn sample(&mut self) {
        self.peak_rss_kib = self.peak_rss_kib.max(vm_hwm_kib(self.child.id()));
    }

    /// Samples until the log holds a line containing `needle`.
    fn wait_for_log(&mut self, needle: &str, bound: Duration) {
        let start = Instant::now();
        loop {
            self.sample();
            if self
                .stderr
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains(needle))
            {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the host exited ({status}) before logging `{needle}`");
            }
            assert!(
                start.elapsed() < bound,
                "the host did not log `{needle}` within {bound:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits for the host to exit, sampling its RSS; kills it and fails the
    /// test if it takes longer than `bound`.
    fn finish(mut self, bound: Duration) -> Finished {
        let start = Instant::now();
        let status = loop {
            self.sample();
            if let Some(status) = self.child.try_wait().expect("wait for the host") {
                break status;
            }
            if start.elapsed() > bound {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "the host did not finish within {bound:?}; log:\n{}",
                    self.stderr.lock().unwrap().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        if let Some(reader) = self.reader.take() {
            reader.join().expect("stderr reader");
        }
        let mut stdout = String::new();
        if let Some(mut pipe) = self.child.stdout.take() {
            std::io::Read::read_to_string(&mut pipe, &mut stdout).expect("read stdout");
        }
        let stderr = self.stderr.lock().unwrap().join("\n");
        Finished {
            status,
            stdout,
            stderr,
            peak_rss_kib: self.peak_rss_kib,
        }
    }
}

/// `run` of the `faulty` fixture at full speed for `events` events, with
/// `config` as its TOML config, printing the JSON report.
fn faulty_run(dir: &Path, config: &str, events: u64, log: &str) -> Command {
    let path = dir.join("faulty.toml");
    std::fs::write(&path, config).unwrap();
    let mut command = polybot_tests::host_command!(log);
    command.current_dir(dir).args([
        "run",
        "--strategy",
        guest("faulty").to_str().unwrap(),
        "--config",
        path.to_str().unwrap(),
        "--speed",
        "max",
        "--events",
        &events.to_string(),
        "--json",
    ]);
    command
}

fn run_faulty(dir: &Path, config: &str, events: u64) -> Finished {
    Watched::spawn(&mut faulty_run(dir, config, events, "warn")).finish(RUN_BOUND)
}

/// A run whose event 5 is poison: it ends with exit 0, that one event
/// quarantined, a one-line fault naming `kind`, and bounded RSS.
fn assert_poison_event_quarantined(config: &str, expect_in_fault: &[&str]) -> Finished {
    let dir = tempfile::tempdir().unwrap();
    let config = format!("[strategy]\nat_seq = [5]\n{config}");
    let run = run_faulty(dir.path(), &config, 60);
    assert!(
        run.status.success(),
        "exit {}; log:\n{}",
        run.status,
        run.stderr
    );
    let report = run.report();
    assert_eq!(report["cell"]["quarantined"], 1, "{report}");
    assert_eq!(report["last_seq"], 60, "{report}");
    let fault = report["cell"]["last_fault"].as_str().unwrap_or_default();
    for expected in expect_in_fault {
        assert!(fault.contains(expected), "`{expected}` not in: {fault}");
    }
    assert!(!fault.contains('\n'), "a fault is one line: {fault}");
    assert!(!fault.contains("host failure"), "{fault}");
    assert!(
        fault.len() < 1000,
        "the fault quotes too much: {} bytes",
        fault.len()
    );
    run.assert_rss_bounded();
    run
}

#[test]
fn a_sleep_in_a_wasi_call_ends_at_the_deadline_and_the_event_is_quarantined() {
    assert_poison_event_quarantined("fault = \"sleep\"\nsleep_ms = 3600000\n", &["deadline"]);
}

#[test]
fn sigterm_stops_a_host_whose_strategy_sleeps_within_two_seconds() {
    let dir = tempfile::tempdir().unwrap();
    // Event 3 sleeps for an hour, on every attempt; the run would go on for a
    // million events.
    let mut command = faulty_run(
        dir.path(),
        "[strategy]\nfault = \"sleep\"\nat_seq = [3]\nsleep_ms = 3600000\n",
        1_000_000,
        "info",
    );
    let mut host = Watched::spawn(&mut command);
    host.wait_for_log("faulty: sleeping", RUN_BOUND);
    let signalled = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &host.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let run = host.finish(Duration::from_secs(10));
    let took = signalled.elapsed();
    eprintln!("stopped {took:?} after SIGTERM");
    assert!(
        took < Duration::from_secs(2),
        "the host took {took:?} to stop after SIGTERM"
    );
    assert!(
        run.status.success(),
        "exit {}; log:\n{}",
        run.status,
        run.stderr
    );
    assert_eq!(run.report()["stop"], "shutdown", "{}", run.stdout);
    run.assert_rss_bounded();
}

#[test]
fn exit_is_the_strategys_fault_and_the_event_is_quarantined() {
    // WASI p2's `exit` carries only success or failure: status 7 arrives as 1.
    assert_poison_event_quarantined(
        "fault = \"exit\"\nexit_code = 7\n",
        &["called exit with status 1"],
    );
}

#[test]
fn a_40_mib_market_id_is_refused_before_the_host_copies_it() {
    assert_poison_event_quarantined(
        &format!(
            "fault = \"huge-market\"\nbytes = {}\n{SLOW_GUEST}",
            40 << 20
        ),
        &["invalid output", "on-event", "65536 bytes"],
    );
}

#[test]
fn many_actions_with_long_strings_are_refused() {
    // 60 cancels of 512 KiB each: 30 MiB in one reply.
    assert_poison_event_quarantined(
        &format!(
            "fault = \"long-strings\"\nactions = 60\nbytes = {}\n{SLOW_GUEST}",
            512 << 10
        ),
        &["invalid output"],
    );
    // Within the transfer budget, but each id over the id limit: the reason
    // quotes a short prefix only.
    let run = assert_poison_event_quarantined(
        "fault = \"long-strings\"\nactions = 4\nbytes = 1000\n",
        &["invalid output", "cancel id of 1002 bytes", "limit is 256"],
    );
    let fault = run.report()["cell"]["last_fault"].to_string();
    assert!(!fault.contains(&"c".repeat(100)), "{fault}");
}

#[test]
fn a_string_that_is_not_utf8_is_the_strategys_fault() {
    assert_poison_event_quarantined("fault = \"invalid-utf8\"\n", &["invalid output", "UTF-8"]);
}

#[test]
fn non_finite_numbers_never_reach_the_journal_and_a_restart_reads_it() {
    for (fault, expected) in [
        ("nan-price", "price is NaN"),
        ("infinite-size", "size is inf"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let config = format!("[strategy]\nfault = \"{fault}\"\nat_seq = [5]\n");
        let first = run_faulty(dir.path(), &config, 40);
        assert!(first.status.success(), "{fault}: {}", first.stderr);
        let report = first.report();
        assert_eq!(report["cell"]["quarantined"], 1, "{report}");
        let last_fault = report["cell"]["last_fault"].as_str().unwrap_or_default();
        assert!(last_fault.contains(expected), "{last_fault}");
        // The same command again, further: it resumes from the journal.
        let second = run_faulty(dir.path(), &config, 80);
        assert!(
            second.status.success(),
            "{fault}: the restart failed: {}",
            second.stderr
        );
        assert_eq!(second.report()["resumed_at_seq"], 40);
        assert_eq!(second.report()["last_seq"], 80);
    }
}

#[test]
fn zero_size_orders_are_refused() {
    assert_poison_event_quarantined("fault = \"zero-size\"\n", &["size is 0"]);
}

#[test]
fn an_oversize_snapshot_is_refused_and_the_strategy_ends_fatal() {
    let dir = tempfile::tempdir().unwrap();
    // From event 5 on, the state carries 4 MiB; snapshots may hold 1 MiB.
    let config = format!(
        "[strategy]\nfault = \"huge-snapshot\"\nat_seq = [5]\nbytes = {}\n\
         [sandbox]\nmax_snapshot_bytes = 1048576\n\
         [checkpoint]\nevery_events = 10\n\
         [supervisor]\nmax_restarts = 3\nbackoff_initial = \"1ms\"\nbackoff_max = \"2ms\"\n",
        4 << 20
    );
    let run = run_faulty(dir.path(), &config, 200);
    assert_eq!(run.status.code(), Some(1), "log:\n{}", run.stderr);
    let errors = run.error_lines();
    assert_eq!(errors.len(), 1, "one error line:\n{}", run.stderr);
    assert!(
        errors[0].contains("fatal")
            && errors[0].contains("snapshot")
            && errors[0].contains("1048576 bytes"),
        "{}",
        errors[0]
    );
    run.assert_rss_bounded();
}

#[test]
fn a_log_flood_is_cut_to_the_rate_limit_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    // Events 5..=9 each log 2,000 lines of 100 bytes; at most 20 lines a second pass.
    let config = "[strategy]\nfault = \"log-flood\"\nat_seq = [5, 6, 7, 8, 9]\n\
                  log_lines = 2000\nbytes = 100\n\
                  [sandbox]\nmax_log_lines_per_sec = 20\ncall_deadline = \"2s\"\n";
    let mut command = faulty_run(dir.path(), config, 40, "info");
    let run = Watched::spawn(&mut command).finish(RUN_BOUND);
    assert!(run.status.success(), "log:\n{}", run.stderr);
    let report = run.report();
    assert_eq!(report["cell"]["quarantined"], 0, "{report}");
    let line = "l".repeat(100);
    let logged = run.stderr.lines().filter(|l| l.contains(&line)).count();
    // A burst of 20, then 20 a second while the five flooding events run.
    assert!(
        (1..=500).contains(&logged),
        "{logged} of 10,000 flood lines reached the log"
    );
    assert!(
        run.stderr.contains("log lines from the strategy"),
        "the drops are not reported:\n{}",
        run.stderr.lines().take(40).collect::<Vec<_>>().join("\n")
    );
    run.assert_rss_bounded();
}

#[test]
fn a_log_line_over_the_transfer_budget_is_the_strategys_fault() {
    assert_poison_event_quarantined(
        &format!(
            "fault = \"log-flood\"\nlog_lines = 1\nbytes = {}\n",
            1 << 20
        ),
        &["invalid output", "65536 bytes"],
    );
}

#[test]
fn a_sandbox_limit_out_of_range_is_bad_input_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let run = run_faulty(dir.path(), "[sandbox]\nmax_id_bytes = 1\n", 10);
    assert_eq!(run.status.code(), Some(2), "log:\n{}", run.stderr);
    let errors = run.error_lines();
    assert_eq!(errors.len(), 1, "{}", run.stderr);
    assert!(
        errors[0].contains("faulty.toml") && errors[0].contains("[sandbox] max_id_bytes"),
        "{}",
        errors[0]
    );
    assert!(
        !dir.path().join("data").exists(),
        "nothing may be written for bad input"
    );
}

fn timer(seq: u64) -> Event {
    Event {
        seq,
        timestamp_ms: 1_000 + seq,
        kind: EventKind::Timer(seq),
    }
}

/// In-process: a call blocked in a WASI sleep returns a deadline fault in
/// about its deadline, and the instance then refuses every further call.
#[tokio::test]
async fn a_blocked_call_returns_at_its_deadline_and_poisons_the_instance() {
    let limits = SandboxLimits {
        call_deadline: Duration::from_millis(50),
        ..SandboxLimits::default()
    };
    let sandbox = sandbox(limits);
    let module = load(&sandbox, "faulty");
    let mut instance = module.instantiate("sleeper").await.expect("instantiate");
    let config = r#"{"fault": "sleep", "at_seq": [1], "sleep_ms": 3600000}"#;
    assert_eq!(instance.init(config).await.expect("init"), Ok(()));
    let call = tokio::time::timeout(Duration::from_secs(30), instance.on_event(&timer(1)))
        .await
        .expect("the call must not block past its deadline");
    match call {
        Err(CallError::Guest(GuestFault::Deadline { limit })) => {
            assert_eq!(limit, Duration::from_millis(50))
        }
        other => panic!("expected a deadline fault, got {other:?}"),
    }
    assert!(instance.is_poisoned());
    let again = instance.on_event(&timer(2)).await;
    assert!(
        matches!(&again, Err(CallError::Poisoned(reason)) if reason.contains("deadline")),
        "{again:?}"
    );
    assert!(matches!(
        instance.snapshot().await,
        Err(CallError::Poisoned(_))
    ));
}

/// In-process: each hostile output class is a guest fault of its own kind,
/// never a host failure.
#[tokio::test]
async fn hostile_outputs_are_guest_faults_of_their_kind() {
    let sandbox = sandbox(SandboxLimits::default());
    let module = load(&sandbox, "faulty");
    let cases = [
        (r#"{"fault": "exit"}"#, "exit"),
        (r#"{"fault": "invalid-utf8"}"#, "invalid-output"),
        (r#"{"fault": "nan-price"}"#, "invalid-output"),
        (
            r#"{"fault": "huge-market", "bytes": 1048576}"#,
            "invalid-output",
        ),
        (r#"{"fault": "flood"}"#, "too-many-actions"),
    ];
    for (config, kind) in cases {
        let mut instance = module.instantiate("hostile").await.expect("instantiate");
        let config = config.replace('}', r#", "at_seq": [1]}"#);
        assert_eq!(instance.init(&config).await.expect("init"), Ok(()));
        match instance.on_event(&timer(1)).await {
            Err(CallError::Guest(fault)) => {
                assert_eq!(fault.kind(), kind, "{config}: {fault}");
                assert!(!fault.to_string().contains('\n'), "{fault}");
            }
            other => panic!("{config}: expected a guest fault, got {other:?}"),
        }
        assert!(instance.is_poisoned());
    }
}

/// In-process, on one thread: while one strategy burns CPU inside a call,
/// another strategy's calls still complete, because a running call yields to
/// the runtime every epoch tick. Without the yield, the burning call would
/// hold the thread until it returned and the other would complete nothing.
#[tokio::test(flavor = "current_thread")]
async fn a_cpu_heavy_strategy_does_not_starve_another() {
    let limits = SandboxLimits {
        call_deadline: Duration::from_secs(20),
        ..SandboxLimits::default()
    };
    let sandbox = sandbox(limits);
    let module = load(&sandbox, "faulty");
    let mut heavy = module.instantiate("heavy").await.expect("instantiate");
    assert_eq!(
        heavy
            .init(r#"{"spins_per_event": 200000000}"#)
            .await
            .expect("init"),
        Ok(())
    );
    let mut light = module.instantiate("light").await.expect("instantiate");
    assert_eq!(light.init("{}").await.expect("init"), Ok(()));

    let burning = AtomicBool::new(true);
    let during = AtomicU64::new(0);
    let heavy_call = async {
        let result = heavy.on_event(&timer(1)).await;
        burning.store(false, Ordering::SeqCst);
        result
    };
    let light_calls = async {
        let mut seq = 1;
        while burning.load(Ordering::SeqCst) {
            light.on_event(&timer(seq)).await.expect("light call");
            seq += 1;
            if burning.load(Ordering::SeqCst) {
                during.fetch_add(1, Ordering::SeqCst);
            }
            // Let the heavy call be polled again, as any other task would.
            tokio::task::yield_now().await;
        }
    };
    let (result, ()) = tokio::join!(heavy_call, light_calls);
    assert!(result.is_ok(), "the heavy call itself succeeds: {result:?}");
    assert!(
        during.load(Ordering::SeqCst) > 0,
        "no call of the light strategy completed while the heavy one ran"
    );
}
