//! `polybot-host swap|promote|discard`: thin clients of a running host's
//! HTTP API for hot swaps (see `api`): upload a module to swap in on
//! probation, as a shadow or directly; promote or discard a shadow.
//!
//! Owns the requests and their one-line answers only; every swap is the
//! host's. The token is `POLYBOT_API_TOKEN` or `DIR/api-token`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::control::{Body, call, token};
use super::{Failure, block_on};
use crate::api::DEFAULT_ADDR;
use crate::supervisor::SwapMode;

/// Where the host's API is and where its token is.
#[derive(Debug, Args)]
pub struct ApiArgs {
    /// The host's API address.
    #[arg(long, value_name = "ADDR", env = "POLYBOT_HTTP", default_value = DEFAULT_ADDR)]
    pub http: String,

    /// The host's data directory, where its generated token is (`api-token`).
    #[arg(long, value_name = "DIR", default_value = "data")]
    pub data_dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct SwapArgs {
    /// The strategy whose module is replaced.
    #[arg(long, value_name = "NAME")]
    pub strategy: String,

    /// The new module (a `.wasm` component); its bytes are uploaded, so the
    /// host need not see this file.
    #[arg(long, value_name = "PATH")]
    pub module: PathBuf,

    /// `probation`: replace it, and go back to the old module automatically
    /// if the new one faults more than `[swap] probation_faults` times or
    /// diverges within its first `[swap] probation_events` events.
    /// `shadow`: run it beside the live module on the same events, its
    /// actions recorded and filled on paper, never sent, until `promote` or
    /// `discard`. `direct`: replace it for good at once.
    #[arg(long, value_name = "MODE", default_value = "probation")]
    pub mode: SwapMode,

    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Debug, Args)]
pub struct ShadowArgs {
    /// The strategy whose shadow is promoted or discarded.
    #[arg(long, value_name = "NAME")]
    pub strategy: String,

    #[command(flatten)]
    pub api: ApiArgs,
}

pub fn swap(args: SwapArgs) -> Result<ExitCode, Failure> {
    let token = token(&args.api.data_dir)?;
    let bytes = std::fs::read(&args.module)
        .map_err(|e| Failure::bad_input(anyhow::anyhow!("{}: {e}", args.module.display())))?;
    block_on(async move {
        let path = format!("/api/strategies/{}/swap?mode={}", args.strategy, args.mode);
        let value = call(
            &args.api.http,
            &token,
            reqwest::Method::POST,
            &path,
            Body::Bytes(bytes),
        )
        .await?;
        outln!(
            "{} swap of {} requested: module {} (live {}); see `GET /api/strategies/{}`",
            value["mode"].as_str().unwrap_or_default(),
            args.strategy,
            value["digest"].as_str().unwrap_or_default(),
            value["live_digest"].as_str().unwrap_or_default(),
            args.strategy
        );
        Ok(ExitCode::SUCCESS)
    })
}

/// `promote` (true) or `discard` (false) the strategy's shadow.
pub fn shadow(args: ShadowArgs, promote: bool) -> Result<ExitCode, Failure> {
    let token = token(&args.api.data_dir)?;
    let action = if promote { "promote" } else { "discard" };
    block_on(async move {
        let path = format!("/api/strategies/{}/{action}", args.strategy);
        let value = call(
            &args.api.http,
            &token,
            reqwest::Method::POST,
            &path,
            Body::None,
        )
        .await?;
        outln!(
            "{action} of {}'s shadow (module {}) requested",
            args.strategy,
            value["shadow_digest"].as_str().unwrap_or_default()
        );
        Ok(ExitCode::SUCCESS)
    })
}
