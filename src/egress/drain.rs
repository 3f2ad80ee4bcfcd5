//! Draining on shutdown: egress keeps delivering until every owned
//! partition is delivered up to the end it had when the shutdown began, or
//! until the hard stop (the end of `run.shutdown_grace`), whichever comes
//! first.
//!
//! In `streamroute run` the router has committed its last transaction by
//! then, so "the end" includes every sample the gateway acknowledged. A
//! fixed settle time cannot promise that: a consumer may take a fetch
//! round (librdkafka's `fetch.wait.max.ms`) to see a commit, then a flush,
//! the request and the position store follow.
//!
//! "Delivered" is read from the stored position (next offset to read),
//! which passes a record only once the receiver acknowledged it and moves
//! past transaction markers while a partition is idle. With delay windows
//! the position stays behind held samples by design (they are re-read
//! after a restart), so there a partition counts as drained once its
//! consumer has read to the end and two flushes have passed.
//!
//! Depends on: `worker::watermarks` and the positions the role already
//! shares with its lag gauge.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::worker;

/// How often the positions are compared with the ends while draining.
const POLL: Duration = Duration::from_millis(50);

/// One owned partition as the role sees it: its consumer and its stored
/// position (shared with the worker).
pub(super) type Partition = (i32, Arc<StreamConsumer>, Arc<AtomicI64>);

/// What a partition must reach before egress stops.
struct Target {
    partition: i32,
    end: i64,
    consumer: Arc<StreamConsumer>,
    position: Arc<AtomicI64>,
    /// Windowed only: when the consumer had read to `end`.
    read_at: Option<Instant>,
}

/// How the drain decides that a partition is done.
#[derive(Clone, Copy, Debug)]
pub(super) enum Done {
    /// The stored position reached the end.
    Stored,
    /// Windows hold samples: the consumer read to the end, then `settle`
    /// passed for the last batch to be sent.
    Read { settle: Duration },
}

/// Waits until every partition in `partitions` is done (see [`Done`]) or
/// `hard_stop` is cancelled. A partition whose end cannot be read (Kafka
/// unreachable) is not waited for: its records are read again at the next
/// start.
pub(super) async fn until_caught_up(
    topic: &str,
    partitions: &[Partition],
    done: Done,
    probe_timeout: Duration,
    hard_stop: &CancellationToken,
) {
    let started = Instant::now();
    let ends = futures::future::join_all(
        partitions
            .iter()
            .map(|(p, consumer, _)| worker::watermarks(consumer, topic, *p, probe_timeout)),
    );
    let ends = tokio::select! {
        ends = ends => ends,
        _ = hard_stop.cancelled() => return,
    };
    let mut targets = Vec::new();
    for ((partition, consumer, position), end) in partitions.iter().zip(ends) {
        match end {
            Ok((_, end)) => targets.push(Target {
                partition: *partition,
                end,
                consumer: consumer.clone(),
                position: position.clone(),
                read_at: None,
            }),
            Err(e) => warn!(
                partition, error = %e,
                "cannot read the partition's end at shutdown; not draining it (its records are read again at the next start)"
            ),
        }
    }
    loop {
        let now = Instant::now();
        targets.retain_mut(|t| !t.done(topic, done, now));
        if targets.is_empty() {
            info!(
                elapsed_ms = started.elapsed().as_millis() as u64,
                "egress drained every owned partition to its end"
            );
            return;
        }
        tokio::select! {
            _ = hard_stop.cancelled() => {
                for t in &targets {
                    warn!(
                        partition = t.partition,
                        position = t.position.load(Ordering::Acquire),
                        end = t.end,
                        "egress stops before delivering to the partition's end (run.shutdown_grace); the rest is sent at the next start"
                    );
                }
                return;
            }
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

impl Target {
    fn done(&mut self, topic: &str, done: Done, now: Instant) -> bool {
        if self.position.load(Ordering::Acquire) >= self.end {
            return true;
        }
        let Done::Read { settle } = done else {
            return false;
        };
        if self.read_at.is_none() && self.consumer_position(topic) >= Some(self.end) {
            self.read_at = Some(now);
        }
        self.read_at
            .is_some_and(|at| now.duration_since(at) >= settle)
    }

    fn consumer_position(&self, topic: &str) -> Option<i64> {
        let tpl = self.consumer.position().ok()?;
        tpl.find_partition(topic, self.partition)
            .and_then(|e| e.offset().to_raw())
    }
}
