//! Local files: atomic checkpoint copies and the backlog kept while a
//! database is unreachable.
//!
//! Every file is written atomically — temp file in the same directory, fsync,
//! rename, fsync the directory — so a crash leaves either the old file or the
//! new one, never a torn one. Checkpoint copies live in
//! `<data>/checkpoints/<strategy>/<seq>.ckpt`; the newest few are kept. The
//! backlog is `<data>/backlog/<n>.batch` files, one per group commit, replayed
//! into the database in order when it returns. Both are binary
//! ([`super::codec`]); files written as JSON by earlier versions (backlog
//! `<n>.json`) are still read.
//!
//! A write that fails (a full disk, say) leaves nothing behind: neither its
//! temp file nor a half-made target.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::{Checkpoint, KEPT_CHECKPOINTS, StoreError, Write, codec};

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
    let written = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)?;
        File::open(dir).and_then(|d| d.sync_all())
    })();
    if let Err(e) = written {
        // Leave no temp file taking space, and no target whose rename may
        // not be durable: the caller treats the write as not made.
        let _ = fs::remove_file(&tmp);
        let _ = fs::remove_file(path);
        return Err(StoreError::new(action(), e));
    }
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
        let bytes = codec::encode_checkpoint(checkpoint);
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
                .and_then(|bytes| codec::decode_checkpoint(&bytes).map_err(|e| e.to_string()))
            {
                Ok(checkpoint) => found.push(checkpoint),
                Err(e) => problems.push(format!("{}: {e}", path.display())),
            }
        }
        (found, problems)
    }
}

/// Group commits that could not reach the database, kept in order on disk.
///
/// The folder is listed once, when the backlog is opened; after that the
/// backlog keeps its own index, so appending and draining stay cheap however
/// long an outage lasts. One writer owns it.
#[derive(Debug)]
pub struct Backlog {
    dir: PathBuf,
    /// Batches on disk, oldest first: id and whether it is an old JSON one.
    pending: VecDeque<(u64, bool)>,
    /// Id of the next batch appended.
    next: u64,
}

impl Backlog {
    /// The backlog in `<data_dir>/backlog`, with whatever batches an earlier
    /// run left there.
    pub fn open(data_dir: &Path) -> Self {
        let dir = data_dir.join("backlog");
        // A write torn by a crash leaves only its temp file: never a batch.
        if let Ok(entries) = fs::read_dir(&dir) {
            for entry in entries.filter_map(|e| e.ok()) {
                if entry
                    .file_name()
                    .to_str()
                    .is_some_and(|n| n.starts_with('.'))
                {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        let mut ids: Vec<(u64, bool)> = fs::read_dir(&dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    // Only finished batches: a torn write leaves a dot-prefixed temp file.
                    .filter_map(|e| {
                        let name = e.file_name();
                        let name = name.to_str()?;
                        match name.strip_suffix(".batch") {
                            Some(id) => Some((id.parse().ok()?, false)),
                            None => Some((name.strip_suffix(".json")?.parse().ok()?, true)),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        ids.sort_unstable();
        let next = ids.last().map_or(0, |(n, _)| n + 1);
        Backlog {
            dir,
            pending: ids.into(),
            next,
        }
    }

    fn path(&self, id: u64, json: bool) -> PathBuf {
        self.dir
            .join(format!("{id:020}.{}", if json { "json" } else { "batch" }))
    }

    /// The folder the batches are in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether nothing is waiting to be resynced.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Number of batches waiting.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Appends one group commit durably.
    ///
    /// # Errors
    /// I/O errors, naming the file.
    pub fn append(&mut self, writes: &[Write]) -> Result<(), StoreError> {
        write_atomic(&self.path(self.next, false), &codec::encode_batch(writes))?;
        self.pending.push_back((self.next, false));
        self.next += 1;
        Ok(())
    }

    /// The oldest batches, whole and in order, joined into one list of about
    /// `max_writes` writes (always at least one batch when any is waiting),
    /// and how many batches that is.
    ///
    /// # Errors
    /// A batch that cannot be read or parsed, naming the file.
    pub fn oldest(&self, max_writes: usize) -> Result<(usize, Vec<Write>), StoreError> {
        let mut writes = Vec::new();
        let mut batches = 0;
        for &(id, json) in &self.pending {
            if batches > 0 && writes.len() >= max_writes {
                break;
            }
            let path = self.path(id, json);
            let bytes = fs::read(&path)
                .map_err(|e| StoreError::new(format!("read {}", path.display()), e))?;
            let batch = codec::decode_batch(&bytes)
                .map_err(|e| StoreError::new(format!("parse {}", path.display()), e))?;
            writes.extend(batch);
            batches += 1;
        }
        Ok((batches, writes))
    }

    /// Removes the `count` oldest batches once they are in the database.
    ///
    /// # Errors
    /// I/O errors, naming the file; the batches before it are gone.
    pub fn remove_oldest(&mut self, count: usize) -> Result<(), StoreError> {
        for _ in 0..count {
            let Some(&(id, json)) = self.pending.front() else {
                break;
            };
            let path = self.path(id, json);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::new(format!("remove {}", path.display()), e)),
            }
            self.pending.pop_front();
        }
        Ok(())
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

    fn event(i: u64) -> Write {
        Write::SystemEvent(super::super::SystemEvent {
            timestamp_ms: i,
            event_type: "t".into(),
            component: "c".into(),
            message: format!("{i}"),
            id: format!("e{i}"),
        })
    }

    fn messages(writes: &[Write]) -> Vec<String> {
        writes
            .iter()
            .map(|w| match w {
                Write::SystemEvent(e) => e.message.clone(),
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    }

    #[test]
    fn backlog_keeps_batches_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut backlog = Backlog::open(dir.path());
        assert!(backlog.is_empty());
        for i in 0..5 {
            backlog.append(&[event(2 * i), event(2 * i + 1)]).unwrap();
        }
        // Batches are joined whole, up to the budget.
        let (batches, writes) = backlog.oldest(3).unwrap();
        assert_eq!(batches, 2);
        assert_eq!(messages(&writes), ["0", "1", "2", "3"]);
        backlog.remove_oldest(batches).unwrap();

        // A backlog opened again (a restarted host) finds the rest, in order,
        // and appends after it.
        let mut reopened = Backlog::open(dir.path());
        assert_eq!(reopened.len(), 3);
        reopened.append(&[event(10)]).unwrap();
        let (batches, writes) = reopened.oldest(usize::MAX).unwrap();
        assert_eq!(batches, 4);
        assert_eq!(messages(&writes), ["4", "5", "6", "7", "8", "9", "10"]);
        reopened.remove_oldest(batches).unwrap();
        assert!(reopened.is_empty());
        assert_eq!(fs::read_dir(dir.path().join("backlog")).unwrap().count(), 0);
    }

    #[test]
    fn a_torn_backlog_write_is_ignored_and_a_corrupt_batch_is_named() {
        let dir = tempfile::tempdir().unwrap();
        Backlog::open(dir.path()).append(&[]).unwrap();
        // A crash in the middle of an atomic write leaves only its temp file.
        fs::write(
            dir.path().join("backlog/.00000000000000000001.json.tmp-9"),
            b"[{\"Jour",
        )
        .unwrap();
        let mut backlog = Backlog::open(dir.path());
        assert_eq!(backlog.len(), 1);
        assert!(
            !dir.path()
                .join("backlog/.00000000000000000001.json.tmp-9")
                .exists(),
            "the torn write's temp file is removed"
        );
        let (batches, writes) = backlog.oldest(100).unwrap();
        assert_eq!(batches, 1);
        assert!(writes.is_empty());
        backlog.remove_oldest(batches).unwrap();
        // A batch damaged after it was written is reported by name, not skipped.
        fs::write(
            dir.path().join("backlog/00000000000000000007.json"),
            b"[{\"Jour",
        )
        .unwrap();
        let error = Backlog::open(dir.path())
            .oldest(100)
            .unwrap_err()
            .to_string();
        assert!(error.contains("00000000000000000007.json"), "{error}");
        let mut bytes = codec::encode_batch(&[event(1)]);
        bytes[12] ^= 1;
        fs::remove_file(dir.path().join("backlog/00000000000000000007.json")).unwrap();
        fs::write(dir.path().join("backlog/00000000000000000008.batch"), bytes).unwrap();
        let error = Backlog::open(dir.path())
            .oldest(100)
            .unwrap_err()
            .to_string();
        assert!(error.contains("00000000000000000008.batch"), "{error}");
    }

    #[test]
    fn batches_written_as_json_by_earlier_versions_are_replayed_in_order() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("backlog")).unwrap();
        fs::write(
            dir.path().join("backlog/00000000000000000000.json"),
            serde_json::to_vec(&[event(0)]).unwrap(),
        )
        .unwrap();
        let mut backlog = Backlog::open(dir.path());
        backlog.append(&[event(1)]).unwrap();
        let (batches, writes) = backlog.oldest(100).unwrap();
        assert_eq!(batches, 2);
        assert_eq!(messages(&writes), ["0", "1"]);
        backlog.remove_oldest(2).unwrap();
        assert_eq!(fs::read_dir(dir.path().join("backlog")).unwrap().count(), 0);
    }
}
