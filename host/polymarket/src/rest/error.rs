//! The REST client's error type, classified for the caller's retry policy.
//!
//! Owns the mapping from an HTTP outcome (status, `Retry-After`, error body, transport failure)
//! to one [`ClobError`] variant that names the endpoint, and [`ClobError::is_retryable`]. It
//! decides *what kind* of failure happened; whether and when to retry is the execution layer's
//! call (design: "venue never retries or breaks circuits itself").

use std::time::Duration;

use crate::auth::AuthError;
use crate::types::ParseError;

/// Venue error codes the host reacts to specifically.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectCode {
    InvalidOrderMinTickSize,
    InvalidOrderMinSize,
    /// The same signed order was already accepted: the original is the one to look up.
    InvalidOrderDuplicated,
    InvalidOrderNotEnoughBalance,
    FokOrderNotFilled,
    ExecutionError,
    OrderDelayed,
    MarketNotReady,
    InvalidPostOnly,
    InvalidSignature,
}

impl RejectCode {
    const ALL: [(&'static str, RejectCode); 10] = [
        (
            "INVALID_ORDER_MIN_TICK_SIZE",
            RejectCode::InvalidOrderMinTickSize,
        ),
        ("INVALID_ORDER_MIN_SIZE", RejectCode::InvalidOrderMinSize),
        (
            "INVALID_ORDER_DUPLICATED",
            RejectCode::InvalidOrderDuplicated,
        ),
        (
            "INVALID_ORDER_NOT_ENOUGH_BALANCE",
            RejectCode::InvalidOrderNotEnoughBalance,
        ),
        ("FOK_ORDER_NOT_FILLED_ERROR", RejectCode::FokOrderNotFilled),
        ("EXECUTION_ERROR", RejectCode::ExecutionError),
        ("ORDER_DELAYED", RejectCode::OrderDelayed),
        ("MARKET_NOT_READY", RejectCode::MarketNotReady),
        ("INVALID_POST_ONLY_ORDER", RejectCode::InvalidPostOnly),
        ("INVALID_SIGNATURE", RejectCode::InvalidSignature),
    ];

    /// Finds a known code in a message; codes appear alone or as a prefix of prose.
    pub fn find(message: &str) -> Option<RejectCode> {
        let upper = message.to_ascii_uppercase();
        RejectCode::ALL
            .iter()
            .find(|(name, _)| upper.contains(name))
            .map(|(_, code)| *code)
            // Some deployments phrase it in words only.
            .or_else(|| {
                upper
                    .contains("DUPLICATED")
                    .then_some(RejectCode::InvalidOrderDuplicated)
            })
    }
}

/// How a request failed to complete at the transport level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// Could not connect (refused, DNS, TLS).
    Connect,
    /// The request timeout elapsed.
    Timeout,
    /// The connection broke after it was made (reset, closed mid-body). The request may have
    /// been processed: for `POST /order`, look the order up by hash before re-sending.
    Interrupted,
}

#[derive(Debug, thiserror::Error)]
pub enum ClobError {
    #[error("{endpoint}: rate limited (429){}", retry_after.map(|d| format!(", retry after {d:?}")).unwrap_or_default())]
    RateLimited {
        endpoint: &'static str,
        retry_after: Option<Duration>,
    },
    #[error("{endpoint}: too early (425): matching engine restarting")]
    TooEarly { endpoint: &'static str },
    #[error("{endpoint}: unavailable (503{}): {message}", if *cancel_only { ", cancel-only" } else { "" })]
    Unavailable {
        endpoint: &'static str,
        cancel_only: bool,
        message: String,
    },
    #[error("{endpoint}: server error {status}: {message}")]
    Server {
        endpoint: &'static str,
        status: u16,
        message: String,
    },
    #[error("{endpoint}: unauthorized (401): {message}")]
    Unauthorized {
        endpoint: &'static str,
        message: String,
    },
    #[error("{endpoint}: rejected ({status}): {message}")]
    Rejected {
        endpoint: &'static str,
        status: u16,
        code: Option<RejectCode>,
        message: String,
    },
    #[error("{endpoint}: malformed response: {source}")]
    Malformed {
        endpoint: &'static str,
        #[source]
        source: ParseError,
    },
    #[error("{endpoint}: transport failure ({kind:?}): {message}")]
    Transport {
        endpoint: &'static str,
        kind: TransportKind,
        message: String,
    },
    #[error("{endpoint}: no API credentials configured")]
    NoCredentials { endpoint: &'static str },
    #[error("{endpoint}: {source}")]
    Auth {
        endpoint: &'static str,
        #[source]
        source: AuthError,
    },
}

impl ClobError {
    /// True for failures that may succeed if the same request is sent again later: 429, 425,
    /// 503, 5xx, transport failures, and malformed bodies (truncations and proxy error pages
    /// are transient; a persistent mismatch is caught by the caller's circuit breaker).
    /// Rejections, auth failures and missing credentials are permanent.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ClobError::RateLimited { .. }
                | ClobError::TooEarly { .. }
                | ClobError::Unavailable { .. }
                | ClobError::Server { .. }
                | ClobError::Transport { .. }
                | ClobError::Malformed { .. }
        )
    }

    /// The server's `Retry-After`, when it sent one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ClobError::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The venue already has this exact order (same hash).
    pub fn is_duplicate(&self) -> bool {
        matches!(
            self,
            ClobError::Rejected {
                code: Some(RejectCode::InvalidOrderDuplicated),
                ..
            }
        )
    }

    /// The endpoint that failed, e.g. `"POST /order"`.
    pub fn endpoint(&self) -> &'static str {
        match self {
            ClobError::RateLimited { endpoint, .. }
            | ClobError::TooEarly { endpoint }
            | ClobError::Unavailable { endpoint, .. }
            | ClobError::Server { endpoint, .. }
            | ClobError::Unauthorized { endpoint, .. }
            | ClobError::Rejected { endpoint, .. }
            | ClobError::Malformed { endpoint, .. }
            | ClobError::Transport { endpoint, .. }
            | ClobError::NoCredentials { endpoint }
            | ClobError::Auth { endpoint, .. } => endpoint,
        }
    }

    /// Classifies a non-2xx response.
    pub(crate) fn from_status(
        endpoint: &'static str,
        status: u16,
        retry_after: Option<&str>,
        body: &[u8],
    ) -> ClobError {
        let message = crate::types::parse_error_body(body)
            .unwrap_or_else(|| crate::types::snippet(body).trim().to_string());
        match status {
            429 => ClobError::RateLimited {
                endpoint,
                // Only the delta-seconds form; an HTTP date falls back to the caller's backoff.
                retry_after: retry_after
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs),
            },
            425 => ClobError::TooEarly { endpoint },
            503 => ClobError::Unavailable {
                endpoint,
                cancel_only: message
                    .to_ascii_lowercase()
                    .replace(['-', '_'], " ")
                    .contains("cancel only"),
                message,
            },
            401 => ClobError::Unauthorized { endpoint, message },
            500..=599 => ClobError::Server {
                endpoint,
                status,
                message,
            },
            _ => ClobError::Rejected {
                endpoint,
                status,
                code: RejectCode::find(&message),
                message,
            },
        }
    }

    pub(crate) fn from_reqwest(endpoint: &'static str, e: &reqwest::Error) -> ClobError {
        let kind = if e.is_timeout() {
            TransportKind::Timeout
        } else if e.is_connect() {
            TransportKind::Connect
        } else {
            TransportKind::Interrupted
        };
        // The top-level message is terse ("error sending request"); the cause says why.
        let mut message = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        ClobError::Transport {
            endpoint,
            kind,
            message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified() {
        let e = ClobError::from_status("GET /book", 429, Some("3"), br#"{"error":"slow down"}"#);
        assert_eq!(e.retry_after(), Some(Duration::from_secs(3)));
        assert!(e.is_retryable());
        assert!(ClobError::from_status("x", 425, None, b"").is_retryable());
        let e = ClobError::from_status(
            "x",
            503,
            None,
            br#"{"error":"Trading is currently in cancel-only mode"}"#,
        );
        assert!(matches!(
            e,
            ClobError::Unavailable {
                cancel_only: true,
                ..
            }
        ));
        let e = ClobError::from_status(
            "x",
            503,
            None,
            br#"{"error":"Trading is currently disabled"}"#,
        );
        assert!(matches!(
            e,
            ClobError::Unavailable {
                cancel_only: false,
                ..
            }
        ));
        assert!(matches!(
            ClobError::from_status("x", 502, None, b"<html>"),
            ClobError::Server { status: 502, .. }
        ));
        let e = ClobError::from_status("x", 401, None, b"");
        assert!(matches!(e, ClobError::Unauthorized { .. }) && !e.is_retryable());
        let e = ClobError::from_status(
            "POST /order",
            400,
            None,
            br#"{"error":"INVALID_ORDER_DUPLICATED: order 0x1 already exists"}"#,
        );
        assert!(e.is_duplicate() && !e.is_retryable());
        assert_eq!(e.endpoint(), "POST /order");
        assert_eq!(
            RejectCode::find("order is invalid. Duplicated."),
            Some(RejectCode::InvalidOrderDuplicated)
        );
        assert_eq!(
            RejectCode::find("INVALID_ORDER_MIN_SIZE: x"),
            Some(RejectCode::InvalidOrderMinSize)
        );
    }
}
