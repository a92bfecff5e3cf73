//! Driving a `polybot-host serve` process for the fleet and control-plane
//! suites: its command line, its API token, the API routes the suites read
//! (a strategy's view, its system events, the first views of the stream),
//! waiting for a condition or for the process to exit, each with a bound.
//!
//! Never decides what a suite expects; the HTTP client itself is `http`.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::LoggingHost;
use crate::http::{Reply, request};

/// `polybot-host serve --json --config FILE --data-dir DATA`, logging at
/// `info`, its API on a free port (see [`crate::host_command`]).
#[macro_export]
macro_rules! serve_command {
    ($file:expr, $data:expr) => {
        $crate::fleet::serve_args($crate::host_command!("info"), $file, $data)
    };
}

/// Adds the `serve` arguments to `command` (see [`serve_command!`]).
pub fn serve_args(mut command: Command, file: &Path, data: &Path) -> Command {
    command.args([
        "serve",
        "--json",
        "--config",
        file.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    command
}

/// The API token the host generated into `DATA/api-token`.
pub fn token(data: &Path) -> String {
    std::fs::read_to_string(data.join("api-token"))
        .unwrap()
        .trim()
        .to_string()
}

pub fn get(addr: &str, path: &str, token: &str) -> Reply {
    request(addr, "GET", path, Some(token), b"")
}

pub fn post(addr: &str, path: &str, token: &str, body: impl AsRef<[u8]>) -> Reply {
    request(addr, "POST", path, Some(token), body.as_ref())
}

/// `GET /api/strategies/NAME`, which must answer 200.
pub fn view(addr: &str, token: &str, name: &str) -> Value {
    let reply = get(addr, &format!("/api/strategies/{name}"), token);
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()
}

/// The strategy's system events of type `kind`.
pub fn events_of(addr: &str, token: &str, name: &str, kind: &str) -> Vec<Value> {
    let reply = get(
        addr,
        &format!("/api/strategies/{name}/events?limit=10000"),
        token,
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event_type"] == kind)
        .cloned()
        .collect()
}

/// Polls `check` every 50 ms until it holds, failing after `bound`.
pub fn eventually(bound: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + bound;
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within {bound:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits up to `bound` for the host to exit, draining its log; returns how.
pub fn wait_exit(host: &mut LoggingHost, bound: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + bound;
    loop {
        host.drain_log();
        if let Some(status) = host.child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "the host did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGTERM, then a clean exit (status 0) within 30 s.
pub fn terminate(mut host: LoggingHost) {
    let status = Command::new("kill")
        .args(["-TERM", &host.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let status = wait_exit(&mut host, Duration::from_secs(30));
    assert!(status.success(), "the host exited with {status}");
}

/// The first `strategies` message of `/api/stream` (what the dashboard
/// draws its rows and panels from): every strategy's view.
pub fn stream_views(addr: &str, token: &str) -> Vec<Value> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET /api/stream HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\r\n"
    )
    .unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 8192];
    loop {
        if let Some(at) = seen.find("event: strategies\ndata: ") {
            let rest = &seen[at + "event: strategies\ndata: ".len()..];
            if let Some(end) = rest.find('\n') {
                let views: Value = serde_json::from_str(&rest[..end]).unwrap();
                return views.as_array().unwrap().clone();
            }
        }
        let n = stream.read(&mut buf).expect("a stream message within 10 s");
        assert!(n > 0, "the stream ended: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}
