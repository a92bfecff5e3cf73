//! The hot-swap routes: `swap` (a module upload or a path the host can
//! read, in a [`SwapMode`]), `promote` and `discard` of a shadow.
//!
//! Owns the request shapes and their checks: the module is loaded and
//! checked here, so a bad one gets a 4xx and changes nothing. Never swaps
//! anything itself: the request goes to the strategy's task as a
//! [`Control`], and the cell records the outcome (system events, the
//! strategy's view).

use std::path::PathBuf;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest as _, Sha256};

use super::routes::{control_body, known};
use super::{ApiState, HttpError};
use crate::fleet::{Control, StrategyState};
use crate::supervisor::SwapMode;

type Answer = Result<Response, HttpError>;

/// The JSON form of a swap request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SwapBody {
    /// A module file the host can read.
    path: PathBuf,
    /// [default probation]
    mode: Option<SwapMode>,
    /// For a shadow: its own configuration (the strategy's `config`, as
    /// JSON); it then starts from `init` and a replay of the journal.
    config: Option<serde_json::Value>,
}

/// `?mode=` of a module upload.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SwapQuery {
    mode: Option<String>,
}

fn bad(message: impl Into<String>) -> HttpError {
    HttpError::new(StatusCode::BAD_REQUEST, message)
}

/// Keeps an uploaded module as `DIR/modules/<sha256>.wasm` (written whole,
/// then renamed into place).
fn keep_upload(data_dir: &std::path::Path, bytes: &[u8]) -> Result<PathBuf, HttpError> {
    let digest = hex::encode(Sha256::digest(bytes));
    let dir = data_dir.join("modules");
    let path = dir.join(format!("{digest}.wasm"));
    if path.exists() {
        return Ok(path);
    }
    let internal = |e: std::io::Error| {
        HttpError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{}: cannot keep the uploaded module: {e}", dir.display()),
        )
    };
    std::fs::create_dir_all(&dir).map_err(internal)?;
    let partial = dir.join(format!("{digest}.wasm.partial"));
    std::fs::write(&partial, bytes).map_err(internal)?;
    std::fs::rename(&partial, &path).map_err(internal)?;
    Ok(path)
}

pub(super) async fn swap(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    query: Result<Query<SwapQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let slot = known(&state, &name)?;
    let Query(query) = query.map_err(|e| bad(e.body_text()))?;
    let bytes = body.map_err(|e| HttpError::new(e.status(), e.body_text()))?;
    let query_mode = query
        .mode
        .as_deref()
        .map(str::parse::<SwapMode>)
        .transpose()
        .map_err(bad)?;
    let upload = bytes.starts_with(b"\0asm");
    let (path, mode, config) = if upload {
        (keep_upload(&state.data_dir, &bytes)?, query_mode, None)
    } else {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(bad(
                "body: a module (the component's bytes, `?mode=`) or {\"path\", \"mode\"}",
            ));
        }
        let body: SwapBody = serde_json::from_slice(&bytes).map_err(|e| {
            bad(format!(
                "body: not a module and not a swap request ({{\"path\", \"mode\"}}): {e}"
            ))
        })?;
        if query_mode.is_some() && body.mode.is_some() && query_mode != body.mode {
            return Err(bad(
                "mode: given twice, differently (`?mode=` and the body)",
            ));
        }
        (body.path, body.mode.or(query_mode), body.config)
    };
    let mode = mode.unwrap_or(SwapMode::Probation);
    if config.is_some() && mode != SwapMode::Shadow {
        return Err(bad("config: only a shadow takes its own configuration"));
    }
    let config = config.map(|c| c.to_string());
    let running = matches!(
        slot.state(),
        StrategyState::Running | StrategyState::Backoff | StrategyState::Recovering
    );
    if mode != SwapMode::Direct && !running {
        return Err(HttpError::new(
            StatusCode::CONFLICT,
            format!(
                "strategy `{name}` is {}: a {mode} swap needs it running",
                slot.state()
            ),
        ));
    }
    if mode != SwapMode::Shadow && slot.view().swap.shadow.is_some() {
        return Err(HttpError::new(
            StatusCode::CONFLICT,
            format!("strategy `{name}` has a shadow: promote or discard it first"),
        ));
    }
    let sandbox = state.sandbox.clone();
    let file = path.clone();
    let module = tokio::task::spawn_blocking(move || sandbox.load(&file))
        .await
        .map_err(|e| {
            HttpError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("loading the module: {e}"),
            )
        })?
        .map_err(|e| {
            if upload {
                // Nothing durable is kept for a module that is refused.
                let _ = std::fs::remove_file(&path);
            }
            HttpError::new(StatusCode::UNPROCESSABLE_ENTITY, format!("module: {e}"))
        })?;
    let digest = module.digest();
    let live = slot.view().module_digest;
    let (answer, outcome) = tokio::sync::oneshot::channel();
    if !slot.send(Control::Swap {
        module,
        mode,
        config,
        answer: Some(answer),
    }) {
        return Err(HttpError::new(
            StatusCode::CONFLICT,
            format!("strategy `{name}` has ended"),
        ));
    }
    tracing::info!(strategy = %name, %mode, module = %digest, "swap requested over the API");
    // The swap happens before the strategy's next event; a quiet market
    // may take longer than a request should wait: then it is pending.
    let applied = match tokio::time::timeout(ANSWER_WAIT, outcome).await {
        Ok(Ok(Ok(()))) => true,
        Ok(Ok(Err(reason))) => {
            return Err(HttpError::new(
                StatusCode::CONFLICT,
                format!("strategy `{name}`: swap to {digest} not done: {reason}"),
            ));
        }
        Ok(Err(_)) => {
            return Err(HttpError::new(
                StatusCode::CONFLICT,
                format!("strategy `{name}`: swap to {digest} not done: the strategy went away"),
            ));
        }
        Err(_) => false,
    };
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "strategy": name,
            "requested": "swap",
            "mode": mode,
            "digest": digest,
            "live_digest": live,
            "state": slot.state(),
            "outcome": if applied { "applied" } else { "pending" },
        })),
    )
        .into_response())
}

/// How long a swap request waits for its outcome before it is answered as
/// pending (it is then applied before the strategy's next event, and its
/// outcome shows in the strategy's view and system events).
const ANSWER_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

async fn shadow_control(
    state: &ApiState,
    name: &str,
    body: Result<Bytes, BytesRejection>,
    request: Control,
    action: &str,
) -> Answer {
    control_body(body)?;
    let slot = known(state, name)?;
    let Some(shadow) = slot.view().swap.shadow else {
        return Err(HttpError::new(
            StatusCode::CONFLICT,
            format!("strategy `{name}` has no shadow: swap one in with mode `shadow` first"),
        ));
    };
    if !slot.send(request) {
        return Err(HttpError::new(
            StatusCode::CONFLICT,
            format!("strategy `{name}` has ended"),
        ));
    }
    tracing::info!(strategy = %name, "{action} of the shadow requested over the API");
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "strategy": name,
            "requested": action,
            "shadow_digest": shadow.digest,
            "live_digest": shadow.live_digest,
        })),
    )
        .into_response())
}

pub(super) async fn promote(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    shadow_control(&state, &name, body, Control::Promote, "promote").await
}

pub(super) async fn discard(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    shadow_control(&state, &name, body, Control::Discard, "discard").await
}
