//! The router's Kafka loop: one consumer in the group, one transactional
//! producer, one thread.
//!
//! Each transaction: poll ingress records for `commit_interval`, route
//! them into per-(route, partition, tenant) batches, write full batches,
//! then write the rest, add the consumed offsets ("next offset to read")
//! with `send_offsets_to_transaction` and commit. On any error, or when
//! the group takes partitions away mid-transaction, the transaction is
//! aborted and the consumer rewound to the first offset the transaction
//! read, so those records are processed again in a new transaction.
//!
//! Outages of any length: the transactional calls run in short resumable
//! steps (`producer.rs`); an abort that still cannot complete within the
//! transaction timeout replaces the producer, whose `init_transactions`
//! fences the old epoch. The router is not ready from the first failed
//! step until a transaction commits again with a broker reachable
//! (`progress.rs`).
//!
//! What a transaction holds and routing a record into it are pure state
//! (`txn.rs`, `batches.rs`, `process.rs`); this file only moves records
//! between them and Kafka; writing task records and dead letters is in
//! `worker/output.rs`. Depends on those, `consumer.rs`, `producer.rs`,
//! `events.rs`, the record formats in `kafka::record`, its `[router]`
//! section and `Shared`.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::batches::{BatchKey, BatchLimits};
use super::config::RouterConfig;
use super::consumer::IngressConsumer;
use super::drain::Ends;
use super::events::{TransactionAborted, TransactionCommitted};
use super::process::{route_record, Routing, Unroutable};
use super::producer::{producer_config, StartError, TxnProducer};
use super::progress::Progress;
use super::route::{FastRouting, Route};
use super::txn::Txn;
use super::{RouterError, Rules};
use crate::kafka::record::series::SeriesWriter;
use crate::kafka::record::{copy_headers, IngressMeta};
use crate::live::Live;
use crate::remote_write::Limits;
use crate::shared::Shared;
use crate::topics::TopicsConfig;

mod output;

/// The worker thread's state: the clients, the routes and their topics' partition counts.
pub(super) struct Worker {
    router: Arc<RouterConfig>,
    topics: TopicsConfig,
    routes: Arc<Vec<Route>>,
    /// Where `routes` and `limits` come from, and the version taken.
    live: Live<Rules>,
    rules_version: u64,
    partitions: Vec<u32>,
    partitions_checked: Instant,
    consumer: IngressConsumer,
    producer: TxnProducer,
    progress: Arc<Progress>,
    limits: Limits,
    /// The series ids a committed transaction left for the next one (see
    /// `Txn::series`); `None` after an abort.
    series: Option<SeriesWriter<BatchKey>>,
    /// What each route made of the series seen (see `relabel_cache.rs`):
    /// kept across transactions, aborted ones too, as it depends on the
    /// labels and the routes only.
    fast: RefCell<FastRouting>,
}

impl Worker {
    pub(super) fn new(
        router: Arc<RouterConfig>,
        shared: &Shared,
        live: Live<Rules>,
        progress: Arc<Progress>,
    ) -> Result<Worker, RouterError> {
        let rules_version = live.version();
        let rules = live.get();
        let consumer = IngressConsumer::new(
            &shared.kafka,
            &router,
            &shared.topics.ingress,
            progress.clone(),
        )
        .map_err(RouterError::Client)?;
        let producer = TxnProducer::new(
            producer_config(&shared.kafka, &router),
            router.transaction_timeout,
            progress.clone(),
        )
        .map_err(RouterError::Client)?;
        let relabel_cache_bytes = router.relabel_cache_bytes;
        Ok(Worker {
            limits: rules.limits.clone(),
            router,
            topics: shared.topics.clone(),
            partitions: vec![0; rules.routes.len()],
            routes: rules.routes.clone(),
            live,
            rules_version,
            partitions_checked: Instant::now(),
            consumer,
            producer,
            progress,
            series: None,
            fast: RefCell::new(FastRouting::new(relabel_cache_bytes)),
        })
    }

    /// A new transaction, with the series ids the last committed one left
    /// (`series`), else (`None`: the first, or after an abort) a new writer.
    fn new_txn(&self, series: Option<SeriesWriter<BatchKey>>) -> Txn {
        let limits = BatchLimits {
            max_samples: self.router.batch_max_samples,
            max_bytes: self.router.batch_max_bytes,
        };
        let series = series.unwrap_or_else(|| SeriesWriter::new(self.router.series_refresh));
        Txn::new(self.routes.len(), limits, series)
    }

    /// Runs transactions until shutdown. Returns an error only when the
    /// consumer failed fatally (librdkafka fences a static member whose
    /// session expired during a long outage, and such a consumer never
    /// reads again): the role is then started anew with fresh clients.
    ///
    /// After `shutdown` it keeps going until the ingress partitions are
    /// read to the ends they had then, or `hard_stop`; a failed
    /// transaction while draining ends it (its records are read again at
    /// the next start).
    pub(super) fn run(
        &mut self,
        shutdown: &CancellationToken,
        hard_stop: &CancellationToken,
    ) -> Result<(), RouterError> {
        // Kafka may not be there yet: keep trying, stay not ready.
        while !shutdown.is_cancelled() {
            self.progress.beat("starting");
            match self.start() {
                Ok(()) => break,
                Err(e) => {
                    warn!(error = %e, "router cannot start yet; retrying");
                    sleep_unless(shutdown, Duration::from_secs(2));
                }
            }
        }
        if shutdown.is_cancelled() {
            return Ok(());
        }
        self.progress.set_healthy(true);
        info!(group = %self.router.group_id, topic = %self.topics.ingress, "router running");
        let mut failures = 0u32;
        let mut drain: Option<(Ends, Instant)> = None;
        loop {
            if shutdown.is_cancelled() {
                let (consumer, ingress) = (self.consumer.inner(), &self.topics.ingress);
                let (ends, since) = drain.get_or_insert_with(|| {
                    (Ends::of_assignment(consumer, ingress), Instant::now())
                });
                if ends.reached(consumer, ingress) {
                    ends.log_reached(since.elapsed());
                    break;
                }
                if hard_stop.is_cancelled() || failures > 0 {
                    ends.report_left(consumer, ingress);
                    break;
                }
            }
            self.take_reloaded_rules();
            let series = self.series.take();
            let mut txn = self.new_txn(series);
            match self.transaction(&mut txn, hard_stop) {
                Ok(()) => {
                    self.series = Some(txn.series);
                    if failures > 0 {
                        info!(failures, "transactions commit again");
                    }
                    failures = 0;
                    // An empty transaction commits without a broker, so
                    // readiness also asks for a broker connection (Progress::ready).
                    self.progress.set_healthy(true);
                }
                Err(e) => {
                    failures += 1;
                    self.progress.set_healthy(false);
                    warn!(error = %e, failures, "transaction failed; aborting and retrying its records");
                    self.recover(&e, &txn, shutdown);
                    if let Some((code, reason)) = self.consumer.fatal_error() {
                        error!(?code, reason = %reason, "ingress consumer failed fatally; restarting the router");
                        return Err(RouterError::ConsumerFailed(reason));
                    }
                    if self.consumer.lost() {
                        return Err(RouterError::ConsumerFailed(
                            "the ingress assignment was lost (session expired)".into(),
                        ));
                    }
                    // Back off while Kafka is unwell, at most 5 s.
                    sleep_unless(
                        shutdown,
                        Duration::from_millis(200 * u64::from(failures.min(25))),
                    );
                }
            }
        }
        info!("router stopped");
        Ok(())
    }

    fn start(&mut self) -> Result<(), StartError> {
        self.producer.init().map_err(StartError::Init)?;
        self.refresh_partitions()?;
        self.consumer.subscribe().map_err(StartError::Subscribe)?;
        Ok(())
    }

    /// Reads each route's partition count (when a topic grows, jump hash
    /// moves few tasks, only onto the new partitions).
    fn refresh_partitions(&mut self) -> Result<(), StartError> {
        self.partitions = self.producer.partition_counts(&self.routes)?;
        self.partitions_checked = Instant::now();
        Ok(())
    }

    /// Between transactions: takes the rules of the last reload, if any.
    /// Reload keeps the routes' names and topics, so `partitions` stays.
    fn take_reloaded_rules(&mut self) {
        let version = self.live.version();
        if version == self.rules_version {
            return;
        }
        let rules = self.live.get();
        self.routes = rules.routes.clone();
        self.limits = rules.limits.clone();
        self.rules_version = version;
        info!("router takes the reloaded rules from this transaction on");
    }

    fn transaction(
        &mut self,
        txn: &mut Txn,
        shutdown: &CancellationToken,
    ) -> Result<(), KafkaError> {
        self.producer.init()?;
        if self.partitions_checked.elapsed() > Duration::from_secs(30) {
            if let Err(e) = self.refresh_partitions() {
                warn!(error = %e, "cannot refresh task topic partitions; keeping the known counts");
            }
        }
        self.producer.begin()?;
        let deadline = Instant::now() + self.router.commit_interval;
        while !shutdown.is_cancelled() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            if self.consumer.lost() {
                // Ends this transaction; `run` then restarts the worker.
                return Err(KafkaError::Canceled);
            }
            self.progress.beat("polling the ingress topic");
            // Rounded up: librdkafka would spin for the fraction.
            let wait = crate::kafka::whole_millis(left).min(Duration::from_millis(100));
            let (message, revoked) = self.consumer.poll(wait)?;
            if revoked && !txn.is_empty() {
                // Partitions may have moved: what this transaction read may
                // now belong to another router. Start over.
                info!("rebalance during a transaction; aborting it");
                self.producer.abort(shutdown)?;
                TransactionAborted.emit();
                let position = message.as_ref().map(|m| (m.partition(), m.offset()));
                let skip = self.rewind(txn, position);
                // A new writer: ids of the aborted records are gone.
                *txn = self.new_txn(None);
                self.producer.begin()?;
                if skip {
                    continue;
                }
            }
            if let Some(message) = message {
                self.process(&message, txn)?;
            }
            self.producer.poll(Duration::ZERO);
        }
        self.flush(txn)?;
        if !txn.is_empty() {
            let offsets = self.consumer.offsets(txn.next_offsets())?;
            // Only missing before the consumer joined a group, and then
            // nothing was consumed: treat it like any failed transaction.
            let group = self
                .consumer
                .group_metadata()
                .ok_or(KafkaError::ConsumerCommit(RDKafkaErrorCode::Fail))?;
            self.producer.send_offsets(&offsets, &group, shutdown)?;
        }
        self.producer.commit(shutdown)?;
        self.progress.committed(txn.next_offsets());
        TransactionCommitted {
            txn,
            routes: &self.routes,
        }
        .emit();
        // The writer goes on into the next transaction: count from here.
        txn.series.reset_counts();
        Ok(())
    }

    /// Routes one ingress record into the open transaction's batches, or
    /// dead-letters it.
    fn process(&self, message: &BorrowedMessage<'_>, txn: &mut Txn) -> Result<(), KafkaError> {
        txn.read(
            message.partition(),
            message.offset(),
            message.timestamp().to_millis(),
        );
        let headers = match copy_headers(message.headers()) {
            Ok(headers) => headers,
            Err(e) => {
                return self.dead_letter(message, None, Unroutable::new("bad_headers", e), txn)
            }
        };
        let routing = Routing {
            routes: &self.routes,
            partitions: &self.partitions,
            limits: &self.limits,
            max_decoded: self.router.max_decoded_bytes,
            now_ms: now_ms(),
            fast: &self.fast,
        };
        let routed = IngressMeta::from_headers(headers.as_ref())
            .map_err(|e| Unroutable::new("bad_headers", e))
            .and_then(|meta| route_record(message.payload(), &meta, &routing, txn));
        if let Err(why) = routed {
            return self.dead_letter(message, headers.as_ref(), why, txn);
        }
        for (key, batch) in txn.batches.take_full() {
            self.write(&key, &batch, txn)?;
        }
        self.report_buffered(txn);
        Ok(())
    }

    /// After a failed transaction: abort it (or replace a producer that
    /// failed fatally or cannot abort) and rewind the consumer so its
    /// records are read again.
    fn recover(&mut self, error: &KafkaError, txn: &Txn, shutdown: &CancellationToken) {
        let fatal = matches!(error, KafkaError::Transaction(e) if e.is_fatal())
            || self.producer.failed_fatally();
        if fatal {
            error!(error = %error, "transactional producer failed fatally; creating a new one");
            self.producer.replace();
        } else if let Err(e) = self.producer.abort(shutdown) {
            warn!(error = %e, "abort failed; creating a new producer, which fences the old one");
            self.producer.replace();
        }
        if !txn.is_empty() {
            TransactionAborted.emit();
        }
        self.rewind(txn, None);
    }

    /// Seeks every partition the transaction read back to its first
    /// record, except as [`Txn::rewind`] says for a record a rebalance's
    /// poll returned at `polled`; returns whether that record is skipped.
    fn rewind(&self, txn: &Txn, polled: Option<(i32, i64)>) -> bool {
        let (seeks, skip) = txn.rewind(polled);
        self.consumer.rewind(&seeks);
        skip
    }
}

/// The wall clock in Unix milliseconds: the series ids' clock, which the
/// task records' timestamps (set by librdkafka when sent) share.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn sleep_unless(shutdown: &CancellationToken, duration: Duration) {
    let until = Instant::now() + duration;
    while !shutdown.is_cancelled() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
}
