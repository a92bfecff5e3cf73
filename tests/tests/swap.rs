//! Safe hot swap on the real binary (`serve` with its HTTP API on an
//! ephemeral port):
//!
//! - probation: a swap to a module that traps on its 50th event is rolled
//!   back by itself; the journal has every event once, the orders match the
//!   journal (checker), and the final state equals an uninterrupted run's;
//! - shadow: a second momentum version (its own parameters) runs beside the
//!   live one; the orders it would place are recorded and never reach the
//!   venue; discard drops it, promote swaps a shadow in and the strategy
//!   trades on; bad swap requests get one-line 4xx errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use polybot_host::store::sql::{SqlStore, StoreLocation};
use polybot_host::store::{Checkpoint, JournalEntry, OrderRecord, Outcome, StateStore};
use polybot_tests::checker::{self, Expect, History};
use polybot_tests::fleet::{events_of, eventually, get, post, terminate, token, view, wait_exit};
use polybot_tests::guest;
use polybot_tests::http::{request, start};
use serde_json::{Value, json};

const HEAD: &str = "[sandbox]\ncall_deadline = \"10s\"\n[supervisor]\nbackoff_initial = \"1ms\"\nbackoff_max = \"5ms\"\nquarantine_after = 3\n[checkpoint]\nevery_events = 40\n[swap]\nprobation_faults = 0\nprobation_events = 150\n";

const BOUND: Duration = Duration::from_secs(90);

fn serve(file: &Path, data: &Path) -> Command {
    let mut command = polybot_tests::serve_command!(file, data);
    command.stdout(Stdio::null());
    command
}

fn fleet_file(dir: &Path, name: &str, module: &str, body: &str) -> PathBuf {
    let text = format!(
        "{HEAD}\n[[strategy]]\nname = \"{name}\"\nmodule = \"{}\"\n{body}\n",
        guest(module).display()
    );
    let path = dir.join("fleet.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// What a strategy left in a data directory's store.
struct Durable {
    journal: Vec<JournalEntry>,
    orders: Vec<OrderRecord>,
    newest: Option<Checkpoint>,
    history: History,
}

fn read_back(data: &Path, name: &str) -> Durable {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = SqlStore::open(StoreLocation::Sqlite(data.join("polybot.db")), data)
            .await
            .unwrap();
        let newest = store
            .checkpoints(name)
            .await
            .unwrap()
            .into_iter()
            .max_by_key(|c| c.seq);
        let durable = Durable {
            journal: store.entries_after(name, 0).await.unwrap(),
            orders: store.orders(name).await.unwrap(),
            newest,
            history: History::read(&store, &[name]).await.unwrap(),
        };
        store.close().await.unwrap();
        durable
    })
}

fn no_lost_or_duplicated_orders(durable: &Durable) {
    let verdict = checker::check_and_print(
        &durable.history,
        &Expect {
            venue: Default::default(),
            host_starts: None,
        },
    );
    verdict.assert_clean();
    let mut seqs: Vec<u64> = durable.journal.iter().map(|e| e.event.seq).collect();
    let n = seqs.len() as u64;
    seqs.dedup();
    assert_eq!(seqs.len() as u64, n, "an event journaled twice");
    assert_eq!(seqs, (1..=n).collect::<Vec<_>>(), "a gap in the journal");
}

#[test]
fn a_module_on_probation_that_traps_is_rolled_back_and_the_run_ends_as_if_uninterrupted() {
    let events = 500;
    let body = "seed = 3\nconfig = {}\n";

    // The uninterrupted run, at full speed.
    let reference = tempfile::tempdir().unwrap();
    let data_ref = reference.path().join("data");
    let file = fleet_file(
        reference.path(),
        "p",
        "faulty",
        &format!("{body}events = {events}\nspeed = \"max\"\n"),
    );
    let status = serve(&file, &data_ref)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());

    // The same run, paced, with a swap on probation to a module that traps.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = fleet_file(
        dir.path(),
        "p",
        "faulty",
        &format!("{body}events = {events}\nspeed = 4\n"),
    );
    let (mut host, addr) = start(&mut serve(&file, &data));
    let token = token(&data);
    eventually(BOUND, "p handles events", || {
        view(&addr, &token, "p")["last_seq"].as_u64().unwrap() >= 20
    });
    let before = view(&addr, &token, "p");
    let old_digest = before["module_digest"].as_str().unwrap().to_string();
    let swap = post(
        &addr,
        "/api/strategies/p/swap",
        &token,
        json!({ "path": guest("faulty_next"), "mode": "probation" })
            .to_string()
            .as_bytes(),
    );
    assert_eq!(swap.status, 202, "{}", swap.body);
    let new_digest = swap.json()["digest"].as_str().unwrap().to_string();
    assert_ne!(new_digest, old_digest);
    assert_eq!(swap.json()["live_digest"], old_digest.as_str());
    // The answer came once the module was in: the probation runs (what the
    // dashboard's panel shows of it), short of its 50th event.
    assert_eq!(swap.json()["outcome"], "applied", "{}", swap.body);
    let on = view(&addr, &token, "p");
    let probation = &on["probation"];
    assert_eq!(probation["digest"], new_digest.as_str(), "{on}");
    assert_eq!(probation["previous_digest"], old_digest.as_str());
    assert_eq!(probation["events_needed"], 150);
    assert_eq!(probation["faults_allowed"], 0);
    assert!(probation["events"].as_u64().unwrap() < 50, "{on}");
    assert!(on["shadow"].is_null(), "{on}");

    eventually(BOUND, "the rollback", || {
        !events_of(&addr, &token, "p", "swap-rollback").is_empty()
    });
    let after = view(&addr, &token, "p");
    assert_eq!(after["module_digest"], old_digest.as_str(), "{after}");
    assert_eq!(after["last_swap"]["kind"], "rollback", "{after}");
    assert_eq!(after["last_swap"]["old_digest"], new_digest.as_str());
    assert!(after["last_swap"]["pause_us"].is_u64());
    assert!(after["probation"].is_null(), "{after}");
    assert!(
        after["last_seq"].as_u64().unwrap() < events,
        "the run ended before the rollback could be seen: {after}"
    );
    // The swap and the rollback name both digests; the swap its pause.
    let swapped = &events_of(&addr, &token, "p", "hot-swap")[0];
    let message = swapped["message"].as_str().unwrap();
    assert!(message.contains(&old_digest) && message.contains(&new_digest));
    assert!(message.contains("swap pause"), "{message}");
    let rollback = &events_of(&addr, &token, "p", "swap-rollback")[0];
    let message = rollback["message"].as_str().unwrap();
    assert!(message.contains(&old_digest) && message.contains(&new_digest));
    assert!(message.contains("faults within"), "{message}");

    // The run goes on with the old module to its end.
    assert!(wait_exit(&mut host, BOUND).success());

    let swapped = read_back(&data, "p");
    let uninterrupted = read_back(&data_ref, "p");
    no_lost_or_duplicated_orders(&swapped);
    assert_eq!(swapped.journal.len() as u64, events);
    let same = |d: &Durable| {
        d.journal
            .iter()
            .map(|e| (e.event.clone(), format!("{:?}", e.outcome)))
            .collect::<Vec<_>>()
    };
    assert!(
        same(&swapped) == same(&uninterrupted),
        "the journals differ from the uninterrupted run's"
    );
    let (a, b) = (swapped.newest.unwrap(), uninterrupted.newest.unwrap());
    assert_eq!(a.seq, events);
    assert_eq!(b.seq, events);
    assert_eq!(
        String::from_utf8_lossy(&a.state),
        String::from_utf8_lossy(&b.state),
        "the final state differs from the uninterrupted run's"
    );
    assert_eq!(a.module_digest, old_digest);
}

/// Intent ids (`seq.index`) of the orders in `shadow-actions` events.
fn shadow_orders(events: &[Value]) -> Vec<(u64, String)> {
    let mut ids = Vec::new();
    for e in events {
        let recorded: Value = serde_json::from_str(e["message"].as_str().unwrap()).unwrap();
        let seq = recorded["seq"].as_u64().unwrap();
        for (index, action) in recorded["actions"].as_array().unwrap().iter().enumerate() {
            if action.to_string().contains("place") || action.to_string().contains("Place") {
                ids.push((seq, format!("{seq}.{index}")));
            }
        }
    }
    ids
}

fn cli(data: &Path, addr: &str, args: &[&str]) -> std::process::Output {
    let mut command = polybot_tests::host_command!("warn");
    command
        .args(args)
        .args(["--http", addr, "--data-dir", data.to_str().unwrap()]);
    command.output().unwrap()
}

#[test]
fn a_shadow_records_without_sending_and_is_discarded_or_promoted() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = fleet_file(
        dir.path(),
        "m",
        "momentum",
        "seed = 1\nspeed = 4\nconfig = { lookback = 5 }\n",
    );
    let (host, addr) = start(&mut serve(&file, &data));
    let token = token(&data);
    eventually(BOUND, "m handles events", || {
        view(&addr, &token, "m")["last_seq"].as_u64().unwrap() >= 20
    });
    let live_digest = view(&addr, &token, "m")["module_digest"]
        .as_str()
        .unwrap()
        .to_string();

    // Bad requests: one clear line each, nothing changes.
    let swap_path = "/api/strategies/m/swap";
    post(&addr, swap_path, &token, b"").assert_error(400);
    post(&addr, swap_path, &token, b"{\"path\": 3}").assert_error(400);
    post(
        &addr,
        &format!("{swap_path}?mode=sideways"),
        &token,
        b"{\"path\": \"x\"}",
    )
    .assert_error(400);
    post(
        &addr,
        swap_path,
        &token,
        b"{\"path\": \"/nonexistent.wasm\"}",
    )
    .assert_error(422);
    post(&addr, "/api/strategies/m/promote", &token, b"").assert_error(409);
    post(&addr, "/api/strategies/m/discard", &token, b"").assert_error(409);
    post(&addr, "/api/strategies/nope/swap", &token, b"{}").assert_error(404);
    request(&addr, "POST", swap_path, None, b"{}").assert_error(401);
    assert!(view(&addr, &token, "m")["shadow"].is_null());

    // A second version of momentum, with its own parameters, as a shadow.
    let shadow_config = json!({ "lookback": 3, "threshold": 0.002, "cooldown_ms": 1000 });
    let reply = post(
        &addr,
        swap_path,
        &token,
        json!({ "path": guest("momentum"), "mode": "shadow", "config": shadow_config })
            .to_string()
            .as_bytes(),
    );
    assert_eq!(reply.status, 202, "{}", reply.body);
    eventually(BOUND, "the shadow places orders on paper", || {
        let shown = view(&addr, &token, "m");
        let shadow = &shown["shadow"];
        shadow["orders"].as_u64().unwrap_or(0) >= 3 && shadow["events"].as_u64().unwrap_or(0) >= 50
    });
    let shown = view(&addr, &token, "m");
    let shadow = &shown["shadow"];
    // What the dashboard's panel shows: mode, candidate, events compared,
    // divergences (its own parameters make it act differently on some
    // events, never on more than it saw), recorded actions.
    let compared = shadow["events"].as_u64().unwrap();
    let differing = shadow["divergences"].as_u64().expect("divergences");
    assert!(
        (1..=compared).contains(&differing),
        "{differing} of {compared} events differ: {shown}"
    );
    assert!(shadow["actions"].as_u64().unwrap() >= shadow["orders"].as_u64().unwrap());
    assert!(shown["probation"].is_null(), "{shown}");
    // The panel reads the same from the stream the page follows.
    let streamed = polybot_tests::fleet::stream_views(&addr, &token);
    let streamed = streamed
        .iter()
        .find(|v| v["name"] == "m")
        .expect("m streamed");
    for key in ["digest", "live_digest", "since_seq"] {
        assert_eq!(streamed["shadow"][key], shadow[key], "{key}: {streamed}");
    }
    for key in ["events", "divergences", "actions"] {
        assert!(
            streamed["shadow"][key].as_u64().unwrap() >= shadow[key].as_u64().unwrap(),
            "{key}: {streamed}"
        );
    }
    assert_eq!(shadow["digest"], live_digest.as_str());
    assert_eq!(shadow["live_digest"], live_digest.as_str());
    assert!(shadow["would_be_pnl"].is_f64(), "{shown}");
    assert!(
        shown["pnl"].is_f64(),
        "live and shadow side by side: {shown}"
    );
    // A swap while a shadow runs is refused.
    post(
        &addr,
        swap_path,
        &token,
        json!({ "path": guest("momentum"), "mode": "direct" })
            .to_string()
            .as_bytes(),
    )
    .assert_error(409);

    // Discard, through the CLI.
    let out = cli(&data, &addr, &["discard", "--strategy", "m"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually(BOUND, "the discard", || {
        view(&addr, &token, "m")["shadow"].is_null()
            && !events_of(&addr, &token, "m", "swap-discarded").is_empty()
    });
    let recorded = events_of(&addr, &token, "m", "shadow-actions");
    let shadow_intents = shadow_orders(&recorded);
    assert!(!shadow_intents.is_empty(), "the shadow recorded no orders");

    // A shadow again, uploaded through the CLI, then promoted.
    let out = cli(
        &data,
        &addr,
        &[
            "swap",
            "--strategy",
            "m",
            "--module",
            guest("momentum").to_str().unwrap(),
            "--mode",
            "shadow",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually(BOUND, "the second shadow", || {
        view(&addr, &token, "m")["shadow"]["events"]
            .as_u64()
            .unwrap_or(0)
            >= 5
    });
    let out = cli(&data, &addr, &["promote", "--strategy", "m"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually(BOUND, "the promotion", || {
        !events_of(&addr, &token, "m", "swap-promoted").is_empty()
    });
    let promoted = view(&addr, &token, "m");
    assert_eq!(promoted["last_swap"]["kind"], "promote", "{promoted}");
    assert!(promoted["last_swap"]["pause_us"].is_u64());
    assert!(promoted["shadow"].is_null());
    let promoted_at = promoted["last_swap"]["at_seq"].as_u64().unwrap();
    // The promoted module trades.
    eventually(BOUND, "an order after the promotion", || {
        let orders = get(&addr, "/api/strategies/m/orders?limit=10000", &token).json();
        orders["orders"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["seq"].as_u64().unwrap() > promoted_at)
    });
    terminate(host);

    // Only the live module's orders reached the venue: every order has its
    // intent in the journal, and no order the shadow alone wanted was sent.
    let durable = read_back(&data, "m");
    no_lost_or_duplicated_orders(&durable);
    let live_intents: std::collections::BTreeSet<String> = durable
        .journal
        .iter()
        .flat_map(|e| match &e.outcome {
            Outcome::Handled(actions) => actions
                .iter()
                .enumerate()
                .filter(|(_, a)| matches!(a, polybot_host::contract::Action::PlaceOrder(_)))
                .map(|(i, _)| format!("{}.{i}", e.event.seq))
                .collect::<Vec<_>>(),
            Outcome::Quarantined { .. } => Vec::new(),
        })
        .collect();
    let sent: std::collections::BTreeSet<&str> = durable
        .orders
        .iter()
        .map(|o| o.intent_id.as_str())
        .collect();
    let shadow_only: Vec<&String> = shadow_intents
        .iter()
        .map(|(_, id)| id)
        .filter(|id| !live_intents.contains(*id))
        .collect();
    assert!(
        !shadow_only.is_empty(),
        "the shadow's parameters should make it place orders the live module does not"
    );
    for id in shadow_only {
        assert!(!sent.contains(id.as_str()), "shadow order {id} was sent");
    }
}

#[test]
fn a_swap_the_run_ends_before_is_answered_with_an_error_and_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // One tick now, the next 20 s later: a swap waits for it in the cell.
    let file = fleet_file(
        dir.path(),
        "q",
        "momentum",
        "seed = 2\nspeed = 0.05\nconfig = { lookback = 5 }\n",
    );
    let (mut host, addr) = start(&mut serve(&file, &data));
    let token = token(&data);
    eventually(BOUND, "q handles its first event", || {
        view(&addr, &token, "q")["last_seq"].as_u64().unwrap() >= 1
    });
    let last_seq = view(&addr, &token, "q")["last_seq"].as_u64().unwrap();
    let swap = {
        let (addr, token) = (addr.clone(), token.clone());
        std::thread::spawn(move || {
            post(
                &addr,
                "/api/strategies/q/swap",
                &token,
                json!({ "path": guest("momentum"), "mode": "direct" }).to_string(),
            )
        })
    };
    // The request is with the strategy; the run ends (a pause) before its
    // next event.
    host.wait_for("swap requested over the API");
    let paused = post(&addr, "/api/strategies/q/pause", &token, b"");
    assert_eq!(paused.status, 202, "{}", paused.body);
    let reply = swap.join().unwrap();
    reply.assert_error(409);
    assert!(
        reply
            .body
            .contains("the run ended before the swap was applied"),
        "{}",
        reply.body
    );
    eventually(BOUND, "q paused", || {
        view(&addr, &token, "q")["state"] == "paused"
    });
    let refused = events_of(&addr, &token, "q", "hot-swap-refused");
    assert!(
        refused.iter().any(|e| e["message"]
            .as_str()
            .unwrap()
            .contains("the run ended before the swap was applied")),
        "{refused:?}"
    );
    let shown = view(&addr, &token, "q");
    assert_eq!(shown["last_swap"]["kind"], "refused", "{shown}");
    assert_eq!(
        shown["last_seq"].as_u64().unwrap(),
        last_seq,
        "no event was handled"
    );
    terminate(host);
}
