//! The fleet: many strategies in one host process.
//!
//! Owns the assembly of strategies into one process — one [`Sandbox`] (one
//! wasmtime engine and pooling allocator), one store shared by every strategy
//! (its group commit batches all of their writes), one task per strategy with
//! its own lease, venue and cell — and the [`Registry`] of what each strategy
//! is doing, with a control handle to stop, restart or hot-swap it. `run` is
//! the one-strategy case: it uses the same steps ([`assemble`]).
//!
//! Each strategy on the simulated venue has its own deterministic simulated
//! market (its `[sim]` seed and markets): the same configuration gives the
//! same feed, so a strategy restarted after `kill -9` is caught up exactly
//! from its own journal, as `run` does. Every strategy's logs sit in a
//! `tracing` span named after it.
//!
//! Never owns the run loop (`runner`), the sandbox (`sandbox`) or the store
//! (`store`). Stuck detection and service-manager notifications
//! ([`health`]) and Redis heartbeats ([`heartbeat`]) read the registry and act
//! only through its control handles.

pub mod assemble;
pub mod config;
pub mod health;
pub mod heartbeat;
pub mod registry;
mod task;
pub mod venue;
pub mod watched;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

pub use config::{FleetConfig, FleetConfigError, StrategyEntry};
pub use registry::{Control, Registry, Slot, StrategyState, StrategyView};

use crate::lease::{Holder, Lease, LeaseError, LockFile};
use crate::sandbox::{CallError, LoadError, Sandbox, SandboxLimits, StrategyModule};
use crate::store::StateStore;
use crate::store::sql::{Backend, SqlStore, StoreLocation};
use crate::supervisor::StartError;
use crate::venue::polymarket::feed::Feeds;
use venue::VenueSpec;

/// Why a host (or one of its strategies) cannot start. Every variant but
/// [`HostError::Start`] of a store failure is bad input: the user's to fix.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error(transparent)]
    Config(#[from] FleetConfigError),
    #[error("{origin}: cannot set up the limits: {message}")]
    Sandbox { origin: String, message: String },
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("{path}: describe failed: {source}")]
    Describe { path: String, source: CallError },
    #[error(transparent)]
    Lease(#[from] LeaseError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("{location}: the database does not answer and the data directory holds no local state")]
    NoLocalState { location: String },
    #[error(transparent)]
    Venue(#[from] venue::VenueBuildError),
    /// One strategy of a fleet file could not be started.
    #[error("[[strategy]] `{name}`: {source}")]
    Strategy {
        name: String,
        source: Box<HostError>,
    },
}

impl HostError {
    /// Whether this is the user's to fix (exit 2) rather than a failed run.
    pub fn is_bad_input(&self) -> bool {
        match self {
            HostError::Start(StartError::Store { .. }) => false,
            HostError::Strategy { source, .. } => source.is_bad_input(),
            _ => true,
        }
    }

    fn of(name: &str) -> impl FnOnce(HostError) -> HostError + '_ {
        move |source| HostError::Strategy {
            name: name.to_string(),
            source: Box::new(source),
        }
    }
}

/// What a host's strategies tell it.
#[derive(Debug, Clone, PartialEq)]
pub enum HostEvent {
    /// The strategy's cell started (or started again) and runs.
    Running { name: String },
    /// Its run ended by itself (a limit, the feed's end, fatal, lease lost).
    Ended { name: String, fatal: bool },
    /// Its task ended (stopped on request); its lease is let go.
    Stopped { name: String },
}

/// Host-wide settings that are not in the fleet file.
#[derive(Debug, Clone)]
pub struct HostOptions {
    pub data_dir: PathBuf,
    pub location: StoreLocation,
}

struct Running {
    entry: StrategyEntry,
    digest: String,
}

/// A running fleet.
pub struct Host {
    config: FleetConfig,
    options: HostOptions,
    sandbox: Arc<Sandbox>,
    store: Arc<SqlStore>,
    backend: Arc<dyn Backend>,
    registry: Arc<Registry>,
    running: BTreeMap<String, Running>,
    tasks: tokio::task::JoinSet<()>,
    events_tx: mpsc::UnboundedSender<HostEvent>,
    events: mpsc::UnboundedReceiver<HostEvent>,
    /// Writes every strategy's heartbeat to the store.
    beats: Arc<heartbeat::StoreBeats>,
    /// One market feed per venue endpoint, shared by its strategies.
    feeds: Arc<Feeds>,
    beating: tokio::task::JoinHandle<()>,
}

/// What a reload changed.
#[derive(Debug, Default, Clone, PartialEq, serde::Serialize)]
pub struct ReloadSummary {
    pub started: Vec<String>,
    pub stopped: Vec<String>,
    pub swapped: Vec<String>,
    /// Changed in other ways than the module: takes effect at the next restart.
    pub changed: Vec<String>,
}

/// The pool holds three instances per strategy (the live one, one being
/// tried or recovered, one spare) unless `[sandbox] max_instances` says more.
fn pool_limits(config: &FleetConfig) -> SandboxLimits {
    let mut limits = config.defaults.sandbox.clone();
    let wanted = u32::try_from(config.strategies.len() * 3 + 4).unwrap_or(u32::MAX);
    limits.max_instances = limits.max_instances.max(wanted).min(1024);
    limits
}

impl Host {
    /// Checks every strategy (module loads, `init` accepts its config), takes
    /// every lease, opens the store and starts every strategy. Nothing is
    /// written before all strategies passed their checks and all leases are
    /// held.
    ///
    /// # Errors
    /// A [`HostError`] naming the strategy; nothing was started.
    pub async fn start(config: FleetConfig, options: HostOptions) -> Result<Host, HostError> {
        let sandbox = assemble::sandbox(
            pool_limits(&config),
            &options.data_dir,
            Some(config.path.as_path()),
        )?;
        let mut loaded = Loaded::default();
        let mut modules = Vec::with_capacity(config.strategies.len());
        for entry in &config.strategies {
            let module = check_strategy(&sandbox, entry, &mut loaded)
                .await
                .map_err(HostError::of(&entry.name))?;
            modules.push(module);
        }
        // One market feed per Polymarket endpoint, for every strategy on it,
        // connected before anything is written (an unreachable one is bad input).
        let feeds = Feeds::new();
        let specs: Vec<(String, VenueSpec)> = config
            .strategies
            .iter()
            .map(|e| (e.name.clone(), e.venue()))
            .collect();
        let polymarket: Vec<&crate::venue::polymarket::PolymarketConfig> = specs
            .iter()
            .filter_map(|(_, s)| match s {
                VenueSpec::Polymarket(cfg) => Some(&**cfg),
                VenueSpec::Sim { .. } => None,
            })
            .collect();
        if !polymarket.is_empty() {
            feeds.open_for(&polymarket).await.map_err(|e| {
                let first = specs
                    .iter()
                    .find(|(_, s)| matches!(s, VenueSpec::Polymarket(_)))
                    .map_or(String::new(), |(n, _)| n.clone());
                HostError::of(&first)(HostError::Venue(venue::VenueBuildError(e)))
            })?;
        }
        let names: Vec<String> = config.strategies.iter().map(|e| e.name.clone()).collect();
        let leased = assemble::take_leases(
            &options.data_dir,
            &options.location,
            &names,
            config.defaults.lease.ttl,
        )
        .await?;
        let store =
            assemble::open_store(leased.reach, options.location.clone(), &options.data_dir).await?;
        let (events_tx, events) = mpsc::unbounded_channel();
        let registry = Registry::new();
        let beats = Arc::new(heartbeat::StoreBeats::default());
        let beating = tokio::spawn(beats.clone().run(
            config.health.beat_every,
            registry.clone(),
            store.clone(),
            host_id(&config),
            config.health.stuck_after,
        ));
        let mut host = Host {
            backend: store.backend(),
            config: config.clone(),
            options,
            sandbox,
            store,
            registry,
            beats,
            beating,
            feeds,
            running: BTreeMap::new(),
            tasks: tokio::task::JoinSet::new(),
            events_tx,
            events,
        };
        for ((entry, module), lease) in config.strategies.iter().zip(modules).zip(leased.leases) {
            host.spawn(entry.clone(), module, lease);
        }
        Ok(host)
    }

    fn spawn(&mut self, entry: StrategyEntry, module: StrategyModule, mut lease: Lease) {
        if let Err(e) = module.save_to_cache() {
            tracing::warn!(
                "cannot cache compiled code in {}: {e}",
                self.options.data_dir.display()
            );
        }
        let shared: Arc<dyn StateStore> = self.store.clone();
        lease.keep_renewed(entry.config.lease.ttl, shared.clone());
        let fenced = lease.fence(shared.clone());
        let digest = module.digest();
        let (slot, control) = Slot::new(&entry.name, digest.clone());
        self.registry.insert(slot.clone());
        self.running.insert(
            entry.name.clone(),
            Running {
                entry: entry.clone(),
                digest,
            },
        );
        let task = task::Task {
            entry,
            module,
            store: fenced,
            system: shared,
            lease,
            slot,
            control,
            events: self.events_tx.clone(),
            shutdown_timeout: self.config.host.shutdown_timeout,
            stuck_window: crate::supervisor::RestartWindow::default(),
            feeds: self.feeds.clone(),
            probation: self.config.swap.clone(),
        };
        self.tasks.spawn(task.run());
    }

    /// The sandbox modules are loaded into (for swaps over the API).
    pub fn sandbox(&self) -> Arc<Sandbox> {
        self.sandbox.clone()
    }

    /// The registry of this host's strategies.
    pub fn registry(&self) -> Arc<Registry> {
        self.registry.clone()
    }

    /// The store every strategy writes to (for the host's own system events).
    pub fn store(&self) -> Arc<dyn StateStore> {
        self.store.clone()
    }

    /// Whether the store is in an outage (writes go to the local backlog).
    pub fn store_outage(&self) -> tokio::sync::watch::Receiver<bool> {
        self.store.outage()
    }

    /// The fleet file in force.
    pub fn config(&self) -> &FleetConfig {
        &self.config
    }

    /// The next thing a strategy tells the host (`None` never happens while
    /// the host lives: it holds a sender itself).
    pub async fn next_event(&mut self) -> Option<HostEvent> {
        self.events.recv().await
    }

    /// Applies a re-read fleet file: new strategies start, removed ones stop
    /// (finishing their event, with a final checkpoint), changed modules are
    /// hot-swapped. Every new or changed strategy is checked first; if any
    /// fails, nothing changes.
    ///
    /// # Errors
    /// A [`HostError`] naming the strategy; the running set is kept.
    pub async fn reload(&mut self, config: FleetConfig) -> Result<ReloadSummary, HostError> {
        let mut summary = ReloadSummary::default();
        let mut checked = Vec::new();
        let mut loaded = Loaded::default();
        for entry in &config.strategies {
            let digest = file_digest(&entry.module);
            match self.running.get(&entry.name) {
                Some(running)
                    if running.digest == digest && running.entry.source == entry.source => {}
                Some(running) if running.digest == digest => {
                    summary.changed.push(entry.name.clone())
                }
                _ => {
                    let module = check_strategy(&self.sandbox, entry, &mut loaded)
                        .await
                        .map_err(HostError::of(&entry.name))?;
                    checked.push((entry.clone(), module));
                }
            }
        }
        // Every new strategy's lease before anything changes: a strategy
        // another host drives refuses the whole reload.
        let mut starting = Vec::new();
        let mut swapping = Vec::new();
        for (entry, module) in checked {
            if self.running.contains_key(&entry.name) {
                swapping.push((entry, module));
                continue;
            }
            match self.lease_one(&entry).await {
                Ok(lease) => starting.push((entry, module, lease)),
                Err(e) => {
                    for (_, _, lease) in starting {
                        lease.release().await;
                    }
                    return Err(HostError::of(&entry.name)(e));
                }
            }
        }
        let removed: Vec<String> = self
            .running
            .keys()
            .filter(|name| !config.strategies.iter().any(|e| &e.name == *name))
            .cloned()
            .collect();
        for name in removed {
            if let Some(slot) = self.registry.get(&name) {
                slot.send(Control::Stop);
            }
            self.running.remove(&name);
            summary.stopped.push(name);
        }
        for (entry, module) in swapping {
            if let Some(slot) = self.registry.get(&entry.name) {
                slot.send(Control::Swap {
                    module: module.clone(),
                    mode: crate::supervisor::SwapMode::Direct,
                    config: None,
                    answer: None,
                });
            }
            if let Some(running) = self.running.get_mut(&entry.name) {
                running.digest = module.digest();
                running.entry = entry.clone();
            }
            summary.swapped.push(entry.name.clone());
        }
        for (entry, module, lease) in starting {
            summary.started.push(entry.name.clone());
            self.spawn(entry, module, lease);
        }
        self.config = config;
        Ok(summary)
    }

    async fn lease_one(&self, entry: &StrategyEntry) -> Result<Lease, HostError> {
        let data_dir = &self.options.data_dir;
        let holder = Holder::this_process(data_dir);
        let lock = LockFile::acquire(data_dir, &entry.name, &holder)?;
        Ok(Lease::acquire(
            self.backend.clone(),
            &entry.name,
            data_dir,
            holder,
            entry.config.lease.ttl,
            Some(lock),
        )
        .await?)
    }

    /// Forgets a strategy that stopped (after a removal); its registry entry goes.
    pub fn forget(&mut self, name: &str) {
        if !self.running.contains_key(name) {
            self.registry.remove(name);
        }
    }

    /// Stops every strategy in parallel (each finishes its event in hand and
    /// checkpoints, within the `[host] shutdown_timeout`), then makes the store
    /// durable and closes it.
    ///
    /// # Errors
    /// The store could not be synced and closed.
    pub async fn shutdown(mut self) -> Result<(), crate::store::StoreError> {
        for slot in self.registry.slots() {
            slot.send(Control::Stop);
        }
        // Each task bounds its own stop; this bound is a backstop.
        let bound = self.config.host.shutdown_timeout + Duration::from_secs(5);
        let all = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(bound, all).await.is_err() {
            tracing::error!("strategies still stopping after {bound:?}; closing the store");
            self.tasks.abort_all();
        }
        // The last beat says how each strategy stood when the host stopped.
        self.beating.abort();
        self.beats
            .beat(
                &self.registry,
                self.store.as_ref(),
                &host_id(&self.config),
                self.config.health.stuck_after,
            )
            .await;
        // Strategies removed by a reload that were still stopping leave the
        // registry with the rest of their kind.
        for slot in self.registry.slots() {
            if !self.running.contains_key(&slot.name) {
                self.registry.remove(&slot.name);
            }
        }
        self.store.close().await
    }
}

/// The host's id: `[host] id`, or the host name.
pub fn host_id(config: &FleetConfig) -> String {
    config
        .host
        .id
        .clone()
        .unwrap_or_else(crate::lease::host_name)
}

/// Modules loaded so far, by file and limits: strategies sharing a module
/// file and limits share its compiled code (compiled once).
#[derive(Default)]
struct Loaded(std::collections::HashMap<(PathBuf, String), StrategyModule>);

/// Loads a strategy's module under its own limits (or reuses one loaded for
/// another strategy) and tries it (describe, init).
async fn check_strategy(
    sandbox: &Arc<Sandbox>,
    entry: &StrategyEntry,
    loaded: &mut Loaded,
) -> Result<StrategyModule, HostError> {
    let key = (
        entry.module.clone(),
        serde_json::to_string(&entry.config.sandbox).unwrap_or_default(),
    );
    let module = if let Some(module) = loaded.0.get(&key) {
        module.clone()
    } else {
        let (sandbox, path, limits) = (
            sandbox.clone(),
            entry.module.clone(),
            entry.config.sandbox.clone(),
        );
        let module = tokio::task::spawn_blocking(move || sandbox.load_with(&path, limits))
            .await
            .map_err(|e| HostError::Sandbox {
                origin: entry.module.display().to_string(),
                message: e.to_string(),
            })??;
        loaded.0.insert(key, module.clone());
        module
    };
    assemble::preflight(&module, &entry.name, &entry.config.strategy_json()).await?;
    Ok(module)
}

/// SHA-256 of a file, hex; empty when it cannot be read (then it differs).
fn file_digest(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    std::fs::read(path)
        .map(|bytes| hex::encode(Sha256::digest(bytes)))
        .unwrap_or_default()
}
