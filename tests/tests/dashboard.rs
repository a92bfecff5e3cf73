//! The dashboard in a real browser: `serve` with several strategies, the page
//! opened in headless Chromium driven over the DevTools protocol. Checks that
//! every strategy has a row, that the PnL charts draw pixels, that the rows
//! update through the server-sent-event stream (messages arrive and no
//! request per row is made), that the recent system events are listed, that
//! a strategy's page shows its orders and trades as the API has them, that
//! the pause button pauses the strategy (the API confirms) and resume brings
//! it back; saves a screenshot under the test's output
//! (`target/tmp/dashboard.png`, or `POLYBOT_SCREENSHOT=PATH`).
//!
//! Skips with a note when `chromium` is not installed
//! (`scripts/setup.sh --tests` installs it).

use std::io::{BufRead as _, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use polybot_tests::guest;
use polybot_tests::http::{request, start};
use serde_json::{Value, json};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

const BOUND: Duration = Duration::from_secs(60);

fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| {
            let found = Command::new("which").arg(name).output().ok()?;
            found
                .status
                .success()
                .then(|| PathBuf::from(String::from_utf8_lossy(&found.stdout).trim()))
        })
}

/// Headless Chromium with the DevTools protocol on a free port; killed on drop.
struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    port: u16,
}

impl Browser {
    fn launch(binary: &Path, url: &str) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new(binary)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--window-size=1500,1000",
                "--remote-debugging-port=0",
                &format!("--user-data-dir={}", profile.path().display()),
                url,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chromium");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("ws://127.0.0.1:").nth(1) {
                    let port: String = rest.chars().take_while(char::is_ascii_digit).collect();
                    let _ = tx.send(port.parse::<u16>().unwrap());
                }
            }
        });
        let port = rx
            .recv_timeout(BOUND)
            .expect("chromium says where DevTools listens");
        Browser {
            child,
            _profile: profile,
            port,
        }
    }

    /// A DevTools session on the page.
    fn page(&self) -> Page {
        let targets = request(
            &format!("127.0.0.1:{}", self.port),
            "GET",
            "/json/list",
            None,
            b"",
        )
        .json();
        let url = targets
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["type"] == "page")
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .expect("a page target")
            .to_string();
        let (socket, _) = tungstenite::connect(&url).expect("connect to DevTools");
        if let MaybeTlsStream::Plain(stream) = socket.get_ref() {
            stream
                .set_read_timeout(Some(Duration::from_secs(30)))
                .unwrap();
        }
        Page { socket, next: 0 }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Page {
    socket: WebSocket<MaybeTlsStream<TcpStream>>,
    next: u64,
}

impl Page {
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let message = json!({ "id": id, "method": method, "params": params });
        self.socket
            .send(Message::text(message.to_string()))
            .unwrap();
        loop {
            let reply = self.socket.read().expect("a DevTools reply within 30 s");
            let Message::Text(text) = reply else { continue };
            let value: Value = serde_json::from_str(&text).unwrap();
            if value["id"] == id {
                assert!(value.get("error").is_none(), "{method}: {value}");
                return value["result"].clone();
            }
        }
    }

    /// Evaluates `expression` in the page and returns its value.
    fn eval(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true }),
        );
        assert!(
            result.get("exceptionDetails").is_none(),
            "{expression}: {result}"
        );
        result["result"]["value"].clone()
    }

    fn until(&mut self, what: &str, expression: &str) -> Value {
        let deadline = Instant::now() + BOUND;
        loop {
            let value = self.eval(expression);
            if !value.is_null() && value != false {
                return value;
            }
            assert!(Instant::now() < deadline, "{what}: not within {BOUND:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn fleet(dir: &Path, names: &[&str]) -> PathBuf {
    let mut text =
        String::from("[sandbox]\ncall_deadline = \"10s\"\n[checkpoint]\nevery_events = 50\n");
    for (i, name) in names.iter().enumerate() {
        text.push_str(&format!(
            "\n[[strategy]]\nname = \"{name}\"\nmodule = \"{}\"\nspeed = 40\nseed = {}\nconfig = {{ lookback = {} }}\n",
            guest("momentum").display(),
            10 + i,
            4 + i
        ));
    }
    let path = dir.join("fleet.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn the_dashboard_shows_every_strategy_draws_charts_updates_and_pauses() {
    let Some(binary) = chromium() else {
        eprintln!("SKIPPED: no chromium installed (scripts/setup.sh --tests installs it)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let names = [
        "momentum-fast",
        "momentum-slow",
        "momentum-wide",
        "momentum-tight",
    ];
    let file = fleet(dir.path(), &names);
    let mut command = polybot_tests::serve_command!(&file, &data);
    command.stdout(Stdio::null());
    let (mut host, addr) = start(&mut command);
    let token = polybot_tests::fleet::token(&data);

    let browser = Browser::launch(&binary, &format!("http://{addr}/#token={token}"));
    let mut page = browser.page();

    // A row per strategy.
    page.until(
        "a row per strategy",
        "document.querySelectorAll('#rows tr').length === 4",
    );
    let shown = page.eval("[...document.querySelectorAll('#rows tr')].map(r => r.dataset.name)");
    let mut sorted = names.to_vec();
    sorted.sort_unstable();
    assert_eq!(shown, json!(sorted));
    // The token was taken from the address and removed from it.
    assert_eq!(page.eval("location.hash"), json!(""));
    assert_eq!(
        page.eval("sessionStorage.getItem('polybot-token')"),
        json!(token)
    );

    // The charts draw pixels, and the rows update.
    page.until(
        "a PnL chart drawn",
        "[...document.querySelectorAll('canvas.pnl-chart')].some(c => \
           c.getContext('2d').getImageData(0, 0, c.width, c.height).data.some(v => v > 0))",
    );
    let cell =
        "Number(document.querySelector('tr[data-name=\"momentum-fast\"]').children[3].textContent)";
    let first = page.eval(cell).as_f64().unwrap();
    page.until("the events cell updates", &format!("{cell} > {first}"));

    // The updates come over the stream, not by polling: more stream
    // messages arrive, and the page requested no strategy list.
    let streamed = page
        .eval("window.polybotStream.strategies")
        .as_u64()
        .unwrap();
    assert!(streamed >= 1);
    page.until(
        "another update over the stream",
        &format!("window.polybotStream.strategies > {streamed}"),
    );
    let polled = page.eval(
        "performance.getEntriesByType('resource').filter(e => e.name.includes('/api/strategies')).length",
    );
    assert_eq!(polled, json!(0), "no polling of /api/strategies");

    // The recent system events, as the API has them.
    page.until(
        "system events listed",
        "document.querySelectorAll('#event-list li').length > 0",
    );
    let events = request(&addr, "GET", "/api/events?limit=50", Some(&token), b"").json();
    let kinds: Vec<String> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap().to_string())
        .collect();
    let listed = page.eval("document.querySelector('#event-list li .k').textContent.trim()");
    assert!(
        kinds.contains(&listed.as_str().unwrap().to_string()),
        "{listed} among {kinds:?}"
    );

    // A strategy's page: its orders and trades, as the API has them.
    let orders_of = |name: &str| {
        request(
            &addr,
            "GET",
            &format!("/api/strategies/{name}/orders?limit=50"),
            Some(&token),
            b"",
        )
        .json()["orders"]
            .as_array()
            .unwrap()
            .len()
    };
    let deadline = Instant::now() + BOUND;
    let traded = loop {
        if let Some(name) = names.iter().find(|n| orders_of(n) > 0) {
            break *name;
        }
        assert!(Instant::now() < deadline, "no strategy placed an order");
        std::thread::sleep(Duration::from_millis(100));
    };
    page.eval(&format!(
        "document.querySelector('tr[data-name=\"{traded}\"] td.name button.open').click()"
    ));
    page.until(
        "the strategy's orders shown",
        "!document.querySelector('#detail').classList.contains('hidden') &&          document.querySelectorAll('#detail-orders tr').length > 0",
    );
    assert!(
        page.eval("document.querySelector('#detail-title').textContent")
            .as_str()
            .unwrap()
            .starts_with(traded)
    );
    let shown_order = page.eval("document.querySelector('#detail-orders tr td').textContent");
    let newest = request(
        &addr,
        "GET",
        &format!("/api/strategies/{traded}/orders?limit=1000"),
        Some(&token),
        b"",
    )
    .json();
    assert!(
        newest["orders"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["intent_id"] == shown_order),
        "{shown_order} is one of {traded}'s orders"
    );
    page.until(
        "the strategy's trades shown",
        "document.querySelectorAll('#detail-trades tr').length > 0",
    );

    // Pause through the page; the API confirms; the row says so.
    let button = "document.querySelector('tr[data-name=\"momentum-fast\"] button.toggle')";
    page.until(
        "a pause button",
        &format!("{button}.textContent === 'pause'"),
    );
    page.eval(&format!("{button}.click()"));
    let deadline = Instant::now() + BOUND;
    loop {
        let view = request(
            &addr,
            "GET",
            "/api/strategies/momentum-fast",
            Some(&token),
            b"",
        )
        .json();
        if view["state"] == "paused" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not paused through the page: {view}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    page.until(
        "the row shows paused",
        "document.querySelector('tr[data-name=\"momentum-fast\"] .state span').textContent === 'paused'",
    );
    page.until(
        "a resume button",
        &format!("{button}.textContent === 'resume' && !{button}.disabled"),
    );

    let shot = page.call("Page.captureScreenshot", json!({ "format": "png" }));
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().unwrap())
        .unwrap();
    assert!(png.starts_with(b"\x89PNG"));
    let path = std::env::var_os("POLYBOT_SCREENSHOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png"));
    std::fs::write(&path, &png).unwrap();
    eprintln!("screenshot: {}", path.display());

    // Resume through the page.
    page.eval(&format!("{button}.click()"));
    page.until(
        "the row shows running again",
        "document.querySelector('tr[data-name=\"momentum-fast\"] .state span').textContent === 'running'",
    );
    drop(page);
    drop(browser);

    Command::new("kill")
        .args(["-TERM", &host.child.id().to_string()])
        .status()
        .unwrap();
    host.drain_log();
    assert!(host.child.wait().unwrap().success());
}
