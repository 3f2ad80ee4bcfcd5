//! The egress worker's durable state, in sled: one position per task-topic
//! partition.
//!
//! **The offset rule**: the stored value is the *next offset to read*. It
//! only ever moves to [`next_offset_after`] the last record of a request the
//! receiver acknowledged (2xx) or that went to the dead-letter topic, so
//! every record below it has left the worker for good and every record at
//! or above it will be read again after a restart. A crash therefore never
//! loses a record; it may resend what was acknowledged since the last flush.
//!
//! Writes go through [`State::set_batch`], one sled batch per call, so that
//! later per-partition state (gaps, delays) commits atomically with the
//! position. Durability: with a zero `flush_every` every write is flushed
//! before `set_batch` returns; otherwise the egress role calls
//! [`State::flush`] every `flush_every` (sled's own background flusher is
//! not used: its I/O errors are invisible to the caller).
//!
//! **Failures never corrupt and never stop the role.** Once sled reports an
//! I/O error (a full disk) it refuses every later operation, so the database
//! is closed: the error is logged and counted in one place
//! ([`State::failed`]), writes return [`StateError::Unavailable`] until
//! [`State::reopen`] succeeds, and reopening writes back every position
//! written in this process, so nothing acknowledged is forgotten. Only
//! positions known to be on disk ([`State::durable`]) may be copied to
//! Kafka, so a Kafka-committed offset is never ahead of sled.
//!
//! An interrupted sled snapshot (`snap.*.generating`, left by a full disk or
//! a crash during open) is never a complete snapshot (sled renames it when
//! it is), but sled reads it as the newest one and refuses to open ("Read
//! corrupted data"). Opening therefore removes such files first, logged.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

mod open;

pub use open::remove_interrupted_snapshots;

/// sled's page cache (its default is 1 GiB). Measured at 100k series
/// (`examples/windows_mem.rs`, `integration/egress_windows_load.rs`) it
/// did not lower the peak RSS: sled's own overhead beyond this cache
/// dominates (ARCHITECTURE.md, windows); it caps the cache at a million.
pub const CACHE_CAPACITY: u64 = 64 << 20;

/// Errors of the state store.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// sled could not open the database; `hint` says what to do.
    #[error("cannot open the egress state in {dir}: {source}; {hint}")]
    Open {
        dir: String,
        source: sled::Error,
        hint: &'static str,
    },
    /// The folder could not be created or read.
    #[error("egress state in {dir}: {source}")]
    Io { dir: String, source: std::io::Error },
    /// sled could not read or write the database.
    #[error("egress state in {dir}: {source}")]
    Sled { dir: String, source: sled::Error },
    /// The database is closed after an earlier error, until it reopens.
    #[error("egress state in {dir} is unavailable after an earlier error; reopening")]
    Unavailable { dir: String },
    /// A stored value is not what this version writes.
    #[error("egress state in {dir}: corrupt entry {key:?}")]
    Corrupt { dir: String, key: String },
}

/// The position after delivering the record at `last_delivered`: the
/// next offset to read. The one place the offset rule is applied.
pub fn next_offset_after(last_delivered: i64) -> i64 {
    last_delivered + 1
}

/// One stored position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// Task topic.
    pub topic: String,
    /// Partition of the topic.
    pub partition: i32,
    /// Next offset to read.
    pub next_offset: i64,
}

/// (topic, partition) → next offset to read.
pub type Positions = BTreeMap<(String, i32), i64>;

/// An open database.
#[derive(Clone)]
struct Open {
    db: sled::Db,
    positions: sled::Tree,
    /// Per-series window state and per-partition window meta (`egress::windows::store`).
    windows: sled::Tree,
    /// Recorded gaps.
    gaps: sled::Tree,
}

/// A key and value read from a tree.
pub type Entry = (Vec<u8>, Vec<u8>);

/// The trees besides the positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tree {
    /// Window state.
    Windows,
    /// Recorded gaps.
    Gaps,
}

struct Inner {
    dir: PathBuf,
    name: String,
    /// Flush after every write (`flush_every` is zero).
    flush_each_write: bool,
    /// None while closed after an error (or before the first open).
    open: Mutex<Option<Open>>,
    /// The newest position of every partition written in this process,
    /// whether or not sled took it: what a reopen writes back.
    written: Mutex<Positions>,
    /// Positions known to be on disk.
    durable: Mutex<Positions>,
}

/// The sled database of one egress worker. Cheap to clone.
#[derive(Clone)]
pub struct State {
    inner: Arc<Inner>,
}

/// Key: topic bytes, a 0 byte (never in a Kafka topic name), partition big-endian.
fn key(topic: &str, partition: i32) -> Vec<u8> {
    let mut k = Vec::with_capacity(topic.len() + 5);
    k.extend_from_slice(topic.as_bytes());
    k.push(0);
    k.extend_from_slice(&partition.to_be_bytes());
    k
}

/// The key prefix of one partition, shared by every tree.
pub fn partition_key(topic: &str, partition: i32) -> Vec<u8> {
    key(topic, partition)
}

/// The topic and partition of a [`partition_key`].
pub fn split_partition_key(k: &[u8]) -> Option<(String, i32)> {
    parse_key(k)
}

fn parse_key(k: &[u8]) -> Option<(String, i32)> {
    let split = k.len().checked_sub(5)?;
    let (topic, rest) = k.split_at(split);
    if rest[0] != 0 {
        return None;
    }
    let partition = i32::from_be_bytes(rest[1..].try_into().ok()?);
    Some((String::from_utf8(topic.to_vec()).ok()?, partition))
}

/// A poisoned lock only means another thread panicked while holding it;
/// the maps stay consistent (every update is a single insert).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
impl State {
    fn handle(&self) -> Result<Open, StateError> {
        lock(&self.inner.open)
            .clone()
            .ok_or_else(|| StateError::Unavailable {
                dir: self.inner.name.clone(),
            })
    }

    fn err(&self, source: sled::Error) -> StateError {
        StateError::Sled {
            dir: self.inner.name.clone(),
            source,
        }
    }

    /// The next offset to read of `topic`/`partition`, if one was stored.
    pub fn get(&self, topic: &str, partition: i32) -> Result<Option<i64>, StateError> {
        let open = self.handle()?;
        let found = open
            .positions
            .get(key(topic, partition))
            .map_err(|e| self.err(e));
        let v = match found {
            Ok(Some(v)) => v,
            Ok(None) => return Ok(None),
            Err(e) => {
                self.failed("read", &e);
                return Err(e);
            }
        };
        let bytes: [u8; 8] = v.as_ref().try_into().map_err(|_| StateError::Corrupt {
            dir: self.inner.name.clone(),
            key: format!("{topic}/{partition}"),
        })?;
        Ok(Some(i64::from_be_bytes(bytes)))
    }

    /// Writes positions atomically (one sled batch), then flushes when
    /// configured to flush on every write. Records the write latency. On
    /// an error nothing is lost: the positions are kept and written when
    /// the database reopens, but the caller must not move on before a
    /// later call succeeds.
    pub async fn set_batch(&self, positions: &[Position]) -> Result<(), StateError> {
        let started = Instant::now();
        {
            let mut written = lock(&self.inner.written);
            for p in positions {
                written.insert((p.topic.clone(), p.partition), p.next_offset);
            }
        }
        let open = self.handle()?;
        let mut batch = sled::Batch::default();
        for p in positions {
            batch.insert(key(&p.topic, p.partition), &p.next_offset.to_be_bytes());
        }
        if let Err(e) = open.positions.apply_batch(batch).map_err(|e| self.err(e)) {
            self.failed("write", &e);
            return Err(e);
        }
        if self.inner.flush_each_write {
            if let Err(e) = open.db.flush_async().await.map_err(|e| self.err(e)) {
                self.failed("flush", &e);
                return Err(e);
            }
            let mut durable = lock(&self.inner.durable);
            for p in positions {
                durable.insert((p.topic.clone(), p.partition), p.next_offset);
            }
        }
        metrics::histogram!(crate::egress::metrics::STATE_WRITE)
            .record(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Writes one partition's position together with its window state and
    /// gaps in one sled transaction: after a crash sled holds either all of
    /// it or none of it, so positions and windows never disagree. Unlike
    /// [`State::set_batch`], a failed write is not written back on reopen
    /// (the position alone would not match the windows): the caller retries
    /// the whole write.
    pub async fn set_with_windows(
        &self,
        position: &Position,
        windows: &sled::Batch,
        gaps: &sled::Batch,
    ) -> Result<(), StateError> {
        use sled::transaction::{TransactionError, Transactional};
        let started = Instant::now();
        let open = self.handle()?;
        let mut positions = sled::Batch::default();
        positions.insert(
            key(&position.topic, position.partition),
            &position.next_offset.to_be_bytes(),
        );
        let result = (&open.positions, &open.windows, &open.gaps)
            .transaction(|(p, w, g)| {
                p.apply_batch(&positions)?;
                w.apply_batch(windows)?;
                g.apply_batch(gaps)?;
                Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
            })
            .map_err(|e| match e {
                TransactionError::Storage(e) => self.err(e),
                TransactionError::Abort(()) => self.err(sled::Error::Unsupported("aborted".into())),
            });
        if let Err(e) = result {
            self.failed("write", &e);
            return Err(e);
        }
        let slot = (position.topic.clone(), position.partition);
        lock(&self.inner.written).insert(slot.clone(), position.next_offset);
        if self.inner.flush_each_write {
            if let Err(e) = open.db.flush_async().await.map_err(|e| self.err(e)) {
                self.failed("flush", &e);
                return Err(e);
            }
            lock(&self.inner.durable).insert(slot, position.next_offset);
        }
        metrics::histogram!(crate::egress::metrics::STATE_WRITE)
            .record(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Entries of `tree` whose key starts with `prefix`, in key order.
    pub fn scan(&self, tree: Tree, prefix: &[u8]) -> Result<Vec<Entry>, StateError> {
        let open = self.handle()?;
        let tree = match tree {
            Tree::Windows => &open.windows,
            Tree::Gaps => &open.gaps,
        };
        let mut out = Vec::new();
        for entry in tree.scan_prefix(prefix) {
            let (k, v) = entry.map_err(|e| self.err(e))?;
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    /// Applies `batch` to `tree` on its own (housekeeping that no position
    /// depends on, such as trimming old gaps).
    pub fn apply(&self, tree: Tree, batch: sled::Batch) -> Result<(), StateError> {
        let open = self.handle()?;
        let tree = match tree {
            Tree::Windows => &open.windows,
            Tree::Gaps => &open.gaps,
        };
        tree.apply_batch(batch).map_err(|e| {
            let e = self.err(e);
            self.failed("write", &e);
            e
        })
    }

    /// Flushes everything written so far to disk; what was written before
    /// the call is then durable.
    pub async fn flush(&self) -> Result<(), StateError> {
        let open = self.handle()?;
        let written = lock(&self.inner.written).clone();
        if let Err(e) = open.db.flush_async().await.map_err(|e| self.err(e)) {
            self.failed("flush", &e);
            return Err(e);
        }
        lock(&self.inner.durable).extend(written);
        Ok(())
    }

    /// The positions written in this process that are known to be on disk.
    pub fn durable(&self) -> Positions {
        lock(&self.inner.durable).clone()
    }

    /// Every stored position, sorted by topic and partition.
    pub fn all(&self) -> Result<Vec<Position>, StateError> {
        let open = self.handle()?;
        let mut out = Vec::new();
        for entry in open.positions.iter() {
            let (k, v) = entry.map_err(|e| self.err(e))?;
            let corrupt = || StateError::Corrupt {
                dir: self.inner.name.clone(),
                key: String::from_utf8_lossy(&k).into_owned(),
            };
            let (topic, partition) = parse_key(&k).ok_or_else(corrupt)?;
            let bytes: [u8; 8] = v.as_ref().try_into().map_err(|_| corrupt())?;
            out.push(Position {
                topic,
                partition,
                next_offset: i64::from_be_bytes(bytes),
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
