//! Opening, recovering and closing the egress state: removing interrupted
//! sled snapshots, (re)opening sled and writing back the positions held in
//! memory, closing after a sled failure or a deleted folder, and logging
//! and counting every failure in one place ([`State::failed`]).
//!
//! May depend on: the parent `state` module's types, sled, and
//! `crate::egress::metrics` for the error counter.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::{error, info, warn};

use super::{key, lock, Inner, Open, Positions, State, StateError, CACHE_CAPACITY};

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
    pub(super) fn failed(&self, op: &'static str, e: &StateError) {
        if matches!(e, StateError::Unavailable { .. }) {
            return;
        }
        if matches!(e, StateError::Sled { .. }) {
            lock(&self.inner.open).take();
        }
        error!(op, error = %e, "egress state failed; positions wait until it is writable again");
        metrics::counter!(crate::egress::metrics::STATE_ERRORS, "op" => op).increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only sled's unfinished snapshots go; finished ones and other
    /// files stay. A missing folder has none; a file is no folder.
    #[test]
    fn interrupted_snapshots_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in [
            "snap.00A1.generating",
            "snap.00B2.generating",
            "snap.00A1",
            "conf",
            "x.generating",
        ] {
            std::fs::write(dir.path().join(name), b"x").expect("write");
        }
        assert_eq!(remove_interrupted_snapshots(dir.path()).expect("remove"), 2);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["conf", "snap.00A1", "x.generating"]);
        assert_eq!(
            remove_interrupted_snapshots(&dir.path().join("missing")).expect("missing"),
            0
        );
        assert!(remove_interrupted_snapshots(&dir.path().join("conf")).is_err());
    }

    /// The hint an operator reads when the database does not open.
    #[test]
    fn open_errors_get_the_hint_for_their_cause() {
        let io = |e: std::io::Error| open_hint(&sled::Error::Io(e));
        let full = "free space on its disk; egress retries by itself";
        assert_eq!(io(std::io::Error::from_raw_os_error(28)), full);
        assert_eq!(
            io(std::io::Error::other(
                "write failed: No space left on device"
            )),
            full
        );
        assert!(
            io(std::io::Error::other("could not acquire lock on \"db\""))
                .starts_with("another process")
        );
        let corrupt = sled::Error::Corruption { at: None, bt: () };
        assert!(open_hint(&corrupt).starts_with("its files are corrupt"));
        assert!(io(std::io::Error::from_raw_os_error(13)).starts_with("retrying"));
    }
}
