//! A fleet task's failures reach an operator as system events, not only as
//! log lines: here a pause whose event in hand does not finish within the
//! host's `shutdown_timeout` (the strategy loops in its call) is paused all
//! the same, and a `pause-timeout` system event says it was paused without a
//! final checkpoint. On the real binary, through the API.

use std::process::Stdio;
use std::time::Duration;

use polybot_tests::fleet::{events_of, eventually, post, terminate, token, view};
use polybot_tests::guest;
use polybot_tests::http::start;

const BOUND: Duration = Duration::from_secs(60);

#[test]
fn a_pause_that_outlasts_the_shutdown_timeout_is_a_system_event() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Event 5 loops inside the call until its 8 s deadline (yielding, so the
    // API answers meanwhile); the host waits 1 s for an event in hand.
    let text = format!(
        "[host]\nshutdown_timeout = \"1s\"\n[sandbox]\ncall_deadline = \"8s\"\n\n\
         [[strategy]]\nname = \"looping\"\nmodule = \"{}\"\nspeed = 50\n\
         config = {{ fault = \"loop\", at_seq = [5] }}\n",
        guest("faulty").display()
    );
    let file = dir.path().join("fleet.toml");
    std::fs::write(&file, text).unwrap();
    let mut command = polybot_tests::serve_command!(&file, &data);
    command.stdout(Stdio::null());
    let (host, addr) = start(&mut command);
    let token = token(&data);
    // Event 5 in hand: four handled, and none for a second (at 50 a second).
    eventually(BOUND, "event 5 in hand", || {
        let shown = view(&addr, &token, "looping");
        shown["last_seq"] == 4 && shown["last_handled_age_ms"].as_u64().unwrap_or(0) >= 1000
    });
    let reply = post(&addr, "/api/strategies/looping/pause", &token, b"");
    assert_eq!(reply.status, 202, "{}", reply.body);
    eventually(BOUND, "the pause-timeout event", || {
        !events_of(&addr, &token, "looping", "pause-timeout").is_empty()
    });
    let event = &events_of(&addr, &token, "looping", "pause-timeout")[0];
    let message = event["message"].as_str().unwrap();
    assert!(
        message.contains("within 1s") && message.contains("without a final checkpoint"),
        "{message}"
    );
    assert_eq!(event["component"], "fleet/looping");
    eventually(BOUND, "looping paused", || {
        view(&addr, &token, "looping")["state"] == "paused"
    });
    terminate(host);
}
