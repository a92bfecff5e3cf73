//! Loading a strategy component: read, check, compile (or read compiled code
//! from the cache), and check it implements the `polybot:strategy` world.
//!
//! Loading writes nothing. The compiled-code cache is written only by
//! [`StrategyModule::save_to_cache`], which the caller invokes once the strategy
//! has started successfully, so a bad module leaves nothing behind.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, InstancePre, Linker};

use super::Sandbox;
use super::fault::CallError;
use super::guest::GuestState;
use super::instance::Instance;
use crate::contract::StrategyPre;

/// Why a file cannot be used as a strategy. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a WebAssembly file (it does not start with the `\\0asm` magic)")]
    NotWasm { path: PathBuf },
    #[error(
        "{path}: a core WebAssembly module, not a component; build strategies with \
         `cargo build --target wasm32-wasip2` or `cargo component build`"
    )]
    CoreModule { path: PathBuf },
    #[error("{path}: not a valid WebAssembly component: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("{path}: does not implement the polybot:strategy world: {reason}")]
    WrongWorld { path: PathBuf, reason: String },
}

/// A checked, compiled strategy component, ready to instantiate many times.
#[derive(Clone)]
pub struct StrategyModule {
    inner: Arc<ModuleInner>,
}

struct ModuleInner {
    path: PathBuf,
    digest: [u8; 32],
    component: Component,
    pre: StrategyPre<GuestState>,
    limits: super::SandboxLimits,
    cache_file: Option<PathBuf>,
    from_cache: bool,
}

pub(super) fn load(
    sandbox: &Sandbox,
    path: &Path,
    limits: super::SandboxLimits,
) -> Result<StrategyModule, LoadError> {
    let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    check_header(path, &bytes)?;
    let digest: [u8; 32] = Sha256::digest(&bytes).into();
    let cache_file = sandbox.cache_dir.as_ref().map(|dir| {
        let mut hasher = DefaultHasher::new();
        sandbox
            .engine
            .precompile_compatibility_hash()
            .hash(&mut hasher);
        dir.join(format!(
            "{}-{:016x}.cwasm",
            hex::encode(&digest[..16]),
            hasher.finish()
        ))
    });

    let cached = cache_file.as_deref().filter(|f| f.is_file()).and_then(|file| {
        // SAFETY: the cache directory is the host's own; its files were written
        // by `save_to_cache` from code this engine compiled, and wasmtime checks
        // the engine configuration and version before using them.
        match unsafe { Component::deserialize_file(&sandbox.engine, file) } {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!(file = %file.display(), "ignoring unusable compiled-code cache entry: {e:#}");
                None
            }
        }
    });
    let from_cache = cached.is_some();
    let component = match cached {
        Some(component) => component,
        None => Component::new(&sandbox.engine, &bytes).map_err(|e| LoadError::Invalid {
            path: path.to_path_buf(),
            reason: format!("{e:#}"),
        })?,
    };

    let pre = check_world(&sandbox.linker, &component).map_err(|reason| LoadError::WrongWorld {
        path: path.to_path_buf(),
        reason,
    })?;
    Ok(StrategyModule {
        inner: Arc::new(ModuleInner {
            path: path.to_path_buf(),
            digest,
            component,
            pre,
            limits,
            cache_file,
            from_cache,
        }),
    })
}

/// A component starts with `\0asm`, version 0x0d and layer 1; a core module
/// with version 1 and layer 0.
fn check_header(path: &Path, bytes: &[u8]) -> Result<(), LoadError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(LoadError::NotWasm {
            path: path.to_path_buf(),
        });
    }
    match bytes[6..8] {
        [1, 0] => Ok(()),
        [0, 0] => Err(LoadError::CoreModule {
            path: path.to_path_buf(),
        }),
        _ => Err(LoadError::Invalid {
            path: path.to_path_buf(),
            reason: format!("unknown WebAssembly layer {:?}", &bytes[4..8]),
        }),
    }
}

fn check_world(
    linker: &Linker<GuestState>,
    component: &Component,
) -> Result<StrategyPre<GuestState>, String> {
    let pre: InstancePre<GuestState> = linker
        .instantiate_pre(component)
        .map_err(|e| format!("{e:#}"))?;
    StrategyPre::new(pre).map_err(|e| format!("{e:#}"))
}

impl StrategyModule {
    /// The file the module was loaded from.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// SHA-256 of the `.wasm` file, hex-encoded: identifies the exact code.
    pub fn digest(&self) -> String {
        hex::encode(self.inner.digest)
    }

    /// Whether the compiled code came from the on-disk cache.
    pub fn from_cache(&self) -> bool {
        self.inner.from_cache
    }

    /// The wasmtime component (for inspection).
    pub fn component(&self) -> &Component {
        &self.inner.component
    }

    /// Creates a fresh instance in its own store, logging as `strategy`.
    ///
    /// # Errors
    /// When instantiation fails: the allocator is full, the module's start-up
    /// code traps, or its initial memory exceeds the cap.
    pub async fn instantiate(&self, strategy: &str) -> Result<Instance, CallError> {
        Instance::new(&self.inner.pre, strategy, &self.inner.limits).await
    }

    /// Writes the compiled code to the cache (atomically: temp file, fsync, rename).
    ///
    /// # Errors
    /// I/O errors creating the cache directory or writing the file.
    pub fn save_to_cache(&self) -> std::io::Result<()> {
        let Some(file) = &self.inner.cache_file else {
            return Ok(());
        };
        if self.inner.from_cache || file.is_file() {
            return Ok(());
        }
        let bytes = self
            .inner
            .component
            .serialize()
            .map_err(|e| std::io::Error::other(format!("{e:#}")))?;
        let dir = file.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let mut tmp = tempfile_in(dir)?;
        tmp.1.write_all(&bytes)?;
        tmp.1.sync_all()?;
        std::fs::rename(&tmp.0, file)?;
        Ok(())
    }
}

fn tempfile_in(dir: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    let path = dir.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        rand::random::<u64>()
    ));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)?;
    Ok((path, file))
}
