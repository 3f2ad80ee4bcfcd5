//! Draining on shutdown: the router keeps running transactions until it
//! has read (and committed) its ingress partitions up to the ends they had
//! when the shutdown began, so that in `streamroute run`, where the
//! gateway stopped and flushed first, every acknowledged sample reaches
//! the task topics before exit.
//!
//! Depends on: rdkafka's consumer only (pure bookkeeping around it).

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use tracing::{info, warn};

/// How long reading one partition's end may take at shutdown.
const END_TIMEOUT: Duration = Duration::from_secs(3);

/// The ingress partitions' ends to read up to: (partition, end offset).
#[derive(Debug, Default)]
pub(super) struct Ends(Vec<(i32, i64)>);

impl Ends {
    /// The ends of the partitions assigned now. One whose end cannot be
    /// read is not waited for: it is read again at the next start.
    pub(super) fn of_assignment<C: ConsumerContext>(
        consumer: &BaseConsumer<C>,
        topic: &str,
    ) -> Ends {
        let assigned = match consumer.assignment() {
            Ok(tpl) => tpl,
            Err(e) => {
                warn!(error = %e, "cannot read the ingress assignment at shutdown; not draining");
                return Ends::default();
            }
        };
        // What the group committed: a partition committed up to its end
        // is done already (its position stays unset until a fetch).
        let committed = consumer.committed(END_TIMEOUT).ok();
        let committed_of = |partition: i32| {
            committed
                .as_ref()
                .and_then(|c| c.find_partition(topic, partition))
                .and_then(|e| e.offset().to_raw())
                .unwrap_or(-1)
        };
        let mut ends = Vec::new();
        for e in assigned.elements_for_topic(topic) {
            match consumer.fetch_watermarks(topic, e.partition(), END_TIMEOUT) {
                Ok((low, high)) if high <= low.max(committed_of(e.partition())) => {}
                Ok((_, high)) => ends.push((e.partition(), high)),
                Err(error) => warn!(
                    partition = e.partition(), %error,
                    "cannot read the ingress partition's end at shutdown; not draining it"
                ),
            }
        }
        Ends(ends)
    }

    /// True once the consumer's position has reached every end, for the
    /// partitions it still owns (a rebalance may have moved some away).
    pub(super) fn reached<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        topic: &str,
    ) -> bool {
        let Ok(position) = consumer.position() else {
            return true;
        };
        self.0.iter().all(|(partition, end)| {
            match position.find_partition(topic, *partition) {
                // Not assigned any more: another router reads it.
                None => true,
                Some(e) => e.offset().to_raw().is_some_and(|p| p >= *end),
            }
        })
    }

    /// Logs what is left when the drain is cut short.
    pub(super) fn report_left<C: ConsumerContext>(&self, consumer: &BaseConsumer<C>, topic: &str) {
        let position = consumer.position().ok();
        for (partition, end) in &self.0 {
            let at = position
                .as_ref()
                .and_then(|p| p.find_partition(topic, *partition))
                .and_then(|e| e.offset().to_raw());
            if at.is_some_and(|p| p >= *end) {
                continue;
            }
            warn!(
                partition, position = ?at, end,
                "router stops before reading the ingress partition to its end (run.shutdown_grace); the rest is routed at the next start"
            );
        }
    }

    pub(super) fn log_reached(&self, elapsed: Duration) {
        info!(
            partitions = self.0.len(),
            elapsed_ms = elapsed.as_millis() as u64,
            "router drained its ingress partitions to their ends"
        );
    }
}
