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
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

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

/// Removes interrupted snapshots (`snap.*.generating`) from `dir`; returns
/// how many it removed.
pub fn remove_interrupted_snapshots(dir: &Path) -> std::io::Result<usize> {
    let mut removed = 0;
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            let bytes = entry.metadata().map(|m| m.len()).unwrap_or(0);
            std::fs::remove_file(entry.path())?;
            warn!(path = %entry.path().display(), bytes, "removed an interrupted sled snapshot (disk full or crash while it was written)");
            removed += 1;
        }
    }
    Ok(removed)
}

/// What to do about a database that does not open.
fn open_hint(e: &sled::Error) -> &'static str {
    match e {
        // ENOSPC (28 on Linux and macOS), bare or wrapped by sled in a
        // custom error; ErrorKind::StorageFull needs Rust 1.83.
        sled::Error::Io(io) if io.raw_os_error() == Some(28) || io.to_string().contains("No space left") => {
            "free space on its disk; egress retries by itself"
        }
        sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => {
            "another process (a second egress, `inspect offsets`) has it open; retrying"
        }
        sled::Error::Corruption { .. } => {
            "its files are corrupt: stop egress, move the folder away and start again; egress then resumes \
             from the offsets it committed to Kafka (egress.group_id)"
        }
        _ => "retrying; if it persists, stop egress, move the folder away and start again: egress then \
              resumes from the offsets it committed to Kafka (egress.group_id)",
    }
}

impl State {
    /// Opens (or creates) the database in `dir`. `flush_every` says how
    /// long a write may stay in memory (the caller flushes); zero flushes
    /// on every write.
    pub fn open(dir: &Path, flush_every: Duration) -> Result<State, StateError> {
        let state = State::closed(dir, flush_every);
        state.reopen()?;
        Ok(state)
    }

    /// A state not opened yet: every operation returns
    /// [`StateError::Unavailable`] until [`State::reopen`] succeeds.
    pub fn closed(dir: &Path, flush_every: Duration) -> State {
        State {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                name: dir.display().to_string(),
                flush_each_write: flush_every.is_zero(),
                open: Mutex::new(None),
                written: Mutex::new(Positions::new()),
                durable: Mutex::new(Positions::new()),
            }),
        }
    }

    /// Whether the database is open (no error since the last open).
    pub fn is_open(&self) -> bool {
        lock(&self.inner.open).is_some()
    }

    /// The folder, for messages.
    pub fn dir(&self) -> &str {
        &self.inner.name
    }

    /// (Re)opens the database, blocking: removes interrupted snapshots,
    /// opens sled, writes back every position written in this process and
    /// flushes. Errors are logged and counted.
    pub fn reopen(&self) -> Result<(), StateError> {
        // Drop the failed database first: sled holds a lock on its folder.
        let was_open = lock(&self.inner.open).take().is_some();
        let result = self.try_open();
        match &result {
            Ok(()) if was_open => info!(dir = %self.inner.name, "egress state reopened"),
            Ok(()) => {}
            Err(e) => self.failed("open", e),
        }
        result
    }

    fn try_open(&self) -> Result<(), StateError> {
        let name = &self.inner.name;
        let io = |source| StateError::Io {
            dir: name.clone(),
            source,
        };
        std::fs::create_dir_all(&self.inner.dir).map_err(io)?;
        remove_interrupted_snapshots(&self.inner.dir).map_err(io)?;
        let db = sled::Config::new()
            .path(&self.inner.dir)
            .flush_every_ms(None)
            .cache_capacity(CACHE_CAPACITY)
            .open()
            .map_err(|source| StateError::Open {
                dir: name.clone(),
                hint: open_hint(&source),
                source,
            })?;
        let sled_err = |source| StateError::Sled {
            dir: name.clone(),
            source,
        };
        let positions = db.open_tree("positions").map_err(sled_err)?;
        let windows = db.open_tree("windows").map_err(sled_err)?;
        let gaps = db.open_tree("gaps").map_err(sled_err)?;
        let written = lock(&self.inner.written).clone();
        if !written.is_empty() {
            let mut batch = sled::Batch::default();
            for ((topic, partition), offset) in &written {
                batch.insert(key(topic, *partition), &offset.to_be_bytes());
            }
            positions.apply_batch(batch).map_err(sled_err)?;
        }
        db.flush().map_err(sled_err)?;
        lock(&self.inner.durable).extend(written);
        *lock(&self.inner.open) = Some(Open {
            db,
            positions,
            windows,
            gaps,
        });
        Ok(())
    }

    /// Closes an open database whose folder was deleted under it (sled
    /// would go on writing to the deleted files, and a restart would find
    /// nothing); true when it did. The next [`State::reopen`] recreates the
    /// folder with every position written in this process.
    pub fn close_if_lost(&self) -> bool {
        if !self.is_open() || self.inner.dir.join("db").exists() {
            return false;
        }
        lock(&self.inner.open).take();
        error!(dir = %self.inner.name, "egress state folder deleted while egress runs; recreating it with the positions in memory");
        metrics::counter!(crate::egress::metrics::STATE_ERRORS, "op" => "lost").increment(1);
        true
    }

    /// Logs and counts a failed operation; closes the database when sled
    /// itself failed (it refuses everything after an I/O error).
    fn failed(&self, op: &'static str, e: &StateError) {
        if matches!(e, StateError::Unavailable { .. }) {
            return;
        }
        if matches!(e, StateError::Sled { .. }) {
            lock(&self.inner.open).take();
        }
        error!(op, error = %e, "egress state failed; positions wait until it is writable again");
        metrics::counter!(crate::egress::metrics::STATE_ERRORS, "op" => op).increment(1);
    }

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
mod tests {
    use super::*;

    fn p(topic: &str, partition: i32, next_offset: i64) -> Position {
        Position {
            topic: topic.into(),
            partition,
            next_offset,
        }
    }

    #[test]
    fn the_position_is_the_offset_after_the_last_delivered_record() {
        assert_eq!(next_offset_after(0), 1);
        assert_eq!(next_offset_after(41), 42);
    }

    #[tokio::test]
    async fn positions_survive_reopening_and_are_listed_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let state = State::open(dir.path(), Duration::ZERO).expect("open");
            assert_eq!(state.get("t", 0).expect("get"), None);
            state
                .set_batch(&[p("t", 1, 10), p("t", 0, 5), p("a.b", 3, 7)])
                .await
                .expect("set");
            state.set_batch(&[p("t", 0, 6)]).await.expect("set");
        }
        let state = State::open(dir.path(), Duration::from_millis(100)).expect("reopen");
        assert_eq!(state.get("t", 0).expect("get"), Some(6));
        let all: Vec<_> = state
            .all()
            .expect("all")
            .into_iter()
            .map(|p| (p.topic, p.partition, p.next_offset))
            .collect();
        assert_eq!(
            all,
            [
                ("a.b".to_string(), 3, 7),
                ("t".to_string(), 0, 6),
                ("t".to_string(), 1, 10)
            ]
        );
    }

    #[tokio::test]
    async fn an_interrupted_snapshot_is_removed_before_opening() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let state = State::open(dir.path(), Duration::ZERO).expect("open");
            state.set_batch(&[p("t", 0, 42)]).await.expect("set");
        }
        // What a full disk leaves: sled sorts it after every real snapshot.
        let leftover = dir.path().join("snap.FFFFFFFFFFFFFFFF.generating");
        std::fs::write(&leftover, b"").expect("leftover");
        let state = State::open(dir.path(), Duration::ZERO).expect("opens despite the leftover");
        assert_eq!(state.get("t", 0).expect("get"), Some(42));
        assert!(!leftover.exists());
    }

    #[tokio::test]
    async fn durable_positions_are_only_those_flushed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = State::open(dir.path(), Duration::from_secs(1)).expect("open");
        state.set_batch(&[p("t", 0, 5)]).await.expect("set");
        assert!(state.durable().is_empty(), "not flushed yet");
        state.flush().await.expect("flush");
        assert_eq!(state.durable().get(&("t".to_string(), 0)), Some(&5));
    }

    #[tokio::test]
    async fn a_folder_deleted_under_an_open_state_is_recreated_with_the_positions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state");
        let state = State::open(&path, Duration::ZERO).expect("open");
        state.set_batch(&[p("t", 0, 7)]).await.expect("set");
        assert!(!state.close_if_lost(), "nothing lost yet");
        std::fs::remove_dir_all(&path).expect("delete");
        assert!(state.close_if_lost());
        state.reopen().expect("reopen");
        drop(state);
        // sled's background threads let go of the folder's lock a moment
        // after the last handle is dropped (egress retries the same way).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let state = loop {
            match State::open(&path, Duration::ZERO) {
                Ok(state) => break state,
                Err(_) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("open again: {e:?}"),
            }
        };
        assert_eq!(state.get("t", 0).expect("get"), Some(7));
    }

    #[tokio::test]
    async fn a_closed_state_refuses_writes_and_reopening_writes_them_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = State::closed(dir.path(), Duration::ZERO);
        assert!(matches!(
            state.set_batch(&[p("t", 0, 9)]).await,
            Err(StateError::Unavailable { .. })
        ));
        assert!(!state.is_open());
        state.reopen().expect("reopen");
        assert_eq!(
            state.get("t", 0).expect("get"),
            Some(9),
            "the refused write is kept and written on reopen"
        );
        assert_eq!(state.durable().get(&("t".to_string(), 0)), Some(&9));
    }

    #[tokio::test]
    async fn a_position_and_its_windows_are_written_together() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let state = State::open(dir.path(), Duration::ZERO).expect("open");
            let (mut w, mut g) = (sled::Batch::default(), sled::Batch::default());
            let prefix = partition_key("t", 2);
            w.insert([prefix.as_slice(), b"S1"].concat(), &b"one"[..]);
            g.insert([prefix.as_slice(), b"G"].concat(), &b"gap"[..]);
            state
                .set_with_windows(&p("t", 2, 12), &w, &g)
                .await
                .expect("set");
            assert_eq!(state.durable().get(&("t".to_string(), 2)), Some(&12));
        }
        let state = State::open(dir.path(), Duration::ZERO).expect("reopen");
        assert_eq!(state.get("t", 2).expect("get"), Some(12));
        let prefix = partition_key("t", 2);
        let windows = state.scan(Tree::Windows, &prefix).expect("scan");
        assert_eq!(
            windows,
            [([prefix.as_slice(), b"S1"].concat(), b"one".to_vec())]
        );
        assert_eq!(state.scan(Tree::Gaps, &prefix).expect("scan").len(), 1);
        assert!(state
            .scan(Tree::Windows, &partition_key("t", 3))
            .expect("scan")
            .is_empty());
    }
}
