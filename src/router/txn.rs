//! What the open transaction holds: its batches, the ingress offsets it
//! read, and the counts published when it commits. Pure state, no Kafka.
//!
//! Offsets follow the project's rule: `next` is the next offset to read,
//! what the transaction hands to `send_offsets_to_transaction`; `first` is
//! where an abort rewinds each partition to.
//!
//! Depends on `batches`, `route` (output and stats types) and the
//! `series_ids` writer (`kafka::record::series`) only.

use std::collections::HashMap;

use super::batches::{BatchKey, BatchLimits, Batches};
use super::route::{Output, RouteStats};
use crate::kafka::record::series::SeriesWriter;

/// The open transaction.
#[derive(Debug)]
pub struct Txn {
    pub batches: Batches,
    /// The series ids of `series_ids` routes. A committed transaction hands
    /// it to the next one; an aborted one takes it along (the next starts a
    /// new writer), so no id ever refers into an aborted transaction.
    pub series: SeriesWriter<BatchKey>,
    /// Per ingress partition: first offset read in this transaction.
    first: HashMap<i32, i64>,
    /// Per ingress partition: the next offset to read after this transaction.
    next: HashMap<i32, i64>,
    /// Ingress record timestamps (ms), for the latency histogram.
    pub timestamps: Vec<i64>,
    /// Per route: what relabeling let through and dropped.
    pub stats: Vec<RouteStats>,
    /// Samples per (route, task), counted at commit.
    pub task_samples: HashMap<(usize, u32), u64>,
    /// Output records and value bytes per route.
    pub written: HashMap<usize, (u64, u64)>,
    /// Samples written per (route, partition), counted per record.
    pub partition_samples: HashMap<(usize, u32), u64>,
    /// The reason of each ingress record sent to the dead-letter topic.
    pub dead_lettered: Vec<&'static str>,
}

impl Txn {
    /// An empty transaction over `routes` routes, writing series ids with
    /// `series`.
    pub fn new(routes: usize, limits: BatchLimits, series: SeriesWriter<BatchKey>) -> Txn {
        Txn {
            batches: Batches::new(limits),
            series,
            first: HashMap::new(),
            next: HashMap::new(),
            timestamps: Vec::new(),
            stats: vec![RouteStats::default(); routes],
            task_samples: HashMap::new(),
            written: HashMap::new(),
            partition_samples: HashMap::new(),
            dead_lettered: Vec::new(),
        }
    }

    /// The transaction read the record at `partition`/`offset`, written
    /// at `timestamp_ms` (when the record has one).
    pub fn read(&mut self, partition: i32, offset: i64, timestamp_ms: Option<i64>) {
        self.first.entry(partition).or_insert(offset);
        self.next.insert(partition, offset + 1);
        self.timestamps.extend(timestamp_ms);
    }

    /// Whether the transaction read nothing.
    pub fn is_empty(&self) -> bool {
        self.first.is_empty()
    }

    /// Per ingress partition read: the next offset to read once this
    /// transaction commits.
    pub fn next_offsets(&self) -> impl Iterator<Item = (i32, i64)> + '_ {
        self.next.iter().map(|(p, o)| (*p, *o))
    }

    /// Counts the task record written from `batch` (`bytes` of value).
    pub fn wrote(&mut self, key: &BatchKey, batch: &Output, bytes: usize) {
        let written = self.written.entry(key.route).or_default();
        written.0 += 1;
        written.1 += bytes as u64;
        *self
            .partition_samples
            .entry((key.route, key.partition))
            .or_default() += (batch.samples + batch.histograms) as u64;
    }

    /// Where an abort rewinds, as (partition, offset) seeks, and whether
    /// the record a rebalance's poll returned at `polled` (partition,
    /// offset) must be skipped because it comes again. A record that
    /// continues a partition of this transaction is read again after the
    /// seek: skipped. A record at or before the partition's first offset is
    /// a fresh assignment restarting at the committed offset: that
    /// partition is left alone and the record processed.
    pub fn rewind(&self, polled: Option<(i32, i64)>) -> (Vec<(i32, i64)>, bool) {
        let mut skip = false;
        let mut seeks = Vec::new();
        for (partition, first) in &self.first {
            if let Some((p, offset)) = polled {
                if p == *partition {
                    if offset <= *first {
                        continue;
                    }
                    skip = true;
                }
            }
            seeks.push((*partition, *first));
        }
        seeks.sort_unstable();
        (seeks, skip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn txn() -> Txn {
        Txn::new(
            2,
            BatchLimits {
                max_samples: 10,
                max_bytes: 1000,
            },
            SeriesWriter::with_id(1, std::time::Duration::from_secs(60)),
        )
    }

    #[test]
    fn offsets_are_first_read_and_next_to_read_per_partition() {
        let mut t = txn();
        assert!(t.is_empty());
        t.read(0, 5, Some(1_000));
        t.read(0, 6, None);
        t.read(2, 40, Some(2_000));
        assert!(!t.is_empty());
        let mut next: Vec<_> = t.next_offsets().collect();
        next.sort_unstable();
        assert_eq!(next, [(0, 7), (2, 41)]);
        assert_eq!(t.rewind(None), (vec![(0, 5), (2, 40)], false));
        assert_eq!(t.timestamps, [1_000, 2_000]);
    }

    #[test]
    fn a_record_continuing_a_rewound_partition_is_skipped() {
        let mut t = txn();
        t.read(0, 5, None);
        t.read(1, 9, None);
        // The poll that saw the rebalance returned offset 7 of partition 0:
        // the seek to 5 reads it again.
        assert_eq!(t.rewind(Some((0, 7))), (vec![(0, 5), (1, 9)], true));
    }

    #[test]
    fn a_fresh_assignment_record_is_processed_and_its_partition_left_alone() {
        let mut t = txn();
        t.read(0, 5, None);
        t.read(1, 9, None);
        // Partition 0 came back at its committed offset 5 (or before).
        assert_eq!(t.rewind(Some((0, 5))), (vec![(1, 9)], false));
        assert_eq!(t.rewind(Some((0, 3))), (vec![(1, 9)], false));
        // A record of a partition this transaction never read.
        assert_eq!(t.rewind(Some((4, 0))), (vec![(0, 5), (1, 9)], false));
    }

    #[test]
    fn written_records_count_per_route_and_partition() {
        let mut t = txn();
        let key = BatchKey {
            route: 1,
            partition: 3,
            tenant: None,
        };
        let batch = Output {
            encoded: vec![0; 10],
            series: 2,
            samples: 5,
            histograms: 1,
        };
        t.wrote(&key, &batch, 8);
        t.wrote(&key, &batch, 4);
        assert_eq!(t.written[&1], (2, 12));
        assert_eq!(t.partition_samples[&(1, 3)], 12);
    }
}
