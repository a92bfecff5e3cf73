//! Contract tests: the real REST and WebSocket clients against the local server on
//! 127.0.0.1 (port 0), one binary with shared helpers in `util`.
//!
//! Nothing here contacts Polymarket. Waiting is event-based (messages, watch channels) under
//! an overall timeout; the only fixed durations are the short, configurable timeouts under test.

mod faults;
mod market_data;
mod stream;
mod trading;
mod util;
