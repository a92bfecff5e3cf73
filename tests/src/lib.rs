//! Shared helpers for the end-to-end suites in `tests/tests/`.
//!
//! The strategy components are built by this package's `build.rs`; the host's
//! command line is built as the `polybot-host-e2e` binary of this package.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStderr, Command, Stdio};
use std::time::Duration;

use polybot_host::sandbox::{Sandbox, SandboxLimits, StrategyModule};
use polybot_host::store::memory::MemoryStore;
use polybot_host::supervisor::{Cell, CellSpec, CheckpointPolicy, RestartPolicy};

/// Path of a strategy component built by `build.rs` (`momentum` or `faulty`).
pub fn guest(name: &str) -> PathBuf {
    PathBuf::from(env!("POLYBOT_GUEST_DIR")).join(format!("{name}.wasm"))
}

/// The `polybot-host` command line as a process (a `std::process::Command`),
/// logging at the given level, with no `DATABASE_URL` leaking in from the
/// environment. A macro because the binary's path is known only to the
/// integration tests (`CARGO_BIN_EXE_…`).
#[macro_export]
macro_rules! host_command {
    ($log:expr) => {{
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_polybot-host-e2e"));
        // A host's HTTP API on a free port, so hosts of parallel tests do
        // not compete for the default one.
        command
            .env("POLYBOT_LOG", $log)
            .env_remove("DATABASE_URL")
            .env_remove("POLYBOT_API_TOKEN")
            .env("POLYBOT_HTTP", "127.0.0.1:0");
        command
    }};
}

/// A sandbox with the given limits and no compiled-code cache.
pub fn sandbox(limits: SandboxLimits) -> Sandbox {
    Sandbox::new(limits, None).expect("sandbox")
}

/// Loads a built strategy component.
pub fn load(sandbox: &Sandbox, name: &str) -> StrategyModule {
    sandbox.load(&guest(name)).expect("load strategy")
}

/// A restart policy with a short backoff, for tests.
pub fn quick_restarts(max_restarts: u32) -> RestartPolicy {
    RestartPolicy {
        max_restarts,
        restart_window: Duration::from_secs(60),
        backoff_initial: Duration::from_millis(1),
        backoff_max: Duration::from_millis(5),
        ..RestartPolicy::default()
    }
}

/// Starts a cell for `module` with a JSON config, in-memory store.
pub async fn start_cell(
    module: StrategyModule,
    config: serde_json::Value,
    restart: RestartPolicy,
    checkpoint_every: u64,
) -> Cell {
    let spec = CellSpec {
        name: "under-test".into(),
        module,
        config_json: config.to_string(),
        restart,
        checkpoint: CheckpointPolicy {
            every_events: checkpoint_every,
            every_event_time: Duration::from_secs(24 * 3600),
        },
    };
    match Cell::start(spec, std::sync::Arc::new(MemoryStore::new())).await {
        Ok(cell) => cell,
        Err(e) => panic!("cell did not start: {e}"),
    }
}

/// 300 books of market `m` whose mid climbs and falls by 0.004 in runs of
/// 20: enough for momentum to place orders both ways.
pub fn momentum_books() -> Vec<polybot_host::contract::EventKind> {
    let mut mid: f64 = 0.40;
    (0..300u64)
        .map(|i| {
            mid = if (i / 20) % 2 == 0 {
                mid + 0.004
            } else {
                mid - 0.004
            };
            polybot_host::contract::EventKind::Book(polybot_host::contract::Book {
                market: "m".into(),
                bids: vec![polybot_host::contract::Level {
                    price: mid - 0.005,
                    size: 100.0,
                }],
                asks: vec![polybot_host::contract::Level {
                    price: mid + 0.005,
                    size: 100.0,
                }],
            })
        })
        .collect()
}

pub mod checker;
pub mod clob;
pub mod fleet;
pub mod http;
pub mod proxy;
pub mod sim;

/// A fresh, uniquely named database on the machine's PostgreSQL server
/// (127.0.0.1:5432, user `postgres`), dropped when the guard is dropped.
pub struct TempDatabase {
    pub name: String,
}

/// The shared PostgreSQL server tests create their databases on.
pub const POSTGRES: &str = "127.0.0.1:5432";

impl TempDatabase {
    /// Creates the database.
    pub fn create(prefix: &str) -> TempDatabase {
        let name = format!(
            "{prefix}_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
                % 1_000_000_000
        );
        psql("test", &format!("CREATE DATABASE {name}"));
        TempDatabase { name }
    }

    /// Its URL through `addr` (the server itself, or a proxy in front of it).
    pub fn url_via(&self, addr: &str) -> String {
        format!("postgres://postgres@{addr}/{}", self.name)
    }

    /// Its URL on the server.
    pub fn url(&self) -> String {
        self.url_via(POSTGRES)
    }

    /// Runs `sql` in it (through `psql`), failing the test if it fails.
    pub fn execute(&self, sql: &str) {
        psql(&self.name, sql);
    }
}

impl Drop for TempDatabase {
    fn drop(&mut self) {
        psql(
            "test",
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

fn psql(database: &str, sql: &str) {
    let status = std::process::Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            database,
            "-v",
            "ON_ERROR_STOP=1",
            "-q",
            "-c",
            sql,
        ])
        .output()
        .expect("run psql (the PostgreSQL client; these tests need it)");
    assert!(
        status.status.success(),
        "this test needs a PostgreSQL server at {POSTGRES} (user postgres, trust \
         authentication, database `test`); `{sql}` failed: {}",
        String::from_utf8_lossy(&status.stderr).trim()
    );
}

/// How long [`LoggingHost`] waits for a log line before failing the test.
pub const LOG_TIMEOUT: Duration = Duration::from_secs(120);

/// A host process whose stderr (its log) is read line by line, on a thread
/// of its own so that every wait has a timeout. Keep it until the host has
/// exited.
pub struct LoggingHost {
    pub child: Child,
    log: std::sync::mpsc::Receiver<String>,
}

impl LoggingHost {
    /// Spawns `command` (a `run` logging at info or finer) with stderr piped,
    /// and returns once it logs that its strategy is running.
    pub fn start_running(command: &mut Command) -> LoggingHost {
        let mut host = LoggingHost::spawn(command);
        host.wait_for("strategy running");
        host
    }

    /// Starts a `serve` host (stdout piped for its report) as a harness
    /// restarting it after `kill -9` would: a start that does not reach
    /// "fleet running" within 60 s (the killed one's lease not yet lapsed)
    /// is killed and tried again, for at most `bound` in all.
    pub fn start_fleet(command: &dyn Fn() -> Command, bound: Duration) -> LoggingHost {
        let deadline = std::time::Instant::now() + bound;
        loop {
            let mut host = LoggingHost::spawn(command().stdout(Stdio::piped()));
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                host.wait_for_within("fleet running", Duration::from_secs(60))
            })) {
                Ok(_) => return host,
                Err(_) => {
                    let _ = host.child.kill();
                    let _ = host.child.wait();
                    assert!(
                        std::time::Instant::now() < deadline,
                        "the host could not be started again within {bound:?}"
                    );
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        }
    }

    /// Spawns `command` with stderr piped, without waiting for anything.
    pub fn spawn(command: &mut Command) -> LoggingHost {
        let mut child = command
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the host");
        let stderr: ChildStderr = child.stderr.take().expect("piped stderr");
        let (tx, log) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        LoggingHost { child, log }
    }

    /// Reads the log up to the first line holding `needle`, and returns it;
    /// fails after [`LOG_TIMEOUT`] or when the host closes its log first.
    pub fn wait_for(&mut self, needle: &str) -> String {
        self.wait_for_within(needle, LOG_TIMEOUT)
    }

    /// [`Self::wait_for`] with its own timeout.
    pub fn wait_for_within(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = std::time::Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.log.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(line) => seen.push(line),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!(
                    "the host did not log `{needle}` within {timeout:?}; its log so far:\n{}",
                    seen.join("\n")
                ),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => panic!(
                    "the host closed its log without logging `{needle}`:\n{}",
                    seen.join("\n")
                ),
            }
        }
    }

    /// Reads the rest of the log (until the host closes it), so the pipe never
    /// holds the host up; returns it. Fails after [`LOG_TIMEOUT`].
    /// Waits for the host to exit by itself, polling every 100 ms without
    /// blocking the runtime; panics if it has not within `bound`.
    pub async fn exit_within(&mut self, bound: Duration) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + bound;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the host") {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the host did not exit within {bound:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn drain_log(&mut self) -> Vec<String> {
        let deadline = std::time::Instant::now() + LOG_TIMEOUT;
        let mut rest = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.log.recv_timeout(left) {
                Ok(line) => rest.push(line),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return rest,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    panic!("the host kept its log open for {LOG_TIMEOUT:?}")
                }
            }
        }
    }
}
