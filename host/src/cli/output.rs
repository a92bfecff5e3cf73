//! Standard output for every command: [`outln!`] instead of `println!`.
//!
//! A reader that goes away (`status --json | head -1`) closes the pipe;
//! `println!` would panic on the `EPIPE` that follows. Here the first broken
//! pipe silently ends all further output and the command finishes normally.
//! Any other write error (a full disk) is kept and reported by `cli::main` as
//! one error line with exit code 1. This module never writes to stderr.

use std::io::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once standard output cannot take more.
static CLOSED: AtomicBool = AtomicBool::new(false);
/// The first write error that was not a closed pipe.
static FAILURE: Mutex<Option<String>> = Mutex::new(None);

/// Writes one line to standard output; see the module docs.
pub fn line(args: std::fmt::Arguments<'_>) {
    if CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    let result = out
        .write_fmt(args)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
    if let Err(e) = result {
        CLOSED.store(true, Ordering::Relaxed);
        if e.kind() != std::io::ErrorKind::BrokenPipe
            && let Ok(mut failure) = FAILURE.lock()
        {
            failure.get_or_insert_with(|| e.to_string());
        }
    }
}

/// Whether standard output has gone (its reader closed the pipe, or a write failed).
pub fn closed() -> bool {
    CLOSED.load(Ordering::Relaxed)
}

/// The write error that ended output early, unless it was a closed pipe.
pub fn failure() -> Option<String> {
    FAILURE.lock().ok().and_then(|f| f.clone())
}

/// `println!` that survives a closed pipe; see [`line`].
macro_rules! outln {
    () => {
        $crate::cli::output::line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::cli::output::line(format_args!($($arg)*))
    };
}
