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
//! position. Durability has a bounded delay: sled flushes every
//! `flush_every`, or after every write when that is zero.

use std::path::Path;
use std::time::{Duration, Instant};

/// Errors of the state store.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// sled could not open, read or write the database.
    #[error("egress state in {dir}: {source}")]
    Sled { dir: String, source: sled::Error },
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

/// The sled database of one egress worker. Cheap to clone.
#[derive(Clone)]
pub struct State {
    db: sled::Db,
    positions: sled::Tree,
    dir: String,
    /// Flush after every write (no background flush configured).
    flush_each_write: bool,
}

/// Key: topic bytes, a 0 byte (never in a Kafka topic name), partition big-endian.
fn key(topic: &str, partition: i32) -> Vec<u8> {
    let mut k = Vec::with_capacity(topic.len() + 5);
    k.extend_from_slice(topic.as_bytes());
    k.push(0);
    k.extend_from_slice(&partition.to_be_bytes());
    k
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

impl State {
    /// Opens (or creates) the database in `dir`. `flush_every` bounds how
    /// long a write may stay in memory; zero flushes on every write.
    pub fn open(dir: &Path, flush_every: Duration) -> Result<State, StateError> {
        let name = dir.display().to_string();
        let sled_err = |source| StateError::Sled { dir: name.clone(), source };
        let flush_ms = u64::try_from(flush_every.as_millis()).unwrap_or(u64::MAX);
        let db = sled::Config::new()
            .path(dir)
            .flush_every_ms((flush_ms > 0).then_some(flush_ms))
            .open()
            .map_err(sled_err)?;
        let positions = db.open_tree("positions").map_err(sled_err)?;
        Ok(State { db, positions, dir: name, flush_each_write: flush_ms == 0 })
    }

    fn err(&self, source: sled::Error) -> StateError {
        StateError::Sled { dir: self.dir.clone(), source }
    }

    /// The next offset to read of `topic`/`partition`, if one was stored.
    pub fn get(&self, topic: &str, partition: i32) -> Result<Option<i64>, StateError> {
        let Some(v) = self.positions.get(key(topic, partition)).map_err(|e| self.err(e))? else { return Ok(None) };
        let bytes: [u8; 8] = v.as_ref().try_into().map_err(|_| StateError::Corrupt {
            dir: self.dir.clone(),
            key: format!("{topic}/{partition}"),
        })?;
        Ok(Some(i64::from_be_bytes(bytes)))
    }

    /// Writes positions atomically (one sled batch), then flushes when
    /// configured to flush on every write. Records the write latency.
    pub async fn set_batch(&self, positions: &[Position]) -> Result<(), StateError> {
        let started = Instant::now();
        let mut batch = sled::Batch::default();
        for p in positions {
            batch.insert(key(&p.topic, p.partition), &p.next_offset.to_be_bytes());
        }
        self.positions.apply_batch(batch).map_err(|e| self.err(e))?;
        if self.flush_each_write {
            self.db.flush_async().await.map_err(|e| self.err(e))?;
        }
        metrics::histogram!(crate::egress::metrics::STATE_WRITE).record(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Flushes everything written so far to disk (at shutdown).
    pub async fn flush(&self) -> Result<(), StateError> {
        self.db.flush_async().await.map(|_| ()).map_err(|e| self.err(e))
    }

    /// Every stored position, sorted by topic and partition.
    pub fn all(&self) -> Result<Vec<Position>, StateError> {
        let mut out = Vec::new();
        for entry in self.positions.iter() {
            let (k, v) = entry.map_err(|e| self.err(e))?;
            let corrupt = || StateError::Corrupt { dir: self.dir.clone(), key: String::from_utf8_lossy(&k).into_owned() };
            let (topic, partition) = parse_key(&k).ok_or_else(corrupt)?;
            let bytes: [u8; 8] = v.as_ref().try_into().map_err(|_| corrupt())?;
            out.push(Position { topic, partition, next_offset: i64::from_be_bytes(bytes) });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            let p = |topic: &str, partition, next_offset| Position { topic: topic.into(), partition, next_offset };
            state.set_batch(&[p("t", 1, 10), p("t", 0, 5), p("a.b", 3, 7)]).await.expect("set");
            state.set_batch(&[p("t", 0, 6)]).await.expect("set");
        }
        let state = State::open(dir.path(), Duration::from_millis(100)).expect("reopen");
        assert_eq!(state.get("t", 0).expect("get"), Some(6));
        let all: Vec<_> = state.all().expect("all").into_iter().map(|p| (p.topic, p.partition, p.next_offset)).collect();
        assert_eq!(all, [("a.b".to_string(), 3, 7), ("t".to_string(), 0, 6), ("t".to_string(), 1, 10)]);
    }
}
