//! `polybot-host orders`, `halt` and `resume`: the execution layer's
//! intents as the store holds them, and the operator's halt of a strategy's
//! placement.
//!
//! `orders` reads only; `halt` and `resume` write one durable flag (the
//! `halts` table), which a running host polls about once a second and a
//! starting one reads before it places anything. Neither touches a venue:
//! the run loop cancels resting orders and refuses new ones.

use std::process::ExitCode;

use clap::Args;

use super::{Failure, StoreArgs, block_on};
use crate::exec::IntentState;
use crate::store::{IntentRow, StateStore};

#[derive(Debug, Args)]
pub struct OrdersArgs {
    /// Only this strategy's intents.
    #[arg(long, value_name = "NAME")]
    pub strategy: Option<String>,

    /// Only intents not yet in a terminal state (pending, sent, acknowledged,
    /// partially-filled, unknown).
    #[arg(long)]
    pub open: bool,

    /// Print JSON for scripts: `{"intents": [{"strategy", "intent_id", …}]}`.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, Args)]
pub struct HaltArgs {
    /// The strategy whose placement stops (or resumes).
    #[arg(long, value_name = "NAME")]
    pub strategy: String,

    /// Why, for the record (shown to the strategy in each rejection).
    #[arg(long, default_value = "")]
    pub reason: String,

    #[command(flatten)]
    pub store: StoreArgs,
}

/// Whether a stored state is terminal (an unreadable one counts as open).
pub(super) fn is_open(row: &IntentRow) -> bool {
    !IntentState::parse(&row.state).is_some_and(IntentState::is_terminal)
}

pub fn orders(args: OrdersArgs) -> Result<ExitCode, Failure> {
    block_on(async {
        let opened = args.store.open_existing().await?;
        let store = opened.store;
        let mut rows = store
            .intents(args.strategy.as_deref())
            .await
            .map_err(Failure::runtime)?;
        if args.open {
            rows.retain(is_open);
        }
        if args.json {
            let json = serde_json::json!({ "intents": rows });
            outln!("{json:#}");
            return Ok(ExitCode::SUCCESS);
        }
        if rows.is_empty() {
            outln!("no order intents in {}", store.location().describe());
            return Ok(ExitCode::SUCCESS);
        }
        outln!(
            "{:<16} {:<12} {:<14} {:<4} {:>7} {:>9} {:>9} {:<16} {:<24} reason",
            "strategy",
            "intent",
            "market",
            "side",
            "price",
            "size",
            "filled",
            "state",
            "updated"
        );
        for r in &rows {
            let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(r.updated_at_ms);
            outln!(
                "{:<16} {:<12} {:<14} {:<4} {:>7.3} {:>9.2} {:>9.2} {:<16} {:<24} {}",
                r.strategy,
                r.intent_id,
                short(&r.market, 14),
                r.side,
                r.price,
                r.size,
                r.filled,
                r.state,
                humantime::format_rfc3339_millis(at).to_string(),
                r.reason.as_deref().unwrap_or("")
            );
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `halt` (`halted = true`) or `resume` (`false`).
pub fn halt(args: HaltArgs, halted: bool) -> Result<ExitCode, Failure> {
    super::run::check_name(&args.strategy).map_err(Failure::bad_input)?;
    block_on(async {
        let opened = args.store.open().await?;
        let store = opened.store;
        crate::exec::halt::set(
            store.as_ref(),
            &args.strategy,
            halted,
            &args.reason,
            "operator",
        )
        .await
        .map_err(Failure::runtime)?;
        store.close().await.map_err(Failure::runtime)?;
        if halted {
            outln!(
                "{}: placement halted; a running host refuses new orders within about a second \
                 (and, on a live venue, cancels the resting ones)",
                args.strategy
            );
        } else {
            outln!("{}: placement resumed", args.strategy);
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Intent counts by state, for `status`: `state → count`, in state order.
pub fn counts(rows: &[IntentRow], strategy: &str) -> Vec<(String, u64)> {
    let mut counts: Vec<(String, u64)> = Vec::new();
    for r in rows.iter().filter(|r| r.strategy == strategy) {
        match counts.iter_mut().find(|(s, _)| *s == r.state) {
            Some((_, n)) => *n += 1,
            None => counts.push((r.state.clone(), 1)),
        }
    }
    counts.sort_by_key(|(s, _)| IntentState::parse(s).map_or(u8::MAX, |s| s as u8));
    counts
}

fn short(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let head: String = text.chars().take(max - 1).collect();
        format!("{head}…")
    }
}
