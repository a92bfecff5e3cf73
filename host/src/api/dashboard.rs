//! The web dashboard: one static page and its script, embedded in the
//! binary (no build step, no CDN). The page asks for the API token once,
//! keeps it in the tab's `sessionStorage`, follows `/api/stream` (every
//! strategy's view each second, the recent system events when they change;
//! no request per row), pages the rows 50 at a time, draws each strategy's
//! PnL on a `<canvas>` by hand, shows one strategy's orders and trades on
//! request, and sends pause/resume requests.
//!
//! Owns the page only; every figure comes from the API.

pub(super) const HTML: &str = include_str!("dashboard/index.html");
pub(super) const SCRIPT: &str = include_str!("dashboard/dashboard.js");
