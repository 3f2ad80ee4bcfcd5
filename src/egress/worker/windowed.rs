//! The partition worker's side of the delay and gap windows
//! (`egress/windows/`): restoring them from sled at start, taking each
//! record in when it joins a batch, releasing everything after `delay` of
//! idleness, writing late samples to the late topic, and storing the
//! windows with the position.
//!
//! Invariants (with the worker's): a record is taken in when it joins the
//! batch, so at every store everything the windows released is delivered;
//! the stored position is at most the lowest offset still holding a
//! sample; records at or below the stored `read_through` are read again
//! after a restart but not taken in twice.
//!
//! Depends on the worker, `egress::windows` (engine, codec, sled layout),
//! `batch`, `state` and the late record format in `kafka::record`.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::message::OwnedHeaders;
use tracing::{info, warn};

use super::{PartitionWorker, Shared};
use crate::egress::batch::{Batch, Record};
use crate::egress::metrics as m;
use crate::egress::windows::store::{self, Meta, Unsaved};
use crate::egress::windows::{codec, Emit, Settings, Windows};
use crate::egress::EgressError;
use crate::kafka::producer::SendError;
use crate::kafka::record::dead_letter::{late_headers, Source};
use crate::remote_write::{fast, WriteRequest};
use crate::state::{partition_key, Position, Tree};

/// How often quiet series are expired and old gaps trimmed.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(10);

/// One partition's windows and what is not stored yet.
pub struct PartitionWindows {
    windows: Windows,
    prefix: Vec<u8>,
    /// Offset of the last record taken in: records up to it (read again
    /// after a restart) are not taken in twice.
    read_through: Option<i64>,
    /// Quiet series were expired: trim the gaps after the next store.
    trim_due: bool,
    on_late: crate::egress::windows::OnLate,
    unsaved: Unsaved,
    last_record: Instant,
    last_housekeeping: Instant,
    delay: Duration,
    label: String,
}

fn lock(m: &Mutex<PartitionWindows>) -> MutexGuard<'_, PartitionWindows> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The partition's windows from sled, or None when they are off.
pub fn open(
    shared: &Shared,
    partition: i32,
) -> Result<Option<Mutex<PartitionWindows>>, EgressError> {
    let config = &shared.config.windows;
    if !config.enabled() {
        return Ok(None);
    }
    let settings = Settings::from(config);
    let prefix = partition_key(&shared.config.topic, partition);
    let entries = shared.state.scan(Tree::Windows, &prefix)?;
    let (meta, series, bad) = store::load(&prefix, entries, settings.delay);
    if !bad.is_empty() {
        warn!(
            partition,
            entries = bad.len(),
            "window state entries that do not decode are ignored"
        );
    }
    let count = series.len();
    let windows = match meta {
        Some(meta) => Windows::restore(settings, meta.watermark, series),
        None => Windows::new(settings),
    };
    let read_through = meta.and_then(|m| m.read_through);
    info!(
        partition,
        series = count,
        held = windows.held_samples(),
        ?read_through,
        "egress windows restored"
    );
    Ok(Some(Mutex::new(PartitionWindows {
        windows,
        prefix,
        read_through,
        trim_due: false,
        on_late: config.on_late,
        unsaved: Unsaved::default(),
        last_record: Instant::now(),
        last_housekeeping: Instant::now(),
        delay: config.delay,
        label: partition.to_string(),
    })))
}

impl PartitionWindows {
    /// Encodes what the windows let out into `batch` as one chunk of
    /// record `offset`; late samples go to `batch.late`.
    fn emit(
        &mut self,
        emit: Emit,
        passthrough: Vec<u8>,
        offset: i64,
        batch: &mut Batch,
        record: Record,
    ) {
        let mut body = passthrough;
        codec::encode(&emit.send, &mut body);
        if !emit.late.is_empty() {
            let mut late = Vec::new();
            codec::encode(&emit.late, &mut late);
            batch.late.push((offset, late));
        }
        self.observe();
        let start = batch.body.len();
        batch.body.extend_from_slice(&body);
        if let Ok(counts) = crate::remote_write::scan::count(&body) {
            batch.counts.add(counts);
        }
        batch.records.push(Record {
            start,
            end: batch.body.len(),
            ..record
        });
        batch.last_offset = Some(offset);
    }

    /// Metrics of the windows after a change.
    fn observe(&mut self) {
        let stats = self.windows.take_stats();
        let p = self.label.clone();
        let policy = self.on_late.as_str();
        metrics::counter!(m::LATE, "partition" => p.clone(), "policy" => policy)
            .increment(stats.late);
        metrics::counter!(m::GAPS, "partition" => p.clone()).increment(stats.gaps);
        metrics::counter!(m::STALE_MARKERS, "partition" => p.clone())
            .increment(stats.stale_markers);
        metrics::counter!(m::SYNTHESIZED, "partition" => p.clone()).increment(stats.synthesized);
        metrics::counter!(m::EXPIRED, "partition" => p.clone()).increment(stats.expired);
        metrics::gauge!(m::HELD, "partition" => p.clone()).set(self.windows.held_samples() as f64);
        metrics::gauge!(m::WINDOW_SERIES, "partition" => p.clone())
            .set(self.windows.series_count() as f64);
        let at = self.windows.watermark().at();
        if at > i64::MIN {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            metrics::gauge!(m::WATERMARK_LAG, "partition" => p).set((now - at) as f64 / 1000.0);
        }
    }
}

impl PartitionWorker {
    /// Takes the record at `offset` into the windows and adds what they let
    /// out to `batch`. A record already taken in before a restart adds
    /// nothing (its held samples came back from sled).
    pub(super) fn windowed_add(
        &self,
        w: &Mutex<PartitionWindows>,
        batch: &mut Batch,
        (value, decoded): (&[u8], Option<WriteRequest>),
        record: Record,
    ) {
        let mut w = lock(w);
        let offset = record.offset;
        w.last_record = Instant::now();
        let mut emit = Emit::default();
        let mut passthrough = Vec::new();
        if w.read_through.map_or(true, |r| offset > r) {
            if let Some(req) = decoded {
                passthrough = codec::ingest(&mut w.windows, offset, req, &mut emit);
            } else if let Some(req) = fast::parse(value, &codec::READ_LIMITS) {
                // Always, when prost did not decode it (see `read.rs`).
                passthrough = codec::ingest_fast(&mut w.windows, offset, &req, &mut emit);
            }
            w.windows.release(&mut emit);
            w.read_through = Some(offset);
        }
        if w.last_housekeeping.elapsed() >= HOUSEKEEPING_EVERY {
            w.last_housekeeping = Instant::now();
            w.windows.expire();
            w.trim_due = true;
        }
        w.emit(emit, passthrough, offset, batch, record);
    }

    /// After `delay` without a record, everything held is released into
    /// `batch` (true then), one release budget per call.
    pub(super) fn windowed_idle(&self, w: &Mutex<PartitionWindows>, batch: &mut Batch) -> bool {
        let mut w = lock(w);
        let Some(offset) = w.read_through else {
            return false;
        };
        let waiting = w.windows.held_samples() > 0 || w.windows.backlog();
        if !waiting || w.last_record.elapsed() < w.delay {
            return false;
        }
        let mut emit = Emit::default();
        w.windows.release_all(&mut emit);
        let record = Record {
            offset,
            start: 0,
            end: 0,
            key: None,
            headers: OwnedHeaders::new(),
        };
        batch.first_at.get_or_insert_with(Instant::now);
        w.emit(emit, Vec::new(), offset, batch, record);
        true
    }

    /// Writes the batch's late samples to the late topic, retrying while
    /// Kafka is unavailable.
    pub(super) async fn send_late(&self, batch: &Batch) {
        let Some(topic) = self.shared.config.windows.late_topic.as_deref() else {
            return;
        };
        for (offset, body) in &batch.late {
            let source = Source {
                topic: self.topic().to_string(),
                partition: self.partition,
                offset: *offset,
            };
            let headers = late_headers("at_or_before_last_sent", &source);
            let mut wait = Duration::from_millis(200);
            loop {
                match self
                    .shared
                    .dead_letter
                    .send(topic, None, body, headers.clone())
                    .await
                {
                    Ok(()) => break,
                    Err(SendError::Refused(e)) => {
                        warn!(partition = self.partition, error = %e, "the late topic refuses a record; its late samples are dropped");
                        break;
                    }
                    Err(SendError::Retryable(e)) => {
                        warn!(partition = self.partition, error = %e, "cannot write to the late topic; retrying");
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(Duration::from_secs(10));
                    }
                }
            }
        }
    }

    /// Stores `next_offset` (bounded by the held samples) with the windows'
    /// changes in one transaction; returns the position stored.
    pub(super) async fn windowed_store(
        &self,
        w: &Mutex<PartitionWindows>,
        next_offset: i64,
    ) -> Result<i64, EgressError> {
        let (position, windows, gaps) = {
            let mut w = lock(w);
            let changes = w.windows.take_changes();
            w.unsaved.merge(changes);
            let next = w
                .windows
                .holds_from()
                .map_or(next_offset, |low| low.min(next_offset));
            let meta = Meta {
                read_through: w.read_through,
                watermark: w.windows.watermark(),
            };
            let (windows, gaps) = w.unsaved.batches(&w.prefix, &meta);
            let position = Position {
                topic: self.topic().to_string(),
                partition: self.partition,
                next_offset: next,
            };
            (position, windows, gaps)
        };
        self.shared
            .state
            .set_with_windows(&position, &windows, &gaps)
            .await?;
        let mut w = lock(w);
        w.unsaved.clear();
        if std::mem::take(&mut w.trim_due) {
            trim_gaps(self, &w.prefix);
        }
        Ok(position.next_offset)
    }
}

/// Keeps at most [`store::MAX_GAPS`] gaps of the partition (the newest).
fn trim_gaps(worker: &PartitionWorker, prefix: &[u8]) {
    let Ok(gaps) = worker.shared.state.scan(Tree::Gaps, prefix) else {
        return;
    };
    if gaps.len() <= store::MAX_GAPS {
        return;
    }
    let mut batch = sled::Batch::default();
    for (k, _) in &gaps[..gaps.len() - store::MAX_GAPS] {
        batch.remove(k.as_slice());
    }
    let _ = worker.shared.state.apply(Tree::Gaps, batch);
}
