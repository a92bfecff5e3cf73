//! Control-plane latency, with the real binary: N momentum strategies (100 by
//! default) in one `serve` host on the simulated market, its HTTP API on an
//! ephemeral port. Over one keep-alive connection, times `GET
//! /api/strategies` and `GET /metrics` while every strategy trades
//! (`speed = 5`), then again with every strategy paused. Prints p50, p99 and
//! max per route and phase; the target for `/api/strategies` is p99 ≤ 5 ms.
//!
//! Run: `cargo bench -p polybot-tests --bench api`; `POLYBOT_BENCH_API=20`
//! sets N, `POLYBOT_BENCH_API_REQUESTS=500` the requests per measurement.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use polybot_tests::guest;
use polybot_tests::http::{request, start};
use serde_json::Value;

const BOUND: Duration = Duration::from_secs(600);

fn fleet_file(dir: &Path, n: usize) -> std::path::PathBuf {
    let momentum = guest("momentum");
    // A long call deadline: on a loaded machine the default can fault a
    // healthy strategy, and the benchmark wants every one running.
    let mut text =
        String::from("[sandbox]\ncall_deadline = \"10s\"\n[checkpoint]\nevery_events = 1000\n");
    for i in 0..n {
        text.push_str(&format!(
            "\n[[strategy]]\nname = \"m{i:03}\"\nmodule = \"{}\"\nseed = {i}\nspeed = 5\nconfig = {{ lookback = {} }}\n",
            momentum.display(),
            5 + i % 20
        ));
    }
    let path = dir.join("fleet.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// One keep-alive HTTP/1.1 connection; every read bounded by a timeout.
struct Client {
    reader: BufReader<TcpStream>,
    addr: String,
    token: String,
}

impl Client {
    fn connect(addr: &str, token: &str) -> Client {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_nodelay(true).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        Client {
            reader: BufReader::new(stream),
            addr: addr.to_string(),
            token: token.to_string(),
        }
    }

    /// GETs `path` and returns the body's length.
    fn get(&mut self, path: &str) -> usize {
        let head = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\r\n",
            self.addr, self.token
        );
        self.reader.get_mut().write_all(head.as_bytes()).unwrap();
        let mut length = None;
        let mut status = String::new();
        self.reader.read_line(&mut status).unwrap();
        assert!(status.contains(" 200 "), "{path}: {status}");
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            let lower = line.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = Some(v.trim().parse::<usize>().unwrap());
            }
        }
        let length = length.expect("a content-length");
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body).unwrap();
        length
    }
}

struct Figures {
    p50: Duration,
    p99: Duration,
    max: Duration,
    bytes: usize,
}

fn measure(client: &mut Client, path: &str, requests: usize) -> Figures {
    for _ in 0..requests / 10 {
        client.get(path);
    }
    let mut took = Vec::with_capacity(requests);
    let mut bytes = 0;
    for _ in 0..requests {
        let started = Instant::now();
        bytes = client.get(path);
        took.push(started.elapsed());
    }
    took.sort_unstable();
    Figures {
        p50: took[took.len() / 2],
        p99: took[took.len() * 99 / 100],
        max: *took.last().unwrap(),
        bytes,
    }
}

fn states(addr: &str, token: &str) -> Vec<String> {
    let all: Value = request(addr, "GET", "/api/strategies", Some(token), b"").json();
    all["strategies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["state"].as_str().unwrap().to_string())
        .collect()
}

fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + BOUND;
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within {BOUND:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn main() {
    let n: usize = std::env::var("POLYBOT_BENCH_API")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let requests: usize = std::env::var("POLYBOT_BENCH_API_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = fleet_file(dir.path(), n);
    let mut command = polybot_tests::host_command!("info");
    command
        .args(["serve", "--config", file.to_str().unwrap()])
        .args(["--data-dir", data.to_str().unwrap()])
        .stdout(Stdio::null());
    let (mut host, addr) = start(&mut command);
    eprintln!("host up; waiting for {n} strategies to run");
    let token = std::fs::read_to_string(data.join("api-token"))
        .unwrap()
        .trim()
        .to_string();
    until("every strategy running", || {
        let s = states(&addr, &token);
        s.len() == n && s.iter().all(|s| s == "running")
    });

    eprintln!("every strategy runs; measuring");
    let mut client = Client::connect(&addr, &token);
    let mut rows = Vec::new();
    for route in ["/api/strategies", "/metrics"] {
        rows.push(("trading", route, measure(&mut client, route, requests)));
    }
    for i in 0..n {
        let path = format!("/api/strategies/m{i:03}/pause");
        let reply = request(&addr, "POST", &path, Some(&token), b"");
        assert_eq!(reply.status, 202, "{}", reply.body);
    }
    eprintln!("pausing every strategy");
    until("every strategy paused", || {
        states(&addr, &token).iter().all(|s| s == "paused")
    });
    for route in ["/api/strategies", "/metrics"] {
        rows.push(("paused", route, measure(&mut client, route, requests)));
    }

    println!(
        "control plane, {n} strategies, {requests} requests per row over one keep-alive connection"
    );
    println!(
        "{:<8} {:<16} {:>10} {:>10} {:>10} {:>9}",
        "phase", "route", "p50", "p99", "max", "bytes"
    );
    for (phase, route, f) in &rows {
        println!(
            "{phase:<8} {route:<16} {:>10.2?} {:>10.2?} {:>10.2?} {:>9}",
            f.p50, f.p99, f.max, f.bytes
        );
    }
    let worst = rows
        .iter()
        .filter(|(_, route, _)| *route == "/api/strategies")
        .map(|(_, _, f)| f.p99)
        .max()
        .unwrap();
    println!(
        "/api/strategies p99 {worst:.2?} (target ≤ 5 ms): {}",
        if worst <= Duration::from_millis(5) {
            "met"
        } else {
            "NOT met"
        }
    );
    Command::new("kill")
        .args(["-TERM", &host.child.id().to_string()])
        .status()
        .unwrap();
    host.drain_log();
    let _ = host.child.wait();
}
