//! The local copy of a remote database's journal: `<data>/journal/<strategy>.log`,
//! so a host restarted while PostgreSQL is away can resume from local state
//! (its checkpoint copies, this copy and the backlog) and keep trading.
//!
//! Each file is a sequence of frames: a binary journal entry
//! ([`codec::encode_entry`]) followed by its length (u32 LE), so the last
//! entry can be read from the end. Frames are appended after the entries are
//! durable (in the database or the backlog) and are not fsynced: a killed
//! process loses nothing from the page cache, and a copy that does not match
//! the database is rebuilt from it when the database answers. It never decides
//! what is durable; the database and the backlog do.

use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

use super::files::write_atomic;
use super::{JournalEntry, StoreError, codec};

/// The per-strategy journal copies in one data directory.
#[derive(Debug, Clone)]
pub struct JournalMirror {
    root: PathBuf,
}

fn frame(out: &mut Vec<u8>, entry: &JournalEntry) {
    let bytes = codec::encode_entry(entry);
    out.extend_from_slice(&bytes);
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
}

impl JournalMirror {
    pub fn new(data_dir: &Path) -> Self {
        JournalMirror {
            root: data_dir.join("journal"),
        }
    }

    fn path(&self, strategy: &str) -> PathBuf {
        self.root.join(format!("{strategy}.log"))
    }

    /// Appends entries (in seq order) to `strategy`'s copy.
    ///
    /// # Errors
    /// I/O errors, naming the file; the caller drops the copy.
    pub fn append<'a>(
        &self,
        strategy: &str,
        entries: impl IntoIterator<Item = &'a JournalEntry>,
    ) -> Result<(), StoreError> {
        let path = self.path(strategy);
        let mut bytes = Vec::new();
        for entry in entries {
            frame(&mut bytes, entry);
        }
        if bytes.is_empty() {
            return Ok(());
        }
        let action = || format!("append to {}", path.display());
        fs::create_dir_all(&self.root).map_err(|e| StoreError::new(action(), e))?;
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(&bytes))
            .map_err(|e| StoreError::new(action(), e))
    }

    /// Replaces `strategy`'s copy with `entries`.
    ///
    /// # Errors
    /// I/O errors, naming the file.
    pub fn rewrite(&self, strategy: &str, entries: &[JournalEntry]) -> Result<(), StoreError> {
        let mut bytes = Vec::new();
        for entry in entries {
            frame(&mut bytes, entry);
        }
        write_atomic(&self.path(strategy), &bytes)
    }

    /// Whether `strategy` has a copy (possibly empty).
    pub fn exists(&self, strategy: &str) -> bool {
        self.path(strategy).is_file()
    }

    /// Removes `strategy`'s copy (it will be rebuilt from the database).
    pub fn drop_copy(&self, strategy: &str) {
        let _ = fs::remove_file(self.path(strategy));
    }

    /// Seq of the last entry in the copy: `Some(0)` for an empty or missing
    /// copy, `None` when its end does not decode (a torn append).
    pub fn last_seq(&self, strategy: &str) -> Option<u64> {
        let Ok(mut file) = fs::File::open(self.path(strategy)) else {
            return Some(0);
        };
        let len = file.metadata().ok()?.len();
        if len == 0 {
            return Some(0);
        }
        let mut trailer = [0u8; 4];
        file.seek(SeekFrom::Start(len.checked_sub(4)?)).ok()?;
        file.read_exact(&mut trailer).ok()?;
        let size = u64::from(u32::from_le_bytes(trailer));
        file.seek(SeekFrom::Start(len.checked_sub(4 + size)?))
            .ok()?;
        let mut bytes = vec![0u8; size as usize];
        file.read_exact(&mut bytes).ok()?;
        codec::decode_entry(&bytes).ok().map(|e| e.event.seq)
    }

    /// Every entry of the copy, in order, checked to run from seq 1 without
    /// gaps.
    ///
    /// # Errors
    /// The copy cannot be read, does not decode, or has a gap — each named.
    pub fn read(&self, strategy: &str) -> Result<Vec<JournalEntry>, StoreError> {
        let path = self.path(strategy);
        let action = || format!("read the local journal copy {}", path.display());
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(StoreError::new(action(), e)),
        };
        let mut rest = &bytes[..];
        let mut entries: Vec<JournalEntry> = Vec::new();
        while !rest.is_empty() {
            let (entry, after) = codec::take_entry(rest).map_err(|e| {
                StoreError::new(
                    action(),
                    format!("entry {} does not decode: {e}", entries.len() + 1),
                )
            })?;
            rest = after
                .get(4..)
                .ok_or_else(|| StoreError::new(action(), "the last entry is cut short"))?;
            let expected = entries.last().map_or(1, |e| e.event.seq + 1);
            if entry.event.seq != expected {
                return Err(StoreError::new(
                    action(),
                    format!("seq {} where {expected} was expected", entry.event.seq),
                ));
            }
            entries.push(entry);
        }
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{Event, EventKind};
    use crate::store::Outcome;

    fn entry(seq: u64) -> JournalEntry {
        JournalEntry {
            event: Event {
                seq,
                timestamp_ms: seq,
                kind: EventKind::Timer(seq),
            },
            outcome: Outcome::Handled(Vec::new()),
        }
    }

    #[test]
    fn the_copy_appends_reads_back_and_names_its_last_seq() {
        let dir = tempfile::tempdir().unwrap();
        let mirror = JournalMirror::new(dir.path());
        assert_eq!(mirror.last_seq("s"), Some(0));
        assert!(mirror.read("s").unwrap().is_empty());
        let entries: Vec<JournalEntry> = (1..=5).map(entry).collect();
        mirror.append("s", &entries[..2]).unwrap();
        mirror.append("s", &entries[2..]).unwrap();
        assert_eq!(mirror.last_seq("s"), Some(5));
        assert_eq!(mirror.read("s").unwrap(), entries);

        // A torn append is noticed at both ends.
        let path = dir.path().join("journal/s.log");
        let len = fs::metadata(&path).unwrap().len();
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(len - 3).unwrap();
        assert_eq!(mirror.last_seq("s"), None);
        assert!(mirror.read("s").is_err());

        // A gap is an error, not a shorter journal.
        mirror.rewrite("s", &[entry(1), entry(3)]).unwrap();
        let error = mirror.read("s").unwrap_err().to_string();
        assert!(error.contains("seq 3 where 2"), "{error}");
    }
}
