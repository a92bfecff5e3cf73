//! What the host accepts from a strategy: the one place guest output is checked.
//!
//! Everything a strategy returns is checked here before any other part of the
//! host sees it, so nothing it returns can break the journal, flood a venue or
//! blow up the host's memory:
//!
//! - `on-event`: at most `max_actions_per_event` actions and
//!   `max_output_bytes` in all (each action counted as the host's in-memory
//!   size plus its strings); market ids and cancel ids at most `max_id_bytes`,
//!   without control characters; an order's price and size finite numbers
//!   above zero (NaN or infinity would be journaled as JSON `null` and make
//!   the journal unreadable). Whether a price suits the venue (paper wants
//!   (0, 1) on its tick) is the venue's to say, with a rejected order update
//!   the strategy sees.
//! - `snapshot`: at most `max_snapshot_bytes`.
//! - `describe`: name and version at most 128 bytes, no control characters.
//! - refusal messages from `init` and `restore` are clipped to one short line.
//!
//! A refusal is a [`GuestFault::InvalidOutput`] (or `TooManyActions`) whose
//! reason quotes at most a short prefix of the offending value. This module
//! never changes what it accepts.

use super::SandboxLimits;
use super::fault::{GuestFault, clip};
use crate::contract::{Action, StrategyInfo};

/// Longest name or version `describe` may report.
const MAX_INFO_BYTES: usize = 128;
/// How much of an offending value a reason quotes.
const QUOTE_BYTES: usize = 24;
/// Longest refusal message kept from `init` or `restore`.
const MAX_MESSAGE_BYTES: usize = 512;

/// The bytes `actions` take in the host, the way wasmtime counts a transfer.
pub(crate) fn output_bytes(actions: &[Action]) -> usize {
    actions
        .iter()
        .map(|action| {
            std::mem::size_of::<Action>()
                + match action {
                    Action::PlaceOrder(order) => order.market.len(),
                    Action::CancelOrder(id) => id.len(),
                    Action::SetTimer(_) => 0,
                }
        })
        .sum()
}

/// Checks what one `on-event` call returned. See the module docs.
pub(crate) fn check_actions(actions: &[Action], limits: &SandboxLimits) -> Result<(), GuestFault> {
    if actions.len() > limits.max_actions_per_event {
        return Err(GuestFault::TooManyActions {
            returned: actions.len(),
            limit: limits.max_actions_per_event,
        });
    }
    for (index, action) in actions.iter().enumerate() {
        let refuse = |what: String| invalid(format!("action {index}: {what}"));
        match action {
            Action::PlaceOrder(order) => {
                check_id("market id", &order.market, limits.max_id_bytes).map_err(refuse)?;
                check_number("price", order.price).map_err(refuse)?;
                check_number("size", order.size).map_err(refuse)?;
            }
            Action::CancelOrder(id) => {
                check_id("cancel id", id, limits.max_id_bytes).map_err(refuse)?;
            }
            Action::SetTimer(_) => {}
        }
    }
    let total = output_bytes(actions);
    if total > limits.max_output_bytes {
        return Err(invalid(format!(
            "{} actions of {total} bytes in all; the limit is {} bytes per call",
            actions.len(),
            limits.max_output_bytes
        )));
    }
    Ok(())
}

/// Checks the size of a snapshot.
pub(crate) fn check_snapshot(len: usize, limits: &SandboxLimits) -> Result<(), GuestFault> {
    if len > limits.max_snapshot_bytes {
        return Err(invalid(format!(
            "a snapshot of {len} bytes; the limit is {} bytes",
            limits.max_snapshot_bytes
        )));
    }
    Ok(())
}

/// Checks what `describe` returned.
pub(crate) fn check_info(info: &StrategyInfo) -> Result<(), GuestFault> {
    check_id("strategy name", &info.name, MAX_INFO_BYTES).map_err(invalid)?;
    check_id("strategy version", &info.version, MAX_INFO_BYTES).map_err(invalid)
}

/// A refusal message from `init` or `restore`, as one short line.
pub(crate) fn message(text: String) -> String {
    if text.len() <= MAX_MESSAGE_BYTES && !text.contains(char::is_control) {
        return text;
    }
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_MESSAGE_BYTES)
        .collect();
    clip(&line, MAX_MESSAGE_BYTES)
}

fn check_id(what: &str, id: &str, max: usize) -> Result<(), String> {
    if id.len() > max {
        return Err(format!(
            "{what} of {} bytes ({}); the limit is {max} bytes",
            id.len(),
            quote(id)
        ));
    }
    if id.contains(char::is_control) {
        return Err(format!("{what} {} holds control characters", quote(id)));
    }
    Ok(())
}

fn check_number(what: &str, value: f64) -> Result<(), String> {
    if !value.is_finite() {
        return Err(format!("{what} is {value}, not a finite number"));
    }
    if value <= 0.0 {
        return Err(format!("{what} is {value}; it must be above 0"));
    }
    Ok(())
}

/// A short, escaped prefix of `text`, in quotes.
fn quote(text: &str) -> String {
    let prefix = clip(text, QUOTE_BYTES);
    format!("{:?}", prefix)
}

fn invalid(reason: String) -> GuestFault {
    GuestFault::InvalidOutput { reason }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{OrderType, PlaceOrder, SetTimer, Side};

    fn order(market: &str, price: f64, size: f64) -> Action {
        Action::PlaceOrder(PlaceOrder {
            market: market.into(),
            side: Side::Buy,
            price,
            size,
            order_type: OrderType::Gtc,
        })
    }

    fn reason(actions: &[Action]) -> String {
        match check_actions(actions, &SandboxLimits::default()) {
            Err(GuestFault::InvalidOutput { reason }) => reason,
            other => panic!("expected invalid output, got {other:?}"),
        }
    }

    #[test]
    fn ordinary_actions_pass() {
        let actions = vec![
            order("sim-0", 0.42, 10.0),
            Action::CancelOrder("12.0".into()),
            Action::SetTimer(SetTimer { id: 1, at_ms: 5 }),
        ];
        assert_eq!(check_actions(&actions, &SandboxLimits::default()), Ok(()));
    }

    #[test]
    fn non_finite_and_non_positive_numbers_are_refused() {
        assert!(reason(&[order("m", f64::NAN, 1.0)]).contains("price is NaN"));
        assert!(reason(&[order("m", 0.5, f64::INFINITY)]).contains("size is inf"));
        assert!(reason(&[order("m", 0.5, f64::NEG_INFINITY)]).contains("size is -inf"));
        assert!(reason(&[order("m", 0.5, 0.0)]).contains("size is 0"));
        assert!(reason(&[order("m", -0.1, 1.0)]).contains("price is -0.1"));
    }

    #[test]
    fn a_long_id_is_refused_with_a_short_quote() {
        let long = "x".repeat(1 << 20);
        let r = reason(&[Action::CancelOrder(long.clone())]);
        assert!(r.contains("cancel id of 1048576 bytes"), "{r}");
        assert!(
            r.len() < 200,
            "the reason quotes too much: {} bytes",
            r.len()
        );
        let r = reason(&[order(&long[..300], 0.5, 1.0)]);
        assert!(r.starts_with("action 0: market id of 300 bytes"), "{r}");
        let r = reason(&[order("sim-0\nforged log line", 0.5, 1.0)]);
        assert!(r.contains("control characters") && !r.contains('\n'), "{r}");
    }

    #[test]
    fn too_many_actions_and_too_many_bytes_are_refused() {
        let limits = SandboxLimits::default();
        let many = vec![Action::CancelOrder("1.0".into()); limits.max_actions_per_event + 1];
        assert!(matches!(
            check_actions(&many, &limits),
            Err(GuestFault::TooManyActions { .. })
        ));
        let small = SandboxLimits {
            max_output_bytes: 3 * std::mem::size_of::<Action>(),
            ..SandboxLimits::default()
        };
        let four = vec![Action::CancelOrder("1.0".into()); 4];
        assert!(matches!(
            check_actions(&four, &small),
            Err(GuestFault::InvalidOutput { .. })
        ));
    }

    #[test]
    fn snapshots_info_and_messages_are_bounded() {
        let limits = SandboxLimits::default();
        assert!(check_snapshot(limits.max_snapshot_bytes, &limits).is_ok());
        assert!(check_snapshot(limits.max_snapshot_bytes + 1, &limits).is_err());
        let info = StrategyInfo {
            name: "n".repeat(129),
            version: "1".into(),
            state_version: 1,
        };
        assert!(check_info(&info).is_err());
        let m = message(format!("bad\n{}", "y".repeat(10_000)));
        assert!(m.len() <= MAX_MESSAGE_BYTES + 3 && !m.contains('\n'), "{m}");
    }
}
