//! `polybot-host control …`: a thin client of a running host's HTTP API
//! (see `api`), so an operator never needs curl: pause, resume or restart a
//! strategy, halt every strategy, list them.
//!
//! Owns the requests and their one-line answers only; every action is the
//! API's. The token is `POLYBOT_API_TOKEN` or `DIR/api-token`; it is never
//! printed.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::{Failure, block_on};
use crate::api::auth::TOKEN_ENV;
use crate::api::{DEFAULT_ADDR, Token};

#[derive(Debug, Args)]
pub struct ControlArgs {
    #[command(subcommand)]
    pub action: Action,

    /// The host's API address.
    #[arg(long, value_name = "ADDR", env = "POLYBOT_HTTP", default_value = DEFAULT_ADDR, global = true)]
    pub http: String,

    /// The host's data directory, where its generated token is (`api-token`).
    #[arg(long, value_name = "DIR", default_value = "data", global = true)]
    pub data_dir: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum Action {
    /// Pause a strategy: it finishes its event, checkpoints and waits.
    Pause {
        #[arg(long, value_name = "NAME")]
        strategy: String,
    },
    /// Start a paused strategy again.
    Resume {
        #[arg(long, value_name = "NAME")]
        strategy: String,
    },
    /// Restart a strategy from its journal.
    Restart {
        #[arg(long, value_name = "NAME")]
        strategy: String,
        /// Recorded with the restart.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Pause every strategy.
    Halt {
        /// Recorded with the halt.
        #[arg(long)]
        reason: Option<String>,
    },
    /// List the strategies (name, state, restarts, last seq, PnL).
    List {
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
}

/// The API token: `POLYBOT_API_TOKEN`, or the host's `DIR/api-token`.
pub(super) fn token(data_dir: &std::path::Path) -> Result<Token, Failure> {
    match Token::from_env().map_err(Failure::bad_input)? {
        Some(token) => Ok(token),
        None => {
            let path = Token::path(data_dir);
            let text = std::fs::read_to_string(&path).map_err(|e| {
                Failure::bad_input(anyhow::anyhow!(
                    "{}: cannot read the API token ({e}); set {TOKEN_ENV} or --data-dir",
                    path.display()
                ))
            })?;
            Ok(Token::new(text.trim().to_string(), false))
        }
    }
}

/// A request body: JSON, or raw bytes (a module upload).
pub(super) enum Body {
    None,
    Json(Value),
    Bytes(Vec<u8>),
}

/// Sends one request to the API and gives its JSON answer; a 4xx answer is
/// the caller's bad input, anything else a runtime failure, each one line.
pub(super) async fn call(
    http: &str,
    token: &Token,
    method: reqwest::Method,
    path: &str,
    body: Body,
) -> Result<Value, Failure> {
    let base = format!("http://{}", http.trim_start_matches("http://"));
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .map_err(Failure::runtime)?;
    let mut request = client
        .request(method, format!("{base}{path}"))
        .bearer_auth(token.secret());
    request = match body {
        Body::None => request,
        Body::Json(value) => request.json(&value),
        Body::Bytes(bytes) => request
            .header(reqwest::header::CONTENT_TYPE, "application/wasm")
            .body(bytes),
    };
    let response = request
        .send()
        .await
        .map_err(|e| Failure::runtime(anyhow::anyhow!("cannot reach the API at {http}: {e}")))?;
    let status = response.status();
    let value: Value = response.json().await.map_err(|e| {
        Failure::runtime(anyhow::anyhow!("{http}: the API's answer is not JSON: {e}"))
    })?;
    if !status.is_success() {
        let message = value["error"].as_str().unwrap_or("no message");
        let failure = anyhow::anyhow!("{http} {path}: {status}: {message}");
        return Err(if status.is_client_error() {
            Failure::bad_input(failure)
        } else {
            Failure::runtime(failure)
        });
    }
    Ok(value)
}

pub fn control(args: ControlArgs) -> Result<ExitCode, Failure> {
    let token = token(&args.data_dir)?;
    block_on(async move {
        let (method, path, body) = match &args.action {
            Action::Pause { strategy } => (
                reqwest::Method::POST,
                format!("/api/strategies/{strategy}/pause"),
                None,
            ),
            Action::Resume { strategy } => (
                reqwest::Method::POST,
                format!("/api/strategies/{strategy}/resume"),
                None,
            ),
            Action::Restart { strategy, reason } => (
                reqwest::Method::POST,
                format!("/api/strategies/{strategy}/restart"),
                Some(json!({ "reason": reason })),
            ),
            Action::Halt { reason } => (
                reqwest::Method::POST,
                "/api/halt".to_string(),
                Some(json!({ "reason": reason })),
            ),
            Action::List { .. } => (reqwest::Method::GET, "/api/strategies".to_string(), None),
        };
        let body = body.map_or(Body::None, Body::Json);
        let value = call(&args.http, &token, method, &path, body).await?;
        match &args.action {
            Action::List { json: true } => outln!("{value:#}"),
            Action::List { json: false } => {
                outln!(
                    "{:<24} {:<11} {:>8} {:>10} {:>10}",
                    "strategy",
                    "state",
                    "restarts",
                    "last seq",
                    "pnl"
                );
                for s in value["strategies"].as_array().into_iter().flatten() {
                    outln!(
                        "{:<24} {:<11} {:>8} {:>10} {:>+10.2}",
                        s["name"].as_str().unwrap_or_default(),
                        s["state"].as_str().unwrap_or_default(),
                        s["restarts"].as_u64().unwrap_or_default(),
                        s["last_seq"].as_u64().unwrap_or_default(),
                        s["pnl"].as_f64().unwrap_or_default()
                    );
                }
            }
            Action::Halt { .. } => {
                let halted = value["halted"].as_array().map_or(0, Vec::len);
                outln!(
                    "placement halted for {halted} strategies (they keep running; `resume` lifts it)"
                );
            }
            Action::Pause { strategy }
            | Action::Resume { strategy }
            | Action::Restart { strategy, .. } => outln!(
                "{} requested for {strategy} (it was {})",
                value["requested"].as_str().unwrap_or_default(),
                value["state"].as_str().unwrap_or_default()
            ),
        }
        Ok(ExitCode::SUCCESS)
    })
}
