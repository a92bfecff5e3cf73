//! The command line: argument parsing, logging set-up, and exit codes.
//!
//! Exit codes: 0 success; 1 the run failed (a strategy went fatal, the host
//! could not start its runtime); 2 bad input (arguments, a module that is not a
//! strategy, a config that does not parse, a strategy refusing its config).
//! Errors are printed as one line naming the file and the problem.

mod inspect;
mod progress;
mod run;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// polybot-host keeps sandboxed WebAssembly trading strategies running:
/// supervision and auto-restart, exact resume after faults, paper or live
/// execution against a venue.
#[derive(Debug, Parser)]
#[command(name = "polybot-host", version, about, long_about = None)]
pub struct Cli {
    /// Log format: `pretty` for people, `json` for log collectors.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a strategy in the foreground on the simulated market (paper execution).
    ///
    /// Stops after --events or --duration, or on Ctrl-C, with a final
    /// checkpoint and a summary.
    Run(run::RunArgs),
    /// Print what a module imports and exports and whether it satisfies the
    /// polybot:strategy contract.
    Inspect {
        /// The component to inspect (`.wasm`).
        path: PathBuf,
    },
}

/// An error with the exit code it maps to.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub error: anyhow::Error,
}

impl Failure {
    /// Bad input: exit code 2.
    pub fn bad_input(error: impl Into<anyhow::Error>) -> Self {
        Failure {
            code: 2,
            error: error.into(),
        }
    }

    /// The run failed: exit code 1.
    pub fn runtime(error: impl Into<anyhow::Error>) -> Self {
        Failure {
            code: 1,
            error: error.into(),
        }
    }
}

/// Parses arguments, runs the command, and maps the outcome to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let result = match cli.command {
        Command::Run(args) => run::run(args),
        Command::Inspect { path } => inspect::inspect(&path),
    };
    match result {
        Ok(code) => code,
        Err(failure) => {
            eprintln!("error: {:#}", failure.error);
            ExitCode::from(failure.code)
        }
    }
}

fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("POLYBOT_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,wasmtime=warn,cranelift=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Pretty => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
    };
}
