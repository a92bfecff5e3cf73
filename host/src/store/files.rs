//! Local files: atomic checkpoint copies and the backlog kept while a
//! database is unreachable.
//!
//! Every file is written atomically — temp file in the same directory, fsync,
//! rename, fsync the directory — so a crash leaves either the old file or the
//! new one, never a torn one. Checkpoint copies live in
//! `<data>/checkpoints/<strategy>/<seq>.ckpt`; the newest few are kept. The
//! backlog is `<data>/backlog/<n>.json` files, one per group commit, replayed
//! into the database in order when it returns.

use std::fs::{self, File};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::{Checkpoint, CheckpointFile, KEPT_CHECKPOINTS, StoreError, Write};

/// Writes `bytes` to `path` atomically: temp file, fsync, rename, fsync dir.
///
/// # Errors
/// Any I/O error, with the path.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let action = || format!("write {}", path.display());
    let dir = path
        .parent()
        .ok_or_else(|| StoreError::new(action(), "no parent directory"))?;
    fs::create_dir_all(dir).map_err(|e| StoreError::new(action(), e))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    let mut file = File::create(&tmp).map_err(|e| StoreError::new(action(), e))?;
    file.write_all(bytes)
        .map_err(|e| StoreError::new(action(), e))?;
    file.sync_all().map_err(|e| StoreError::new(action(), e))?;
    drop(file);
    fs::rename(&tmp, path).map_err(|e| StoreError::new(action(), e))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::new(action(), e))?;
    Ok(())
}

/// Checkpoint copies on disk, one directory per strategy.
#[derive(Debug, Clone)]
pub struct FileCheckpoints {
    root: PathBuf,
}

impl FileCheckpoints {
    pub fn new(data_dir: &Path) -> Self {
        FileCheckpoints {
            root: data_dir.join("checkpoints"),
        }
    }

    fn dir(&self, strategy: &str) -> PathBuf {
        self.root.join(strategy)
    }

    /// Saves a copy and prunes all but the newest few.
    ///
    /// # Errors
    /// I/O errors, naming the file.
    pub fn save(&self, strategy: &str, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        let file = CheckpointFile::from(checkpoint);
        let bytes =
            serde_json::to_vec(&file).map_err(|e| StoreError::new("encode checkpoint", e))?;
        let path = self
            .dir(strategy)
            .join(format!("{:020}.ckpt", checkpoint.seq));
        write_atomic(&path, &bytes)?;
        let mut seqs = self.seqs(strategy);
        seqs.sort_unstable_by(|a, b| b.cmp(a));
        for old in seqs.into_iter().skip(KEPT_CHECKPOINTS) {
            let _ = fs::remove_file(self.dir(strategy).join(format!("{old:020}.ckpt")));
        }
        Ok(())
    }

    fn seqs(&self, strategy: &str) -> Vec<u64> {
        let Ok(entries) = fs::read_dir(self.dir(strategy)) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str()?.strip_suffix(".ckpt")?.parse().ok())
            .collect()
    }

    /// Kept copies, newest first. A file that does not parse is skipped and
    /// named in the returned list of problems.
    pub fn load(&self, strategy: &str) -> (Vec<Checkpoint>, Vec<String>) {
        let mut seqs = self.seqs(strategy);
        seqs.sort_unstable_by(|a, b| b.cmp(a));
        let mut found = Vec::new();
        let mut problems = Vec::new();
        for seq in seqs {
            let path = self.dir(strategy).join(format!("{seq:020}.ckpt"));
            match fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|bytes| {
                    serde_json::from_slice::<CheckpointFile>(&bytes).map_err(|e| e.to_string())
                }) {
                Ok(file) => found.push(file.into()),
                Err(e) => problems.push(format!("{}: {e}", path.display())),
            }
        }
        (found, problems)
    }
}

/// Group commits that could not reach the database, kept in order on disk.
#[derive(Debug, Clone)]
pub struct Backlog {
    dir: PathBuf,
}

impl Backlog {
    pub fn new(data_dir: &Path) -> Self {
        Backlog {
            dir: data_dir.join("backlog"),
        }
    }

    fn batches(&self) -> Vec<u64> {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut ids: Vec<u64> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str()?.strip_suffix(".json")?.parse().ok())
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Whether nothing is waiting to be resynced.
    pub fn is_empty(&self) -> bool {
        self.batches().is_empty()
    }

    /// Appends one group commit durably.
    ///
    /// # Errors
    /// I/O errors, naming the file.
    pub fn append(&self, writes: &[Write]) -> Result<(), StoreError> {
        let next = self.batches().last().map_or(0, |n| n + 1);
        let bytes = serde_json::to_vec(writes).map_err(|e| StoreError::new("encode backlog", e))?;
        write_atomic(&self.dir.join(format!("{next:020}.json")), &bytes)
    }

    /// The oldest batch and its id, if any.
    ///
    /// # Errors
    /// A batch that cannot be read or parsed, naming the file.
    pub fn oldest(&self) -> Result<Option<(u64, Vec<Write>)>, StoreError> {
        let Some(&id) = self.batches().first() else {
            return Ok(None);
        };
        let path = self.dir.join(format!("{id:020}.json"));
        let bytes =
            fs::read(&path).map_err(|e| StoreError::new(format!("read {}", path.display()), e))?;
        let writes = serde_json::from_slice(&bytes)
            .map_err(|e| StoreError::new(format!("parse {}", path.display()), e))?;
        Ok(Some((id, writes)))
    }

    /// Removes a batch once it is in the database.
    ///
    /// # Errors
    /// I/O errors, naming the file.
    pub fn remove(&self, id: u64) -> Result<(), StoreError> {
        let path = self.dir.join(format!("{id:020}.json"));
        fs::remove_file(&path).map_err(|e| StoreError::new(format!("remove {}", path.display()), e))
    }

    /// Number of batches waiting.
    pub fn len(&self) -> usize {
        self.batches().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_copies_round_trip_and_keep_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let files = FileCheckpoints::new(dir.path());
        for seq in 1..=5 {
            files
                .save(
                    "s",
                    &Checkpoint::new(seq, seq * 10, 1, "d", vec![seq as u8; 4]),
                )
                .unwrap();
        }
        let (kept, problems) = files.load("s");
        assert!(problems.is_empty());
        assert_eq!(
            kept.iter().map(|c| c.seq).collect::<Vec<_>>(),
            vec![5, 4, 3]
        );
        assert!(kept.iter().all(Checkpoint::is_intact));
        // A torn or foreign file is reported, not fatal.
        fs::write(
            dir.path().join("checkpoints/s/00000000000000000009.ckpt"),
            b"{trunc",
        )
        .unwrap();
        let (kept, problems) = files.load("s");
        assert_eq!(kept.len(), 3);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("00000000000000000009.ckpt"));
    }

    #[test]
    fn backlog_keeps_batches_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let backlog = Backlog::new(dir.path());
        assert!(backlog.is_empty());
        for i in 0..3 {
            let event = super::super::SystemEvent {
                timestamp_ms: i,
                event_type: "t".into(),
                component: "c".into(),
                message: format!("{i}"),
                id: format!("e{i}"),
            };
            backlog.append(&[Write::SystemEvent(event)]).unwrap();
        }
        let mut seen = Vec::new();
        while let Some((id, writes)) = backlog.oldest().unwrap() {
            let Write::SystemEvent(e) = &writes[0] else {
                panic!()
            };
            seen.push(e.message.clone());
            backlog.remove(id).unwrap();
        }
        assert_eq!(seen, vec!["0", "1", "2"]);
    }

    #[test]
    fn a_torn_backlog_write_is_ignored_and_a_corrupt_batch_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let backlog = Backlog::new(dir.path());
        backlog.append(&[]).unwrap();
        // A crash in the middle of an atomic write leaves only its temp file.
        fs::write(
            dir.path().join("backlog/.00000000000000000001.json.tmp-9"),
            b"[{\"Jour",
        )
        .unwrap();
        assert_eq!(backlog.len(), 1);
        let (id, writes) = backlog.oldest().unwrap().unwrap();
        assert!(writes.is_empty());
        backlog.remove(id).unwrap();
        // A batch damaged after it was written is reported by name, not skipped.
        fs::write(
            dir.path().join("backlog/00000000000000000007.json"),
            b"[{\"Jour",
        )
        .unwrap();
        let error = backlog.oldest().unwrap_err().to_string();
        assert!(error.contains("00000000000000000007.json"), "{error}");
    }
}
