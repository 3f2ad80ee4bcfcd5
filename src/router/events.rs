//! The router's observable events, one struct each: its `emit` writes the
//! log line and the metrics of that event together, so the two stay in
//! step (Vector's `internal_events`).
//!
//! Depends on the router's `metrics` names, `route` and `txn`.

use std::collections::HashMap;

use tracing::{debug, warn};

use super::metrics as m;
use super::route::Route;
use super::txn::Txn;
use crate::kafka::record::series::Counts;

/// A transaction committed: everything it counted becomes metrics.
pub struct TransactionCommitted<'a> {
    pub txn: &'a Txn,
    pub routes: &'a [Route],
}

impl TransactionCommitted<'_> {
    pub fn emit(&self) {
        let txn = self.txn;
        metrics::counter!(m::TRANSACTIONS, "outcome" => "committed").increment(1);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        for (i, route) in self.routes.iter().enumerate() {
            let s = txn.stats[i];
            let r = route.name.clone();
            metrics::counter!(m::SERIES, "route" => r.clone(), "outcome" => "in")
                .increment(s.series_in);
            metrics::counter!(m::SERIES, "route" => r.clone(), "outcome" => "dropped")
                .increment(s.series_dropped);
            metrics::counter!(m::SERIES, "route" => r.clone(), "outcome" => "out")
                .increment(s.series_in - s.series_dropped);
            metrics::counter!(m::SAMPLES, "route" => r.clone(), "outcome" => "in")
                .increment(s.samples_in);
            metrics::counter!(m::SAMPLES, "route" => r.clone(), "outcome" => "dropped")
                .increment(s.samples_dropped);
            metrics::counter!(m::SAMPLES, "route" => r.clone(), "outcome" => "out")
                .increment(s.samples_in - s.samples_dropped);
            metrics::counter!(m::METADATA_FORWARDED, "route" => r.clone())
                .increment(s.metadata_out);
            metrics::counter!(m::RELABEL_CACHE, "route" => r.clone(), "outcome" => "hit")
                .increment(s.cache_hits);
            metrics::counter!(m::RELABEL_CACHE, "route" => r.clone(), "outcome" => "miss")
                .increment(s.cache_misses);
            metrics::counter!(m::RELABEL_CACHE_CLEARS, "route" => r.clone())
                .increment(s.cache_clears);
            if route.aggregation().is_some() {
                metrics::counter!(m::AGGREGATION_CONFLICTS, "route" => r.clone())
                    .increment(s.aggregation_conflicts);
            }
            if let Some((records, bytes)) = txn.written.get(&i) {
                metrics::counter!(m::OUTPUT_RECORDS, "route" => r.clone()).increment(*records);
                metrics::counter!(m::OUTPUT_BYTES, "route" => r.clone()).increment(*bytes);
            }
            for ts in &txn.timestamps {
                metrics::histogram!(m::DISTRIBUTION_LATENCY, "route" => r.clone())
                    .record((now - ts).max(0) as f64 / 1000.0);
            }
        }
        let mut ids: HashMap<usize, Counts> = HashMap::new();
        for (key, counts) in txn.series.counts() {
            let sum = ids.entry(key.route).or_default();
            sum.definitions += counts.definitions;
            sum.references += counts.references;
        }
        // The writer outlives transactions (and a reload, which keeps the
        // routes): look its route up rather than index.
        for (route, counts) in ids {
            let Some(r) = self.routes.get(route).map(|r| r.name.clone()) else {
                continue;
            };
            metrics::counter!(m::SERIES_ID_ENTRIES, "route" => r.clone(), "kind" => "definition")
                .increment(counts.definitions);
            metrics::counter!(m::SERIES_ID_ENTRIES, "route" => r, "kind" => "reference")
                .increment(counts.references);
        }
        for ((route, partition), samples) in &txn.partition_samples {
            let route = self.routes[*route].name.clone();
            metrics::counter!(m::PARTITION_SAMPLES, "route" => route, "partition" => partition.to_string())
                .increment(*samples);
        }
        for ((route, task), samples) in &txn.task_samples {
            let route = self.routes[*route].name.clone();
            metrics::counter!(m::TASK_SAMPLES, "route" => route, "task" => task.to_string())
                .increment(*samples);
        }
        for reason in &txn.dead_lettered {
            metrics::counter!(m::DEAD_LETTERED, "reason" => *reason).increment(1);
        }
        debug!(records = txn.timestamps.len(), "transaction committed");
    }
}

/// A transaction that had read records was aborted: they are read again.
pub struct TransactionAborted;

impl TransactionAborted {
    pub fn emit(&self) {
        metrics::counter!(m::TRANSACTIONS, "outcome" => "aborted").increment(1);
    }
}

/// An ingress record went to the dead-letter topic. Logged now, counted
/// with its transaction's commit (an aborted one is read again).
pub struct IngressDeadLettered<'a> {
    pub partition: i32,
    pub offset: i64,
    pub reason: &'static str,
    pub detail: &'a str,
}

impl IngressDeadLettered<'_> {
    pub fn emit(&self) {
        warn!(
            partition = self.partition,
            offset = self.offset,
            reason = self.reason,
            detail = self.detail,
            "ingress record dead-lettered"
        );
    }
}

/// Series waiting in the open transaction's batches, per route.
pub struct Buffered<'a> {
    pub routes: &'a [Route],
    pub series: Vec<usize>,
}

impl Buffered<'_> {
    pub fn emit(&self) {
        for (route, series) in self.routes.iter().zip(&self.series) {
            metrics::gauge!(m::BUFFERED, "route" => route.name.clone()).set(*series as f64);
        }
    }
}
