//! The steps that bring one strategy up, shared by `run` (one strategy) and
//! the fleet (many): the sandbox, a trial start of the module, the leases,
//! the store, and the run of a cell against its venue.
//!
//! Order, so that bad input writes nothing: the module is loaded and tried
//! completely (describe, init) before any lease is taken; leases (lock file,
//! then database row) before the store is opened; the store before any cell
//! starts. Never owns the run loop (`runner`), the sandbox's limits or the
//! store's format.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::HostError;
use super::venue::ChosenVenue;
use crate::lease::{Holder, Lease, LockFile};
use crate::runner::{self, ExecSetup, RunCounters, RunLimits, RunReport, VenueStart};
use crate::sandbox::{Sandbox, SandboxLimits, StrategyModule};
use crate::store::sql::{Reach, SqlStore, StoreLocation};
use crate::supervisor::{Cell, Shutdown, StartError};

/// The host's one sandbox (one wasmtime engine, one pooling allocator),
/// caching compiled code under `data_dir/cache`. `origin` names where the
/// limits were set, for the error.
///
/// # Errors
/// [`HostError::Sandbox`] when the limits cannot be set up.
pub fn sandbox(
    limits: SandboxLimits,
    data_dir: &Path,
    origin: Option<&Path>,
) -> Result<Arc<Sandbox>, HostError> {
    Sandbox::new(limits, Some(data_dir.join("cache")))
        .map(Arc::new)
        .map_err(|e| HostError::Sandbox {
            // The limits come from `[sandbox]`: name where they were set.
            origin: match origin {
                Some(path) => format!("{}: [sandbox]", path.display()),
                None => "sandbox".into(),
            },
            message: format!("{e:#}"),
        })
}

/// Instantiates the strategy once and hands it its configuration, so a module
/// that cannot start, or refuses its configuration, is reported before
/// anything is written.
///
/// # Errors
/// The module does not instantiate, `describe` fails, `init` refuses.
pub async fn preflight(
    module: &StrategyModule,
    name: &str,
    config_json: &str,
) -> Result<(), HostError> {
    let path = module.path().display().to_string();
    let mut instance =
        module
            .instantiate(name)
            .await
            .map_err(|source| StartError::Instantiate {
                path: path.clone(),
                source,
            })?;
    instance
        .describe()
        .await
        .map_err(|source| HostError::Describe {
            path: path.clone(),
            source,
        })?;
    match instance.init(config_json).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(message)) => Err(StartError::InitRefused { path, message }.into()),
        Err(source) => Err(StartError::Instantiate { path, source }.into()),
    }
}

/// Leases taken for a set of strategies, with the database they were taken on.
pub struct Leased {
    pub leases: Vec<Lease>,
    pub reach: Reach,
}

/// Takes the leases of `names`: every lock file first when the data directory
/// exists (a second host on it is refused before the database is touched),
/// then the database rows. All or nothing: on any refusal the leases taken
/// so far are let go.
///
/// # Errors
/// [`HostError::Lease`] naming the holder when another host drives one of
/// the strategies; the database cannot be reached.
pub async fn take_leases(
    data_dir: &Path,
    location: &StoreLocation,
    names: &[String],
    ttl: Duration,
) -> Result<Leased, HostError> {
    let holder = Holder::this_process(data_dir);
    let mut locks = Vec::with_capacity(names.len());
    for name in names {
        locks.push(if data_dir.is_dir() {
            Some(LockFile::acquire(data_dir, name, &holder)?)
        } else {
            None
        });
    }
    let reach = SqlStore::connect(location, data_dir).await?;
    let mut leases = Vec::with_capacity(names.len());
    for (name, lock) in names.iter().zip(locks) {
        let lease = match (&reach, lock) {
            // The database is away but this directory reached it before (so
            // it exists and its lock file is ours): drive the strategy on the
            // lock file; the row is taken once the database answers.
            (Reach::Offline { backend, .. }, Some(lock)) => {
                Lease::provisional(backend.clone(), name, holder.clone(), ttl, lock)
            }
            // Cannot happen (an offline reach needs a data directory that
            // reached the database before), but never drive a strategy unleased.
            (Reach::Offline { .. }, None) => {
                release_all(leases).await;
                return Err(HostError::NoLocalState {
                    location: location.describe(),
                });
            }
            (Reach::Online(backend), lock) => {
                match Lease::acquire(backend.clone(), name, data_dir, holder.clone(), ttl, lock)
                    .await
                {
                    Ok(lease) => lease,
                    Err(e) => {
                        release_all(leases).await;
                        return Err(e.into());
                    }
                }
            }
        };
        leases.push(lease);
    }
    Ok(Leased { leases, reach })
}

async fn release_all(leases: Vec<Lease>) {
    for lease in leases {
        lease.release().await;
    }
}

/// Opens the store over what [`take_leases`] reached.
///
/// # Errors
/// The data directory is not writable, the backlog cannot be replayed.
pub async fn open_store(
    reach: Reach,
    location: StoreLocation,
    data_dir: &Path,
) -> Result<Arc<SqlStore>, HostError> {
    Ok(Arc::new(
        SqlStore::open_reached(reach, location, data_dir).await?,
    ))
}

/// Runs `cell` against `venue` until a limit, the feed's end, a fatal
/// strategy or `shutdown`: the one call into the run loop for every kind of
/// venue.
pub async fn drive(
    cell: &mut Cell,
    venue: &mut ChosenVenue,
    limits: RunLimits,
    counters: Arc<RunCounters>,
    shutdown: Shutdown,
    watch: Option<&super::watched::Progress>,
    setup: &ExecSetup,
) -> RunReport {
    let start = VenueStart::Fresh;
    match (venue, watch) {
        (ChosenVenue::Sim(v), Some(p)) => {
            let mut v = super::watched::Watched::new(v.as_mut(), p);
            runner::run_with(cell, &mut v, start, limits, counters, shutdown, setup).await
        }
        (ChosenVenue::Sim(v), None) => {
            runner::run_with(cell, v.as_mut(), start, limits, counters, shutdown, setup).await
        }
        (ChosenVenue::Polymarket(v), Some(p)) => {
            let mut v = super::watched::Watched::new(v.as_mut(), p);
            runner::run_with(cell, &mut v, start, limits, counters, shutdown, setup).await
        }
        (ChosenVenue::Polymarket(v), None) => {
            runner::run_with(cell, v.as_mut(), start, limits, counters, shutdown, setup).await
        }
    }
}
