//! The command line: argument parsing, logging set-up, and exit codes.
//!
//! Exit codes: 0 success; 1 the run failed (a strategy went fatal, the host
//! could not start its runtime, the strategy's lease was lost); 2 bad input
//! (arguments, a module that is not a strategy, a config that does not parse
//! or holds a value out of range, a strategy refusing its config, a store that
//! cannot be reached, a strategy another host already runs). Errors are
//! printed as one line naming the file and the problem, with every credential
//! of a store URL hidden ([`crate::redact`]). Standard output goes through
//! `output`, so a reader that goes away (`status --json | head`) ends the
//! output quietly instead of panicking.

#[macro_use]
mod output;
mod checkpoints;
mod control;
mod inspect;
mod orders;
mod progress;
mod run;
mod serve;
mod sim_server;
mod status;
mod swap;

use std::io::Write as _;
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
    /// Run a strategy in the foreground: on the built-in simulated market by
    /// default, or on Polymarket (`--venue polymarket`, paper unless `--live`).
    ///
    /// Stops after --events or --duration, or on Ctrl-C, with a final
    /// checkpoint and a summary.
    Run(run::RunArgs),
    /// Serve every strategy of a fleet file in one host: one engine, one
    /// store, each strategy isolated in its own task; SIGHUP re-reads the
    /// file, SIGTERM stops them all with a final checkpoint.
    Serve(serve::ServeArgs),
    /// Print what a module imports and exports and whether it satisfies the
    /// polybot:strategy contract.
    Inspect {
        /// The component to inspect (`.wasm`).
        path: PathBuf,
    },
    /// Show every strategy's state, restarts, journal position, last
    /// checkpoint, trades and PnL, read from the store (works while the host
    /// is down).
    Status(status::StatusArgs),
    /// List, show or verify the checkpoints in the store.
    #[command(subcommand)]
    Checkpoints(checkpoints::CheckpointsCommand),
    /// Serve the Polymarket CLOB API shapes and market WebSocket on 127.0.0.1
    /// from the simulated market, with fault injection, for the Polymarket
    /// connector to run against offline.
    SimServer(sim_server::SimServerArgs),
    /// List order intents from the store: id, strategy, market, side, price,
    /// size, filled, state, reason, last update.
    Orders(orders::OrdersArgs),
    /// Stop a strategy's placement: new orders are rejected ("strategy halted
    /// by operator") and resting orders cancelled, without stopping the host.
    /// Durable: a restart stays halted until `resume`.
    Halt(orders::HaltArgs),
    /// Lift a `halt`: the strategy's placement goes on.
    Resume(orders::HaltArgs),
    /// Ask a running `serve` over its HTTP API: pause, resume or restart a
    /// strategy, halt every strategy, list them.
    Control(control::ControlArgs),
    /// Hot-swap a running strategy's module over the HTTP API: on probation
    /// (rolled back by itself if the new module faults or diverges early),
    /// as a shadow (runs beside the live module, its actions recorded and
    /// paper-filled, never sent) or directly.
    Swap(swap::SwapArgs),
    /// Swap a strategy's shadow module in for good (over the HTTP API).
    Promote(swap::ShadowArgs),
    /// Drop a strategy's shadow module (over the HTTP API).
    Discard(swap::ShadowArgs),
}

/// Where the host keeps its data; shared by every subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct StoreArgs {
    /// Where the host keeps its files: the SQLite database, checkpoint copies,
    /// the backlog kept while a database is away, the compiled-module cache.
    #[arg(long, default_value = "data", value_name = "DIR", global = true)]
    pub data_dir: PathBuf,

    /// The database: `postgres://user@host/db` for PostgreSQL, or
    /// `sqlite:PATH` [default: sqlite in DIR/polybot.db].
    #[arg(
        long,
        env = "DATABASE_URL",
        hide_env_values = true,
        value_name = "URL",
        global = true
    )]
    pub store: Option<String>,
}

/// An opened store and the database under it (for the queries outside the
/// store's own: leases).
pub struct OpenedStore {
    pub store: std::sync::Arc<crate::store::sql::SqlStore>,
    pub backend: std::sync::Arc<dyn crate::store::sql::Backend>,
}

impl StoreArgs {
    /// Where the data lives.
    ///
    /// # Errors
    /// A URL with an unknown scheme (bad input), shown without credentials.
    pub fn location(&self) -> Result<crate::store::sql::StoreLocation, Failure> {
        use crate::store::sql::StoreLocation;
        match &self.store {
            Some(url) => StoreLocation::parse(url, &self.data_dir).map_err(Failure::bad_input),
            None => Ok(StoreLocation::Sqlite(self.data_dir.join("polybot.db"))),
        }
    }

    /// Reaches the database and applies the migrations, without opening the
    /// store on it (see [`SqlStore::connect`]): a PostgreSQL database this
    /// data directory reached before may come back offline.
    ///
    /// # Errors
    /// A URL that does not parse, a database that cannot be reached (and
    /// never was from here) or migrated, a data directory that is not
    /// writable: bad input.
    ///
    /// [`SqlStore::connect`]: crate::store::sql::SqlStore::connect
    pub async fn connect(
        &self,
    ) -> Result<(crate::store::sql::Reach, crate::store::sql::StoreLocation), Failure> {
        let location = self.location()?;
        let reach = crate::store::sql::SqlStore::connect(&location, &self.data_dir)
            .await
            .map_err(Failure::bad_input)?;
        Ok((reach, location))
    }

    /// Opens the store over what [`StoreArgs::connect`] reached.
    ///
    /// # Errors
    /// The data directory is not writable, the backlog cannot be replayed.
    pub async fn open_on(
        &self,
        reach: crate::store::sql::Reach,
        location: crate::store::sql::StoreLocation,
    ) -> Result<OpenedStore, Failure> {
        let store = crate::store::sql::SqlStore::open_reached(reach, location, &self.data_dir)
            .await
            .map_err(Failure::bad_input)?;
        let store = std::sync::Arc::new(store);
        Ok(OpenedStore {
            backend: store.backend(),
            store,
        })
    }

    /// Opens the store, creating its files if needed.
    ///
    /// # Errors
    /// As [`StoreArgs::connect`] and [`StoreArgs::open_on`].
    pub async fn open(&self) -> Result<OpenedStore, Failure> {
        let (reach, location) = self.connect().await?;
        self.open_on(reach, location).await
    }

    /// Opens a store that must already exist (for read-only commands): a
    /// missing SQLite file is reported instead of created.
    ///
    /// # Errors
    /// As [`StoreArgs::open`], and a missing database file.
    pub async fn open_existing(&self) -> Result<OpenedStore, Failure> {
        if let crate::store::sql::StoreLocation::Sqlite(db) = self.location()?
            && !db.is_file()
        {
            return Err(Failure::bad_input(anyhow::anyhow!(
                "{}: no polybot database here (use --data-dir or --store)",
                db.display()
            )));
        }
        self.open().await
    }

    /// The store URL as given (flag or `DATABASE_URL`), for scrubbing messages.
    fn url(&self) -> Option<&str> {
        self.store.as_deref()
    }
}

/// Runs a subcommand's async body on a fresh runtime.
pub(crate) fn block_on<T>(
    body: impl std::future::Future<Output = Result<T, Failure>>,
) -> Result<T, Failure> {
    crate::sandbox::runtime_builder()
        .build()
        .map_err(Failure::runtime)?
        .block_on(body)
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
    let url = match &cli.command {
        Command::Run(args) => args.store.url().map(str::to_string),
        Command::Serve(args) => args.store.url().map(str::to_string),
        Command::Status(args) => args.store.url().map(str::to_string),
        Command::Checkpoints(command) => command.store().url().map(str::to_string),
        Command::Orders(args) => args.store.url().map(str::to_string),
        Command::Halt(args) | Command::Resume(args) => args.store.url().map(str::to_string),
        Command::Inspect { .. }
        | Command::SimServer(_)
        | Command::Control(_)
        | Command::Swap(_)
        | Command::Promote(_)
        | Command::Discard(_) => None,
    };
    let result = match cli.command {
        Command::Run(args) => run::run(args),
        Command::Serve(args) => serve::serve(args),
        Command::Inspect { path } => inspect::inspect(&path),
        Command::Status(args) => status::status(args),
        Command::Checkpoints(command) => checkpoints::checkpoints(command),
        Command::SimServer(args) => sim_server::run(args),
        Command::Orders(args) => orders::orders(args),
        Command::Halt(args) => orders::halt(args, true),
        Command::Resume(args) => orders::halt(args, false),
        Command::Control(args) => control::control(args),
        Command::Swap(args) => swap::swap(args),
        Command::Promote(args) => swap::shadow(args, true),
        Command::Discard(args) => swap::shadow(args, false),
    };
    let result = match (result, output::failure()) {
        (Ok(_), Some(e)) => Err(Failure::runtime(anyhow::anyhow!(
            "cannot write to standard output: {e}"
        ))),
        (result, _) => result,
    };
    match result {
        Ok(code) => code,
        Err(failure) => {
            let mut line = format!("{:#}", failure.error);
            if let Some(url) = &url {
                line = crate::redact::scrub(&line, url);
            }
            // One line, even when a cause spans several.
            let line = line.lines().map(str::trim).collect::<Vec<_>>().join(" ");
            let _ = writeln!(std::io::stderr(), "error: {line}");
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
