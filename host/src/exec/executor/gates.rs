//! What decides whether an order may go now: the venue's windows (425 and
//! the post-only minutes after it, 503 cancel-only or disabled), a placement
//! hold, the rate limiter and the circuit breakers; and how each change of
//! them is reported (`venue-status` events and system notes).
//!
//! Part of [`Executor`]; never sends anything.

use std::time::Duration;

use tokio::time::Instant;

use super::{Executor, Window, group_index};
use crate::contract::{EventKind, OrderType, PlaceOrder, VenueHealth, VenueStatus};
use crate::exec::breaker::{BreakerState, EndpointGroup, Gate};
use crate::exec::output::{ExecOutput, NoteKind};
use crate::venue::{ExecutionClient, Halt, VenueError};

impl Executor {
    /// Window, breaker, limiter: may an order go now?
    pub(super) fn gate_place(
        &mut self,
        order: &PlaceOrder,
        out: &mut ExecOutput,
    ) -> Result<Gate, String> {
        let now = Instant::now();
        match self.window {
            Some(Window::Halted { probe_at, .. }) if now < probe_at => {
                return Ok(Gate::Wait(probe_at - now));
            }
            Some(Window::PostOnly { until })
                if now < until && order.order_type != OrderType::Gtc =>
            {
                return Err(format!(
                    "the venue accepts only resting orders for {} s after a matching-engine restart",
                    (until - now).as_secs()
                ));
            }
            Some(Window::PostOnly { until }) if now < until => {}
            Some(Window::PostOnly { .. }) => {
                self.window = None;
                out.note(NoteKind::Window, "post-only window over");
            }
            _ => {}
        }
        // The limiter first: a half-open breaker's probe permit is not wasted on a wait.
        if let Gate::Wait(d) = self.limits.check(EndpointGroup::Orders) {
            return Ok(Gate::Wait(d));
        }
        let gate = self.breakers[0].permit(now);
        self.report_breaker(0, out);
        Ok(gate)
    }

    pub(super) fn why_waiting(&self) -> String {
        if let Some(Window::Halted { halt, .. }) = self.window {
            return format!("venue {halt}");
        }
        if self.breakers[0].state() != BreakerState::Closed {
            return "orders circuit open".into();
        }
        "rate limited".into()
    }

    pub(super) fn enter_window(&mut self, halt: Halt, e: &VenueError, out: &mut ExecOutput) {
        let probe = Duration::from_millis(match halt {
            Halt::TooEarly => self.cfg.windows.too_early_probe_ms,
            Halt::CancelOnly | Halt::Disabled => self.cfg.windows.halted_probe_ms,
        });
        let first = !matches!(self.window, Some(Window::Halted { .. }));
        self.window = Some(Window::Halted {
            halt,
            probe_at: Instant::now() + probe,
        });
        if first {
            out.note(
                NoteKind::Window,
                format!("{e}: placement paused, cancels still go"),
            );
            self.status(
                VenueHealth::Degraded,
                format!("{halt}: placement paused, cancels still go"),
                out,
            );
        }
    }

    /// An order went through: a halt window is over.
    pub(super) fn window_passed(&mut self, out: &mut ExecOutput) {
        if let Some(Window::Halted { halt, .. }) = self.window {
            self.window = (halt == Halt::TooEarly).then(|| Window::PostOnly {
                until: Instant::now() + Duration::from_millis(self.cfg.windows.post_only_ms),
            });
            let detail = match halt {
                Halt::TooEarly => format!(
                    "matching engine back; post-only for {} s",
                    self.cfg.windows.post_only_ms / 1000
                ),
                _ => "trading re-enabled; placement resumes".to_string(),
            };
            out.note(NoteKind::Window, detail.clone());
            self.status(VenueHealth::Recovered, detail, out);
        }
    }

    /// New `Poly-RateLimit-Warning`s: new orders pause, cancels go on.
    pub(super) fn check_warnings(&mut self, client: &dyn ExecutionClient, out: &mut ExecOutput) {
        let n = client.rate_limit_warnings();
        if n > self.warnings_seen {
            self.warnings_seen = n;
            self.limits.on_warning();
            out.note(
                NoteKind::Window,
                format!(
                    "venue warns of its rate limit: new orders pause {} ms, cancels go on",
                    self.cfg.limits.warning_pause_ms
                ),
            );
        }
    }

    pub(super) fn record(
        &mut self,
        group: EndpointGroup,
        failed: bool,
        took: Duration,
        out: &mut ExecOutput,
    ) {
        let i = group_index(group);
        self.breakers[i].record(Instant::now(), failed, took);
        self.report_breaker(i, out);
    }

    pub(super) fn report_breaker(&mut self, i: usize, out: &mut ExecOutput) {
        for t in self.breakers[i].take_transitions() {
            out.note(NoteKind::Breaker, t.detail());
            match t.to {
                BreakerState::Open => self.status(VenueHealth::CircuitOpen, t.detail(), out),
                BreakerState::Closed => self.status(VenueHealth::Recovered, t.detail(), out),
                BreakerState::HalfOpen => {}
            }
        }
    }

    pub(super) fn status(&mut self, health: VenueHealth, detail: String, out: &mut ExecOutput) {
        self.degraded = !matches!(health, VenueHealth::Recovered | VenueHealth::Healthy);
        out.events.push(EventKind::VenueStatus(VenueStatus {
            venue: self.venue.clone(),
            health,
            detail,
        }));
    }
}
