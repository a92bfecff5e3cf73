//! `polybot-host checkpoints list|show|verify`: what the store holds.

use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::{Failure, StoreArgs, block_on};
use crate::store::{Checkpoint, StateStore};

#[derive(Debug, Subcommand)]
pub enum CheckpointsCommand {
    /// List the kept checkpoints of each strategy, newest first.
    List(Selection),
    /// Show one checkpoint's metadata and its state (as text when it is UTF-8).
    Show {
        #[command(flatten)]
        selection: Selection,
        /// The checkpoint's seq [default: the newest].
        #[arg(long)]
        seq: Option<u64>,
    },
    /// Check every kept checkpoint against its checksum; exit 1 if any fails.
    Verify(Selection),
}

impl CheckpointsCommand {
    /// The store flags of whichever subcommand this is.
    pub fn store(&self) -> &StoreArgs {
        match self {
            CheckpointsCommand::List(sel) | CheckpointsCommand::Verify(sel) => &sel.store,
            CheckpointsCommand::Show { selection, .. } => &selection.store,
        }
    }
}

#[derive(Debug, Args)]
pub struct Selection {
    /// Only this strategy [default: all].
    #[arg(long)]
    pub strategy: Option<String>,
    #[command(flatten)]
    pub store: StoreArgs,
}

pub fn checkpoints(command: CheckpointsCommand) -> Result<ExitCode, Failure> {
    block_on(async {
        match command {
            CheckpointsCommand::List(sel) => {
                for (name, kept) in load(&sel).await? {
                    outln!("{name}");
                    for c in kept {
                        outln!(
                            "  seq {:>10}  state v{}  {:>8} bytes  {}  module {}",
                            c.seq,
                            c.state_version,
                            c.state.len(),
                            if c.is_intact() { "ok     " } else { "CORRUPT" },
                            &c.module_digest[..c.module_digest.len().min(12)]
                        );
                    }
                }
                Ok(ExitCode::SUCCESS)
            }
            CheckpointsCommand::Show { selection, seq } => {
                let all = load(&selection).await?;
                let Some((name, kept)) = all.into_iter().next() else {
                    return Err(Failure::bad_input(anyhow::anyhow!(
                        "no strategies in the store"
                    )));
                };
                let found = match seq {
                    Some(seq) => kept.into_iter().find(|c| c.seq == seq),
                    None => kept.into_iter().next(),
                };
                let Some(c) = found else {
                    return Err(Failure::bad_input(anyhow::anyhow!(
                        "{name}: no such checkpoint"
                    )));
                };
                outln!("strategy       {name}");
                outln!("seq            {}", c.seq);
                outln!("event time ms  {}", c.event_time_ms);
                outln!("state version  {}", c.state_version);
                outln!("module         {}", c.module_digest);
                outln!(
                    "checksum       {} ({})",
                    hex::encode(c.checksum),
                    if c.is_intact() { "ok" } else { "CORRUPT" }
                );
                print_state(&c.state);
                Ok(ExitCode::SUCCESS)
            }
            CheckpointsCommand::Verify(sel) => {
                let mut bad = 0;
                let mut total = 0;
                for (name, kept) in load(&sel).await? {
                    for c in kept {
                        total += 1;
                        if !c.is_intact() {
                            bad += 1;
                            outln!("{name}: checkpoint at seq {} fails its checksum", c.seq);
                        }
                    }
                }
                outln!("{total} checkpoints checked, {bad} corrupt");
                Ok(if bad == 0 {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                })
            }
        }
    })
}

/// How much of a binary state is shown.
const BINARY_PREVIEW: usize = 256;

/// The state as text when it is UTF-8 (JSON, say), else as a hex dump of
/// its first bytes.
fn print_state(state: &[u8]) {
    if let Ok(text) = std::str::from_utf8(state) {
        outln!("state          {text}");
        return;
    }
    outln!("state          {} bytes of binary:", state.len());
    for (i, line) in state.chunks(16).take(BINARY_PREVIEW / 16).enumerate() {
        let hex: Vec<String> = line.iter().map(|b| format!("{b:02x}")).collect();
        let ascii: String = line
            .iter()
            .map(|&b| if b.is_ascii_graphic() { b as char } else { '.' })
            .collect();
        outln!("  {:08x}  {:<47}  {ascii}", i * 16, hex.join(" "));
    }
    if state.len() > BINARY_PREVIEW {
        outln!("  … {} more bytes", state.len() - BINARY_PREVIEW);
    }
}

async fn load(sel: &Selection) -> Result<Vec<(String, Vec<Checkpoint>)>, Failure> {
    let store = sel.store.open_existing().await?.store;
    let names: Vec<String> = match &sel.strategy {
        Some(name) => vec![name.clone()],
        None => store
            .status()
            .await
            .map_err(Failure::runtime)?
            .into_iter()
            .map(|s| s.name)
            .collect(),
    };
    let mut out = Vec::new();
    for name in names {
        let kept = store.checkpoints(&name).await.map_err(Failure::runtime)?;
        if kept.is_empty() && sel.strategy.is_some() {
            return Err(Failure::bad_input(anyhow::anyhow!(
                "{name}: no checkpoints in {}",
                store.location().describe()
            )));
        }
        out.push((name, kept));
    }
    Ok(out)
}
