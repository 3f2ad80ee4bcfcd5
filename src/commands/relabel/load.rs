//! The load `streamroute relabel` reports on stderr: series kept and
//! dropped, per partition and per task, and what the aggregation rules
//! routed.
//!
//! Depends on: `router::aggregation` (how a series was routed).

use std::collections::BTreeMap;

use crate::router::aggregation::Routed;

/// Series counted by [`super::Pipeline::apply`]: the load per partition and task.
#[derive(Debug, Default)]
pub struct Load {
    /// Series kept.
    pub series: u64,
    /// Series dropped by relabeling.
    pub dropped: u64,
    /// Series per partition (with `--partitions`).
    pub partitions: BTreeMap<u32, u64>,
    /// Series per task (with a task label).
    pub tasks: BTreeMap<u32, u64>,
    /// Series routed by the aggregation rules.
    pub grouped: u64,
    /// Of those, series routed by an empty label set (one task for all).
    pub conflicts: u64,
}

impl Load {
    pub(super) fn add(&mut self, task: Option<u32>, partition: Option<u32>, routed: Routed) {
        self.series += 1;
        if let Some(t) = task {
            *self.tasks.entry(t).or_default() += 1;
        }
        if let Some(p) = partition {
            *self.partitions.entry(p).or_default() += 1;
        }
        self.grouped += u64::from(routed != Routed::Unmatched);
        self.conflicts += u64::from(routed == Routed::Conflict);
    }

    /// The summary lines written to stderr. `partitions` is the partition
    /// count (partitions without series are listed too).
    pub fn summary(&self, partitions: Option<u32>, aggregation: bool) -> Vec<String> {
        let share = |n: u64| 100.0 * n as f64 / self.series.max(1) as f64;
        let mut out = vec![format!(
            "load: {} series kept, {} dropped",
            self.series, self.dropped
        )];
        if let Some(count) = partitions {
            let cells: Vec<String> = (0..count)
                .map(|p| {
                    let n = self.partitions.get(&p).copied().unwrap_or(0);
                    format!("p{p} {n} ({:.1}%)", share(n))
                })
                .collect();
            out.push(format!("load: series per partition: {}", cells.join(", ")));
        }
        if !self.tasks.is_empty() {
            let (max_task, max) = self
                .tasks
                .iter()
                .max_by_key(|(_, n)| **n)
                .map(|(t, n)| (*t, *n))
                .unwrap_or_default();
            out.push(format!(
                "load: {} tasks used; the busiest, task {max_task}, holds {max} series ({:.1}%)",
                self.tasks.len(),
                share(max)
            ));
        }
        if aggregation {
            out.push(format!(
                "aggregation: {} series routed by the rules' grouping labels, {} as without the file",
                self.grouped,
                self.series - self.grouped
            ));
            if self.conflicts > 0 {
                out.push(format!(
                    "aggregation: {} series matched rules whose grouping keys share no label: routed by an empty label set, all to one task",
                    self.conflicts
                ));
            }
        }
        out
    }
}
