//! The router's ingress consumer: its librdkafka settings, and the edge
//! between its callbacks and the router's loop: rebalances become [`GroupEvent`]s on a channel the worker drains
//! after each poll, so the callbacks stay short (they run inside poll())
//! and the loop's decisions read as a match on named events. Statistics
//! become the consumer-lag gauge and the broker reachability readiness
//! needs.
//!
//! [`IngressConsumer`] wraps the consumer with what the loop asks of it:
//! poll (events drained), the lost flag, the offsets a transaction
//! commits, rewinding after an abort.
//!
//! Depends on rdkafka, `progress`, the router's config and `kafka` (client
//! config, statistics).

use std::cell::Cell;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{
    BaseConsumer, Consumer, ConsumerContext, ConsumerGroupMetadata, Rebalance,
};
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tracing::{debug, info, warn};

use super::config::RouterConfig;
use super::metrics as m;
use super::progress::Progress;
use crate::kafka::KafkaConfig;

/// The ingress consumer's settings: a static member of `router.group_id`
/// whose offsets only move inside the output transaction.
pub fn consumer_config(kafka: &KafkaConfig, router: &RouterConfig) -> rdkafka::ClientConfig {
    let mut config = kafka.client_config("router");
    config
        .set("group.id", &router.group_id)
        // Static membership: a restarted instance takes its partitions back
        // at once instead of waiting for a rebalance.
        .set(
            "group.instance.id",
            format!("{}-{}", router.group_id, router.instance_id),
        )
        // Offsets are committed inside the output transaction, never alone.
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // Other producers may write the ingress topic transactionally.
        .set("isolation.level", "read_committed")
        // A new group starts with everything retained.
        .set("auto.offset.reset", "earliest")
        // Lag and broker reachability (readiness) come from these
        // statistics; every second so an outage shows within seconds.
        .set("statistics.interval.ms", "1000");
    config
}

/// What the consumer group did, as the worker needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupEvent {
    /// Partitions were taken away: what the open transaction read may now
    /// belong to another router.
    Revoked { partitions: usize },
    /// The assignment was lost because the session expired (a broker away
    /// for longer than `session.timeout.ms`); comes before its `Revoked`.
    Lost,
    /// Partitions were assigned.
    Assigned { partitions: Vec<i32> },
}

/// What the worker knows of the group, from the events drained so far.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GroupState {
    /// A revocation since the worker last looked ([`GroupState::take_revoked`]).
    revoked: bool,
    /// The assignment was lost: a consumer rejoining from here was seen to
    /// be fenced, or assigned and never fetch again, so the worker
    /// restarts with fresh clients. Stays set.
    pub lost: bool,
}

impl GroupState {
    pub fn apply(&mut self, event: &GroupEvent) {
        match event {
            GroupEvent::Revoked { .. } => self.revoked = true,
            GroupEvent::Lost => self.lost = true,
            GroupEvent::Assigned { .. } => {}
        }
    }

    /// Whether partitions were revoked since the last call.
    pub fn take_revoked(&mut self) -> bool {
        std::mem::take(&mut self.revoked)
    }
}

/// The ingress consumer as the router's loop uses it.
pub struct IngressConsumer {
    consumer: BaseConsumer<RouterContext>,
    /// The callbacks' events, drained after each poll into `group`.
    events: Receiver<GroupEvent>,
    group: Cell<GroupState>,
    topic: String,
}

impl IngressConsumer {
    /// A consumer of `topic` (not subscribed yet).
    pub fn new(
        kafka: &KafkaConfig,
        router: &RouterConfig,
        topic: &str,
        progress: Arc<Progress>,
    ) -> Result<IngressConsumer, KafkaError> {
        let (context, events) = RouterContext::new(progress, topic.to_string());
        Ok(IngressConsumer {
            consumer: consumer_config(kafka, router).create_with_context(context)?,
            events,
            group: Cell::new(GroupState::default()),
            topic: topic.to_string(),
        })
    }

    /// The consumer itself, for the drain's bookkeeping (`drain.rs`).
    pub fn inner(&self) -> &BaseConsumer<RouterContext> {
        &self.consumer
    }

    pub fn subscribe(&self) -> Result<(), KafkaError> {
        self.consumer.subscribe(&[&self.topic])
    }

    /// The next record within `timeout`, if any, and whether the group
    /// revoked partitions since the last poll. An error only when the
    /// consumer failed fatally (it reads nothing again); others are logged
    /// and librdkafka retries.
    pub fn poll(
        &self,
        timeout: Duration,
    ) -> Result<(Option<BorrowedMessage<'_>>, bool), KafkaError> {
        let message = match self.consumer.poll(timeout) {
            None => None,
            Some(Err(e)) => {
                warn!(error = %e, "ingress consumer error");
                if self.fatal_error().is_some() {
                    return Err(e);
                }
                None
            }
            Some(Ok(message)) => Some(message),
        };
        let mut group = self.group.get();
        for event in self.events.try_iter() {
            group.apply(&event);
        }
        let revoked = group.take_revoked();
        self.group.set(group);
        Ok((message, revoked))
    }

    /// Whether the group took the assignment away (session expired).
    pub fn lost(&self) -> bool {
        self.group.get().lost
    }

    /// librdkafka's fatal error, once the consumer has one.
    pub fn fatal_error(&self) -> Option<(rdkafka::types::RDKafkaErrorCode, String)> {
        self.consumer.client().fatal_error()
    }

    /// The group's metadata for `send_offsets_to_transaction`; missing
    /// before the consumer joined a group.
    pub fn group_metadata(&self) -> Option<ConsumerGroupMetadata> {
        self.consumer.group_metadata()
    }

    /// `next` (partition, next offset to read) as an offset list of the topic.
    pub fn offsets(
        &self,
        next: impl Iterator<Item = (i32, i64)>,
    ) -> Result<TopicPartitionList, KafkaError> {
        let mut offsets = TopicPartitionList::new();
        for (partition, next) in next {
            offsets.add_partition_offset(&self.topic, partition, Offset::Offset(next))?;
        }
        Ok(offsets)
    }

    /// Seeks each (partition, offset); a partition no longer ours is left
    /// to its next owner, which starts at the committed offset.
    pub fn rewind(&self, seeks: &[(i32, i64)]) {
        for (partition, offset) in seeks {
            let at = Offset::Offset(*offset);
            if let Err(e) = self
                .consumer
                .seek(&self.topic, *partition, at, Duration::from_secs(5))
            {
                debug!(partition, error = %e, "cannot rewind partition");
            }
        }
    }
}

/// The router consumer's context.
pub struct RouterContext {
    events: Sender<GroupEvent>,
    progress: Arc<Progress>,
    ingress: String,
}

impl RouterContext {
    /// A context for a consumer of `ingress`, and the receiving end of its events.
    pub fn new(progress: Arc<Progress>, ingress: String) -> (RouterContext, Receiver<GroupEvent>) {
        let (events, received) = std::sync::mpsc::channel();
        let context = RouterContext {
            events,
            progress,
            ingress,
        };
        (context, received)
    }

    fn send(&self, event: GroupEvent) {
        // The worker owns the receiver for as long as the consumer lives.
        let _ = self.events.send(event);
    }
}

impl ClientContext for RouterContext {
    fn stats(&self, statistics: Statistics) {
        crate::kafka::stats::export("router-consumer", &statistics);
        // Bootstrap and internal brokers have node id -1; a learned broker
        // in state UP means the cluster answers.
        let up = statistics
            .brokers
            .values()
            .any(|b| b.nodeid >= 0 && b.state == "UP");
        if self.progress.broker_up.swap(up, Ordering::AcqRel) != up {
            let states: Vec<String> = statistics
                .brokers
                .values()
                .map(|b| format!("{}={}", b.name, b.state))
                .collect();
            info!(up, ?states, "router's broker connections changed");
        }
        let Some(topic) = statistics.topics.get(&self.ingress) else {
            return;
        };
        let committed = self
            .progress
            .committed
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default();
        for (partition, stats) in &topic.partitions {
            if *partition < 0 || !stats.desired || stats.ls_offset < 0 {
                continue;
            }
            // Lag counts from what a transaction committed, not from the
            // read position: records read into transactions that keep
            // failing are still behind. Before our first commit, the
            // group's committed offset (fetched at assignment) stands in.
            let position = committed
                .get(partition)
                .copied()
                .unwrap_or(-1)
                .max(stats.committed_offset);
            if position >= 0 {
                let lag = (stats.ls_offset - position).max(0);
                metrics::gauge!(m::CONSUMER_LAG, "partition" => partition.to_string())
                    .set(lag as f64);
            }
        }
    }
}

impl ConsumerContext for RouterContext {
    // Runs inside poll(): only send an event, the loop does the work.
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(partitions) = rebalance {
            if consumer.assignment_lost() {
                warn!("ingress assignment lost (session expired); restarting the router with new clients");
                self.send(GroupEvent::Lost);
            }
            info!(
                partitions = partitions.count(),
                "ingress partitions revoked"
            );
            self.send(GroupEvent::Revoked {
                partitions: partitions.count(),
            });
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(partitions) = rebalance {
            let ids: Vec<i32> = partitions
                .elements()
                .iter()
                .map(|e| e.partition())
                .collect();
            info!(?ids, "ingress partitions assigned");
            self.send(GroupEvent::Assigned { partitions: ids });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revocation_is_taken_once_and_a_loss_stays() {
        let mut state = GroupState::default();
        state.apply(&GroupEvent::Assigned {
            partitions: vec![0, 1],
        });
        assert!(!state.take_revoked());
        state.apply(&GroupEvent::Lost);
        state.apply(&GroupEvent::Revoked { partitions: 2 });
        assert!(state.take_revoked());
        assert!(!state.take_revoked());
        assert!(state.lost);
    }

    #[test]
    fn callbacks_reach_the_worker_through_the_channel_in_order() {
        let (context, events) = RouterContext::new(Arc::new(Progress::new()), "in".into());
        context.send(GroupEvent::Lost);
        context.send(GroupEvent::Revoked { partitions: 3 });
        let got: Vec<GroupEvent> = events.try_iter().collect();
        assert_eq!(
            got,
            [GroupEvent::Lost, GroupEvent::Revoked { partitions: 3 }]
        );
    }
}
