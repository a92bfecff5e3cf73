//! Fault plans for the local server: what to break, where, and how often.
//!
//! Owns the plan format (JSON, from a file, from `SimOptions`, or `POST /admin/faults`), the
//! decision for one request ("which fault, if any, fires now") and the HTTP response each fault
//! produces. Counts are the deterministic way to use it (tests say "the next 2 requests to
//! `/book` get 429"); probabilities draw from a seeded generator, so a run with the same seed
//! and the same request order injects the same faults.
//!
//! Does not own: the WebSocket side of a stall (the `ws` route asks [`FaultEngine::pick`] with
//! endpoint `ws` before each data frame and then goes silent itself).

use std::path::Path;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::Shared;
use std::sync::Arc;

/// One kind of failure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// Delay the response (combines with any other fault that fires).
    Latency { ms: u64 },
    /// 429, with `Retry-After: <s>` when given.
    RateLimited {
        #[serde(default)]
        retry_after_s: Option<u64>,
    },
    /// 425: matching engine restarting.
    TooEarly,
    /// 503: cancel-only mode, or trading disabled.
    Unavailable {
        #[serde(default)]
        cancel_only: bool,
    },
    /// 500.
    ServerError,
    /// 200 with a truncated JSON body.
    MalformedJson,
    /// The connection is cut before a response body arrives (the request is not processed).
    DropConnection,
    /// The request *is* processed, then the connection is cut: the acknowledgement is lost.
    LoseResponse,
    /// WebSocket only: the socket stays open but nothing more is sent, not even `PONG`.
    WsStall,
    /// 400 `INVALID_ORDER_DUPLICATED` without processing the request.
    DuplicateOrder,
    /// The request is served, with `Poly-RateLimit-Warning: true`: a
    /// per-signer bucket is over its limit (the venue's warning mode).
    RateLimitWarning,
}

/// Where a fault applies and how often.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultRule {
    /// `"*"` (every HTTP endpoint), `"ws"`, a path (`"/book"`), or method and path
    /// (`"POST /order"`).
    #[serde(default = "any_endpoint")]
    pub endpoint: String,
    pub fault: Fault,
    /// Fire this many times, then stop. Without `count` or `probability` the rule always fires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// Fire with this probability (from the plan's seeded generator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probability: Option<f64>,
    /// Let this many matching requests through before the rule starts firing.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub skip: u32,
}

fn any_endpoint() -> String {
    "*".to_string()
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A list of rules; the first non-latency rule that fires wins, latencies add up.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FaultPlan {
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub rules: Vec<FaultRule>,
}

#[derive(Debug, thiserror::Error)]
pub enum FaultPlanError {
    #[error("fault plan {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("fault plan {path}: {source}")]
    Json {
        path: std::path::PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

impl FaultPlan {
    /// One rule that fires `count` times on `endpoint`.
    pub fn times(endpoint: &str, fault: Fault, count: u32) -> Self {
        FaultPlan::default().and(endpoint, fault, count)
    }

    /// Adds a rule that fires `count` times on `endpoint`.
    pub fn and(mut self, endpoint: &str, fault: Fault, count: u32) -> Self {
        self.rules.push(FaultRule {
            endpoint: endpoint.to_string(),
            fault,
            count: Some(count),
            probability: None,
            skip: 0,
        });
        self
    }

    /// Reads a plan from a JSON file.
    ///
    /// # Errors
    /// [`FaultPlanError`] naming the file.
    pub fn from_file(path: &Path) -> Result<Self, FaultPlanError> {
        let text = std::fs::read_to_string(path).map_err(|source| FaultPlanError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| FaultPlanError::Json {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// A plan being executed: remaining counts and the generator state.
#[derive(Debug, Default)]
pub(crate) struct FaultEngine {
    plan: FaultPlan,
    rng: u64,
}

impl FaultEngine {
    pub(crate) fn new(plan: FaultPlan) -> Self {
        let rng = plan.seed ^ 0x9E37_79B9_7F4A_7C15;
        FaultEngine { plan, rng }
    }

    pub(crate) fn plan(&self) -> &FaultPlan {
        &self.plan
    }

    /// splitmix64: tiny, seedable, good enough to decide "fire or not".
    fn next_unit(&mut self) -> f64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Decides the faults for one request to `method path` (`method` is `"WS"` for the socket).
    pub(crate) fn pick(&mut self, method: &str, path: &str) -> (Duration, Option<Fault>) {
        let mut latency = Duration::ZERO;
        let mut chosen = None;
        for i in 0..self.plan.rules.len() {
            let rule = &self.plan.rules[i];
            let is_latency = matches!(rule.fault, Fault::Latency { .. });
            if (!is_latency && chosen.is_some()) || !endpoint_matches(&rule.endpoint, method, path)
            {
                continue;
            }
            if rule.count == Some(0) {
                continue;
            }
            if rule.skip > 0 {
                self.plan.rules[i].skip -= 1;
                continue;
            }
            if let Some(p) = rule.probability
                && self.next_unit() >= p
            {
                continue;
            }
            let rule = &mut self.plan.rules[i];
            if let Some(n) = rule.count.as_mut() {
                *n -= 1;
            }
            match &rule.fault {
                Fault::Latency { ms } => latency += Duration::from_millis(*ms),
                other => chosen = Some(other.clone()),
            }
        }
        (latency, chosen)
    }
}

fn endpoint_matches(pattern: &str, method: &str, path: &str) -> bool {
    let is_ws = method == "WS";
    match pattern {
        "*" => !is_ws,
        "ws" | "WS" => is_ws,
        p => match p.split_once(' ') {
            Some((m, p)) => m.eq_ignore_ascii_case(method) && p == path,
            None => p == path,
        },
    }
}

fn error_json(status: StatusCode, msg: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "error": msg }))).into_response()
}

/// A response whose body fails at once: the client sees the connection cut mid-response.
fn cut_connection() -> Response {
    let stream = futures_util::stream::once(async {
        Err::<axum::body::Bytes, std::io::Error>(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "fault injection: connection dropped",
        ))
    });
    Response::new(Body::from_stream(stream))
}

/// The HTTP response a fault produces (`None` for faults that do not replace the response).
fn fault_response(fault: &Fault) -> Option<Response> {
    Some(match fault {
        Fault::RateLimited { retry_after_s } => {
            let mut r = error_json(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests");
            if let Some(s) = retry_after_s
                && let Ok(v) = HeaderValue::from_str(&s.to_string())
            {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            r
        }
        Fault::TooEarly => error_json(
            StatusCode::from_u16(425).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            "Too Early: matching engine is restarting",
        ),
        Fault::Unavailable { cancel_only: true } => error_json(
            StatusCode::SERVICE_UNAVAILABLE,
            "Trading is currently in cancel-only mode",
        ),
        Fault::Unavailable { cancel_only: false } => error_json(
            StatusCode::SERVICE_UNAVAILABLE,
            "Trading is currently disabled",
        ),
        Fault::ServerError => {
            error_json(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
        }
        Fault::MalformedJson => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"market":"0x5f","asset_id":"1","bids":[{"price":"0.4"#,
        )
            .into_response(),
        Fault::DropConnection => cut_connection(),
        Fault::DuplicateOrder => error_json(
            StatusCode::BAD_REQUEST,
            "INVALID_ORDER_DUPLICATED: order already exists",
        ),
        Fault::Latency { .. } | Fault::LoseResponse | Fault::WsStall | Fault::RateLimitWarning => {
            return None;
        }
    })
}

/// Axum middleware applying the plan to every HTTP route it wraps.
pub(crate) async fn middleware(
    State(shared): State<Arc<Shared>>,
    req: Request,
    next: Next,
) -> Response {
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let (latency, fault) = shared.faults().pick(&method, &path);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    match fault {
        None => next.run(req).await,
        Some(Fault::LoseResponse) => {
            // Let the request take effect, then lose the answer.
            let _ = next.run(req).await;
            cut_connection()
        }
        Some(Fault::RateLimitWarning) => {
            let mut r = next.run(req).await;
            r.headers_mut().insert(
                crate::rest::RATE_LIMIT_WARNING,
                HeaderValue::from_static("true"),
            );
            r
        }
        Some(f) => match fault_response(&f) {
            Some(r) => r,
            None => next.run(req).await,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_consumed_and_latency_adds() {
        let plan = FaultPlan::times("GET /book", Fault::TooEarly, 2)
            .and("*", Fault::Latency { ms: 5 }, 1)
            .and("/book", Fault::ServerError, 1);
        let mut e = FaultEngine::new(plan);
        assert_eq!(
            e.pick("GET", "/book"),
            (Duration::from_millis(5), Some(Fault::TooEarly))
        );
        assert_eq!(
            e.pick("GET", "/book"),
            (Duration::ZERO, Some(Fault::TooEarly))
        );
        assert_eq!(
            e.pick("GET", "/book"),
            (Duration::ZERO, Some(Fault::ServerError))
        );
        assert_eq!(e.pick("GET", "/book"), (Duration::ZERO, None));
        assert_eq!(e.pick("WS", "/ws/market"), (Duration::ZERO, None));
    }

    #[test]
    fn probability_is_seeded_and_skip_delays() {
        let plan = FaultPlan {
            seed: 7,
            rules: vec![FaultRule {
                endpoint: "ws".into(),
                fault: Fault::WsStall,
                count: None,
                probability: Some(0.5),
                skip: 3,
            }],
        };
        let run = |plan: FaultPlan| {
            let mut e = FaultEngine::new(plan);
            (0..64)
                .map(|_| e.pick("WS", "/ws/market").1.is_some())
                .collect::<Vec<_>>()
        };
        let a = run(plan.clone());
        assert_eq!(a, run(plan));
        assert!(!a[0] && !a[1] && !a[2]);
        let fired = a.iter().filter(|f| **f).count();
        assert!((16..=48).contains(&fired), "{fired}");
    }

    #[test]
    fn plan_json_round_trips() {
        let text = r#"{"seed":1,"rules":[{"endpoint":"POST /order","fault":{"kind":"rate_limited","retry_after_s":2},"count":1},
            {"fault":{"kind":"unavailable","cancel_only":true},"probability":0.1}]}"#;
        let plan: FaultPlan = serde_json::from_str(text).expect("plan");
        assert_eq!(plan.rules[1].endpoint, "*");
        assert_eq!(
            plan.rules[0].fault,
            Fault::RateLimited {
                retry_after_s: Some(2)
            }
        );
        let back: FaultPlan =
            serde_json::from_str(&serde_json::to_string(&plan).expect("ser")).expect("de");
        assert_eq!(back, plan);
    }
}
