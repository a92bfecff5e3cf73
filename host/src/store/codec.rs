//! The store's binary formats: journal entries, checkpoint files and backlog
//! batches, each encoded with `postcard` (compact, and floats are kept as
//! their exact bits, so NaN and infinities round-trip) and guarded by a CRC-32
//! (checkpoint states also carry their SHA-256).
//!
//! Every format opens with a tag that JSON never starts with, so data written
//! by earlier versions (JSON) is still read: each decoder accepts both.
//! This module only converts bytes; it never touches files or databases.

use serde::{Deserialize, Serialize};

use super::{Checkpoint, CheckpointFile, JournalEntry, Write};

/// First byte of a binary journal entry.
const ENTRY_TAG: u8 = 0xB1;
/// Opening bytes of a binary checkpoint file.
const CHECKPOINT_MAGIC: &[u8; 8] = b"PBCKPT\x00\x01";
/// Opening bytes of a binary backlog batch.
const BATCH_MAGIC: &[u8; 8] = b"PBLOG\x00\x00\x01";

/// Bytes that do not decode, and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct CodecError(String);

impl CodecError {
    fn new(message: impl std::fmt::Display) -> Self {
        CodecError(message.to_string())
    }
}

fn crc(bytes: &[u8]) -> [u8; 4] {
    crc32fast::hash(bytes).to_le_bytes()
}

/// One journal entry: `0xB1`, the postcard body, the body's CRC-32 (LE).
/// Entries are self-delimiting, so a page of them can be concatenated.
pub fn encode_entry(entry: &JournalEntry) -> Vec<u8> {
    let mut out = vec![ENTRY_TAG];
    // A `Vec` sink cannot fail, and every field of an entry serialises.
    out = postcard::to_extend(entry, out).unwrap_or_else(|_| vec![ENTRY_TAG]);
    let sum = crc(&out[1..]);
    out.extend_from_slice(&sum);
    out
}

/// Decodes one binary entry from the front of `bytes`; returns it and the rest.
///
/// # Errors
/// The entry does not decode or fails its CRC.
pub fn take_entry(bytes: &[u8]) -> Result<(JournalEntry, &[u8]), CodecError> {
    let Some((&ENTRY_TAG, body)) = bytes.split_first() else {
        return Err(CodecError::new("not a journal entry (bad tag)"));
    };
    let (entry, rest) = postcard::take_from_bytes::<JournalEntry>(body)
        .map_err(|e| CodecError::new(format!("journal entry does not decode: {e}")))?;
    let used = body.len() - rest.len();
    let (sum, rest) = rest
        .split_first_chunk::<4>()
        .ok_or_else(|| CodecError::new("journal entry is cut short"))?;
    if *sum != crc(&body[..used]) {
        return Err(CodecError::new("journal entry fails its CRC"));
    }
    Ok((entry, rest))
}

/// Decodes one stored entry: binary, or JSON as written by earlier versions.
///
/// # Errors
/// Bytes that are neither, or a binary entry failing its CRC.
pub fn decode_entry(bytes: &[u8]) -> Result<JournalEntry, CodecError> {
    if bytes.first() == Some(&b'{') {
        return serde_json::from_slice(bytes)
            .map_err(|e| CodecError::new(format!("journal entry (JSON) does not decode: {e}")));
    }
    match take_entry(bytes)? {
        (entry, []) => Ok(entry),
        _ => Err(CodecError::new("trailing bytes after a journal entry")),
    }
}

/// Decodes a concatenation of binary entries (a page read in one go).
///
/// # Errors
/// Any entry that does not decode; the caller finds which one row by row.
pub fn decode_entries(mut bytes: &[u8]) -> Result<Vec<JournalEntry>, CodecError> {
    let mut entries = Vec::new();
    while !bytes.is_empty() {
        let (entry, rest) = take_entry(bytes)?;
        entries.push(entry);
        bytes = rest;
    }
    Ok(entries)
}

/// A checkpoint file's metadata; the state follows it raw.
#[derive(Serialize, Deserialize)]
struct CheckpointHeader {
    seq: u64,
    event_time_ms: u64,
    state_version: u32,
    module_digest: String,
    checksum: Vec<u8>,
    created_at_ms: u64,
    state_len: u64,
}

/// A checkpoint file: magic, header length (u32 LE), postcard header, header
/// CRC-32, then the state's raw bytes (checked by the SHA-256 in the header).
pub fn encode_checkpoint(c: &Checkpoint) -> Vec<u8> {
    let header = CheckpointHeader {
        seq: c.seq,
        event_time_ms: c.event_time_ms,
        state_version: c.state_version,
        module_digest: c.module_digest.clone(),
        checksum: c.checksum.to_vec(),
        created_at_ms: c.created_at_ms,
        state_len: c.state.len() as u64,
    };
    let head = postcard::to_allocvec(&header).unwrap_or_default();
    let mut out = Vec::with_capacity(CHECKPOINT_MAGIC.len() + 8 + head.len() + c.state.len());
    out.extend_from_slice(CHECKPOINT_MAGIC);
    out.extend_from_slice(&(head.len() as u32).to_le_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(&crc(&head));
    out.extend_from_slice(&c.state);
    out
}

/// Decodes a checkpoint file: binary, or JSON as written by earlier versions.
/// The state's checksum is not checked here ([`Checkpoint::is_intact`]).
///
/// # Errors
/// A file that is neither, a damaged header, or a state of the wrong length.
pub fn decode_checkpoint(bytes: &[u8]) -> Result<Checkpoint, CodecError> {
    let Some(rest) = bytes.strip_prefix(CHECKPOINT_MAGIC) else {
        if bytes.first() == Some(&b'{') {
            return serde_json::from_slice::<CheckpointFile>(bytes)
                .map(Checkpoint::from)
                .map_err(|e| CodecError::new(format!("checkpoint (JSON) does not decode: {e}")));
        }
        return Err(CodecError::new("not a checkpoint file (bad magic)"));
    };
    let (len, rest) = rest
        .split_first_chunk::<4>()
        .ok_or_else(|| CodecError::new("checkpoint header is cut short"))?;
    let len = u32::from_le_bytes(*len) as usize;
    if rest.len() < len + 4 {
        return Err(CodecError::new("checkpoint header is cut short"));
    }
    let (head, rest) = rest.split_at(len);
    let (sum, state) = rest.split_at(4);
    if sum != crc(head) {
        return Err(CodecError::new("checkpoint header fails its CRC"));
    }
    let header: CheckpointHeader = postcard::from_bytes(head)
        .map_err(|e| CodecError::new(format!("checkpoint header does not decode: {e}")))?;
    if state.len() as u64 != header.state_len {
        return Err(CodecError::new(format!(
            "checkpoint state is {} bytes, the header says {}",
            state.len(),
            header.state_len
        )));
    }
    Ok(Checkpoint::from(CheckpointFile {
        seq: header.seq,
        event_time_ms: header.event_time_ms,
        state_version: header.state_version,
        module_digest: header.module_digest,
        state: state.to_vec(),
        checksum: header.checksum,
        created_at_ms: header.created_at_ms,
    }))
}

/// A backlog batch: magic, postcard list of writes, CRC-32 of that list.
pub fn encode_batch(writes: &[Write]) -> Vec<u8> {
    let mut out = BATCH_MAGIC.to_vec();
    out = postcard::to_extend(writes, out).unwrap_or_else(|_| BATCH_MAGIC.to_vec());
    let sum = crc(&out[BATCH_MAGIC.len()..]);
    out.extend_from_slice(&sum);
    out
}

/// Decodes a backlog batch: binary, or JSON as written by earlier versions.
///
/// # Errors
/// A batch that is neither, or one failing its CRC.
pub fn decode_batch(bytes: &[u8]) -> Result<Vec<Write>, CodecError> {
    let Some(rest) = bytes.strip_prefix(BATCH_MAGIC) else {
        if bytes.first() == Some(&b'[') {
            return serde_json::from_slice(bytes).map_err(|e| {
                CodecError::new(format!("backlog batch (JSON) does not decode: {e}"))
            });
        }
        return Err(CodecError::new("not a backlog batch (bad magic)"));
    };
    let (body, sum) = rest
        .split_last_chunk::<4>()
        .ok_or_else(|| CodecError::new("backlog batch is cut short"))?;
    if *sum != crc(body) {
        return Err(CodecError::new("backlog batch fails its CRC"));
    }
    postcard::from_bytes(body)
        .map_err(|e| CodecError::new(format!("backlog batch does not decode: {e}")))
}

/// Serde for a byte buffer as bytes (one length and a copy in postcard)
/// rather than a sequence of numbers; still reads the number arrays JSON
/// holds.
pub mod bytes {
    use serde::de::{self, SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        struct Bytes;
        impl<'de> Visitor<'de> for Bytes {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(b) = seq.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(out)
            }
        }
        deserializer.deserialize_byte_buf(Bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{Action, Book, Event, EventKind, Level, SetTimer};
    use crate::store::{Outcome, SystemEvent};

    fn entry(seq: u64, price: f64) -> JournalEntry {
        JournalEntry {
            event: Event {
                seq,
                timestamp_ms: 1_700_000_000_000 + seq,
                kind: EventKind::Book(Book {
                    market: "m".into(),
                    bids: vec![Level { price, size: 1.0 }],
                    asks: vec![],
                }),
            },
            outcome: Outcome::Handled(vec![Action::SetTimer(SetTimer {
                id: seq,
                at_ms: seq * 10,
            })]),
        }
    }

    #[test]
    fn non_finite_floats_round_trip_exactly() {
        for price in [
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            -0.0,
            f64::MIN_POSITIVE,
        ] {
            let back = decode_entry(&encode_entry(&entry(1, price))).unwrap();
            let EventKind::Book(book) = back.event.kind else {
                panic!("{back:?}")
            };
            assert_eq!(book.bids[0].price.to_bits(), price.to_bits());
        }
    }

    #[test]
    fn entries_round_trip_alone_and_concatenated_and_old_json_is_read() {
        let entries: Vec<JournalEntry> = (1..=5).map(|s| entry(s, s as f64)).collect();
        let mut page = Vec::new();
        for e in &entries {
            let bytes = encode_entry(e);
            assert_eq!(&decode_entry(&bytes).unwrap(), e);
            page.extend(bytes);
        }
        assert_eq!(decode_entries(&page).unwrap(), entries);
        let json = serde_json::to_vec(&entries[0]).unwrap();
        assert_eq!(decode_entry(&json).unwrap(), entries[0]);
        // One flipped bit anywhere is caught.
        let mut bytes = encode_entry(&entries[2]);
        let last = bytes.len() - 5;
        bytes[last] ^= 0x10;
        assert!(decode_entry(&bytes).is_err());
    }

    #[test]
    fn checkpoints_are_raw_bytes_and_old_json_files_are_read() {
        let state = vec![0u8, 1, 2, 255, 254, 0];
        let c = Checkpoint::new(42, 7, 3, "digest", state.clone());
        let bytes = encode_checkpoint(&c);
        assert!(bytes.len() < 100 + state.len(), "{} bytes", bytes.len());
        assert_eq!(decode_checkpoint(&bytes).unwrap(), c);
        let json = serde_json::to_vec(&CheckpointFile::from(&c)).unwrap();
        assert_eq!(decode_checkpoint(&json).unwrap(), c);
        assert!(decode_checkpoint(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn batches_round_trip_with_non_finite_floats_and_old_json_is_read() {
        let writes = vec![
            Write::Trade {
                strategy: "s".into(),
                trade: crate::store::TradeRecord {
                    seq: 1,
                    intent_id: "1.0".into(),
                    market: "m".into(),
                    side: "buy".into(),
                    price: f64::NAN,
                    size: f64::INFINITY,
                    fee: f64::NEG_INFINITY,
                    pnl: -0.0,
                    executed_at_ms: 5,
                },
            },
            Write::Checkpoint {
                strategy: "s".into(),
                checkpoint: CheckpointFile::from(&Checkpoint::new(1, 2, 1, "d", vec![9; 1000])),
            },
            Write::SystemEvent(SystemEvent {
                timestamp_ms: 1,
                event_type: "t".into(),
                component: "c".into(),
                message: "m".into(),
                id: "x".into(),
            }),
        ];
        let bytes = encode_batch(&writes);
        assert!(bytes.len() < 1300, "{} bytes", bytes.len());
        let back = decode_batch(&bytes).unwrap();
        let Write::Trade { trade, .. } = &back[0] else {
            panic!("{back:?}")
        };
        assert!(trade.price.is_nan());
        assert_eq!(trade.size, f64::INFINITY);
        assert_eq!(trade.fee, f64::NEG_INFINITY);
        assert!(trade.pnl.is_sign_negative());
        assert_eq!(back[1..], writes[1..]);
        let json = serde_json::to_vec(&writes[1..]).unwrap();
        assert_eq!(decode_batch(&json).unwrap(), writes[1..]);
    }

    #[test]
    fn a_heartbeat_write_survives_the_backlog_encoding() {
        let beat = Write::Heartbeat(crate::store::HeartbeatRecord {
            strategy: "a".into(),
            host: "h".into(),
            at_ms: 7,
            body: serde_json::json!({"state": "running", "last_seq": 12, "stuck": false}),
        });
        let back = decode_batch(&encode_batch(std::slice::from_ref(&beat))).expect("decodes");
        assert_eq!(back, vec![beat]);
    }
}
