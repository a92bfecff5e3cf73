//! The local half of a lease: `DIR/leases/<strategy>.lock`, held with the
//! OS's exclusive file lock for as long as the process lives, holding the
//! holder's identity as JSON so a refused host can name it. The OS drops the
//! lock when the process dies (`kill -9` included), which is what lets a host
//! restarted on the same data directory take over at once. This file never
//! touches the database.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write as _};
use std::path::{Path, PathBuf};

use super::{Holder, LeaseError, absolute};

/// The OS-locked file that claims a strategy within one data directory.
#[derive(Debug)]
pub struct LockFile {
    // Held open: closing it (or the process dying) releases the lock.
    _file: File,
    path: PathBuf,
}

impl LockFile {
    /// Where `strategy`'s lock file lives under `data_dir`.
    pub fn path(data_dir: &Path, strategy: &str) -> PathBuf {
        data_dir.join("leases").join(format!("{strategy}.lock"))
    }

    /// Locks `strategy`'s lock file under `data_dir` (creating it) and writes
    /// `holder` into it.
    ///
    /// # Errors
    /// [`LeaseError::Held`] when a live process holds it, naming that
    /// process; [`LeaseError::LockFile`] when it cannot be created.
    pub fn acquire(
        data_dir: &Path,
        strategy: &str,
        holder: &Holder,
    ) -> Result<LockFile, LeaseError> {
        let path = Self::path(data_dir, strategy);
        let fail = |message: String| LeaseError::LockFile {
            path: path.display().to_string(),
            message,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| fail(e.to_string()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let found = read_holder(&file).unwrap_or_else(|| Holder {
                    host: "unknown".into(),
                    pid: 0,
                    data_dir: absolute(data_dir).display().to_string(),
                    since_ms: 0,
                });
                return Err(LeaseError::Held {
                    strategy: strategy.to_string(),
                    holder: found,
                    expires_at_ms: None,
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(fail(format!("cannot lock: {e}"))),
        }
        let text = serde_json::to_string(holder).map_err(|e| fail(e.to_string()))?;
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(text.as_bytes()))
            .and_then(|()| file.sync_data())
            .map_err(|e| fail(format!("cannot write: {e}")))?;
        Ok(LockFile { _file: file, path })
    }
}

impl Drop for LockFile {
    fn drop(&mut self) {
        // The lock goes with the file handle; the file stays for the next holder.
        tracing::debug!(path = %self.path.display(), "lock file released");
    }
}

fn read_holder(mut file: &File) -> Option<Holder> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut text).ok()?;
    serde_json::from_str(&text).ok()
}
