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
//! Outages of any length: every Kafka call runs in short steps
//! (`KAFKA_STEP`) that librdkafka lets us resume, with the producer polled
//! between them (a `BaseProducer` only serves the delivery reports that an
//! abort waits for when polled). An abort that still cannot complete
//! within the transaction timeout replaces the producer: the new one's
//! `init_transactions` fences the old epoch and the coordinator aborts
//! what it left open. The router is not ready from the first failed step
//! until a transaction commits again with a broker reachable.

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::ToBytes;
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::config::RouterConfig;
use super::drain::Ends;
use super::metadata::{append_metadata, Families};
use super::metrics as m;
use super::route::{
    append_series, entry_len, route_fast, route_request_named, Output, Route, RouteStats,
};
use super::Rules;
use crate::config::Config;
use crate::http::Readiness;
use crate::kafka::record::{copy_headers, IngressMeta, HEADER_ROUTE};
use crate::kafka::stats::StatsContext;
use crate::kafka::KafkaConfig;
use crate::live::Live;
use crate::remote_write::{
    compress, decode_request, decompress_reusing, fast, sniff, validate_v1, DecodeError, Encoding,
    Limits, Protocol, Reader, WriteRequest,
};

/// Errors that stop the router.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    /// A route could not be compiled (config validation normally catches this).
    #[error("route {route}: {reason}")]
    Route { route: String, reason: String },
    /// A Kafka client could not be created.
    #[error("cannot create a kafka client: {0}")]
    Client(KafkaError),
    /// The worker thread failed.
    #[error("router thread failed: {0}")]
    Thread(String),
    /// The ingress consumer failed fatally (for example fenced after its
    /// session expired); the role must be started again.
    #[error("the ingress consumer failed fatally: {0}")]
    ConsumerFailed(String),
}

/// The router producer's name in the librdkafka statistics metrics.
const PRODUCER_CLIENT: &str = "router-producer";

/// How long one Kafka call may block before the worker looks up again
/// (polls, checks shutdown, reports readiness). librdkafka resumes a
/// transactional call that timed out when it is called again.
const KAFKA_STEP: Duration = Duration::from_secs(1);

/// A transactional call still unconfirmed after this long means Kafka is
/// unwell: the router reports not ready until a transaction commits again.
/// Longer than a healthy commit of a full transaction takes on a loaded
/// broker, so that readiness does not flap under load.
const UNCONFIRMED_NOT_READY: Duration = Duration::from_secs(3);

/// A worker that shows no sign of life for this long is stuck in a call
/// to Kafka: not ready, whatever its last transaction did.
const STALLED: Duration = Duration::from_secs(5);

/// What the worker, the consumer's callbacks and the readiness watchdog
/// share. Readiness is computed from it in one place (`Progress::ready`).
struct Progress {
    /// Per ingress partition: the next offset our last committed
    /// transaction stored, the only position that survives a crash.
    committed: Mutex<HashMap<i32, i64>>,
    /// Whether librdkafka's last statistics showed a broker connection up.
    broker_up: AtomicBool,
    /// False from a failed or long-unconfirmed transaction until one commits.
    healthy: AtomicBool,
    /// When the worker last showed a sign of life, and what it was doing.
    beat: Mutex<(Instant, &'static str)>,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            committed: Mutex::default(),
            broker_up: AtomicBool::new(false),
            healthy: AtomicBool::new(false),
            beat: Mutex::new((Instant::now(), "starting")),
        }
    }

    /// The worker is alive and about to do `what`.
    fn beat(&self, what: &'static str) {
        if let Ok(mut beat) = self.beat.lock() {
            *beat = (Instant::now(), what);
        }
    }

    /// Ready, or the reason why not.
    fn ready(&self) -> Result<(), String> {
        let (at, doing) = self
            .beat
            .lock()
            .map(|b| *b)
            .unwrap_or((Instant::now(), "unknown"));
        if at.elapsed() > STALLED {
            return Err(format!(
                "worker stalled for {:.0?} in {doing}",
                at.elapsed()
            ));
        }
        if !self.healthy.load(Ordering::Acquire) {
            return Err("transactions are not committing".into());
        }
        if !self.broker_up.load(Ordering::Acquire) {
            return Err("no broker connection is up".into());
        }
        Ok(())
    }
}

/// Consumer callbacks: notes revocations (so the open transaction is
/// aborted) and exports consumer lag and broker reachability from
/// librdkafka's statistics.
struct RouterContext {
    revoked: Arc<AtomicBool>,
    /// Set when the group took the assignment away because the session expired.
    lost: Arc<AtomicBool>,
    progress: Arc<Progress>,
    ingress: String,
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
    // Runs inside poll(): only set a flag, the loop does the work.
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(partitions) = rebalance {
            if consumer.assignment_lost() {
                // The session expired (a broker away for longer than
                // session.timeout.ms). A consumer rejoining from here was
                // seen to be fenced, or assigned and never fetch again:
                // the worker restarts with fresh clients instead.
                warn!("ingress assignment lost (session expired); restarting the router with new clients");
                self.lost.store(true, Ordering::Release);
            }
            info!(
                partitions = partitions.count(),
                "ingress partitions revoked"
            );
            self.revoked.store(true, Ordering::Release);
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
        }
    }
}

/// The router role.
pub struct Router {
    config: Arc<Config>,
    routes: Vec<Route>,
    readiness: Readiness,
    hard_stop: Option<CancellationToken>,
    live: Option<Live<Rules>>,
}

impl Router {
    /// Compiles the routes and registers readiness.
    pub fn new(config: Arc<Config>, readiness: Readiness) -> Result<Router, RouterError> {
        let routes = config
            .router
            .routes
            .iter()
            .map(|r| {
                Route::compile(r, config.router.limits().name_validation).map_err(|reason| {
                    RouterError::Route {
                        route: r.name.clone(),
                        reason,
                    }
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        for route in &routes {
            for finding in route.aggregation().map(|a| a.report()).unwrap_or_default() {
                if finding.warning {
                    warn!(route = %route.name, "stream aggregation routing: {}", finding.text);
                } else {
                    info!(route = %route.name, "stream aggregation routing: {}", finding.text);
                }
            }
        }
        readiness.register("router");
        Ok(Router {
            config,
            routes,
            readiness,
            hard_stop: None,
            live: None,
        })
    }

    /// Takes its routes and limits from `live` (hot reload) from now on,
    /// swapping them between transactions.
    pub fn with_live(mut self, live: Live<Rules>) -> Router {
        self.live = Some(live);
        self
    }

    /// On shutdown the router drains (`drain.rs`) until `hard_stop` is
    /// cancelled; without one, for at most `run.shutdown_grace`.
    pub fn with_hard_stop(mut self, hard_stop: CancellationToken) -> Router {
        self.hard_stop = Some(hard_stop);
        self
    }

    /// Runs until `shutdown`, then reads the ingress partitions to their
    /// ends as of then (until the hard stop), commits and leaves the group.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), RouterError> {
        let progress = Arc::new(Progress::new());
        let watchdog = tokio::spawn(watch(progress.clone(), self.readiness.clone()));
        let hard_stop = self.hard_stop.clone().unwrap_or_else(|| {
            let token = CancellationToken::new();
            let (grace, fire, shutdown) = (
                self.config.run.shutdown_grace,
                token.clone(),
                shutdown.clone(),
            );
            tokio::spawn(async move {
                shutdown.cancelled().await;
                tokio::time::sleep(grace).await;
                fire.cancel();
            });
            token
        });
        let live = self.live.clone().unwrap_or_else(|| {
            Live::new(Rules {
                routes: Arc::new(self.routes),
                limits: self.config.router.limits(),
            })
        });
        let result = tokio::task::spawn_blocking(move || {
            let mut worker = Worker::new(self.config, live, progress)?;
            worker.run(&shutdown, &hard_stop)
        })
        .await
        .map_err(|e| RouterError::Thread(e.to_string()))?;
        watchdog.abort();
        self.readiness.set("router", false);
        result
    }
}

/// Sets the router's readiness from `progress` twice a second, logging
/// each change with its reason. It runs beside the worker thread, so a
/// worker stuck in a Kafka call still shows as not ready.
async fn watch(progress: Arc<Progress>, readiness: Readiness) {
    // The last state logged: None while ready, else the reason's kind
    // ("worker stalled", without its duration), so that a change of
    // reason is logged too and a long stall is not logged every tick.
    let mut logged: Option<Option<String>> = None;
    loop {
        let ready = progress.ready();
        readiness.set("router", ready.is_ok());
        let state = ready
            .as_ref()
            .err()
            .map(|r| r.split(" for ").next().unwrap_or(r).to_string());
        if logged.as_ref() != Some(&state) {
            match &ready {
                Ok(()) if logged.is_some() => info!("router ready again"),
                Err(reason) if logged.is_some() => warn!(reason = %reason, "router not ready"),
                _ => {}
            }
            logged = Some(state);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// What the open transaction holds.
#[derive(Default)]
struct Txn {
    batches: HashMap<(usize, u32, Option<String>), Output>,
    /// Per ingress partition: first offset read in this transaction.
    first: HashMap<i32, i64>,
    /// Per ingress partition: the next offset to read after this transaction.
    next: HashMap<i32, i64>,
    /// Ingress record timestamps (ms), for the latency histogram.
    timestamps: Vec<i64>,
    stats: Vec<RouteStats>,
    /// Samples per (route, task), counted at commit.
    task_samples: HashMap<(usize, u32), u64>,
    /// Output records and bytes per route.
    written: HashMap<usize, (u64, u64)>,
    /// Samples written per (route, partition), counted per record.
    partition_samples: HashMap<(usize, u32), u64>,
    dead_lettered: Vec<&'static str>,
}

struct Worker {
    config: Arc<Config>,
    routes: Arc<Vec<Route>>,
    /// Where `routes` and `limits` come from, and the version taken.
    live: Live<Rules>,
    rules_version: u64,
    partitions: Vec<u32>,
    partitions_checked: Instant,
    consumer: BaseConsumer<RouterContext>,
    producer: BaseProducer<StatsContext>,
    /// False after the producer was (re)created until init_transactions succeeds.
    initialized: bool,
    /// True between a successful begin_transaction and its commit or abort.
    open: Cell<bool>,
    revoked: Arc<AtomicBool>,
    lost: Arc<AtomicBool>,
    progress: Arc<Progress>,
    limits: Limits,
}

fn producer_config(kafka: &KafkaConfig, router: &RouterConfig) -> rdkafka::ClientConfig {
    let mut config = kafka.client_config("router");
    config
        // Stable per instance: a restarted instance fences its predecessor.
        .set(
            "transactional.id",
            format!("{}-{}", router.group_id, router.instance_id),
        )
        // Transactions need idempotence; acks=all comes with it.
        .set("enable.idempotence", "true")
        .set("acks", "all")
        // The broker aborts a transaction this router left open for longer.
        .set(
            "transaction.timeout.ms",
            router.transaction_timeout.as_millis().to_string(),
        )
        .set(
            "message.timeout.ms",
            router.transaction_timeout.as_millis().to_string(),
        )
        // The largest batch plus record overhead.
        .set(
            "message.max.bytes",
            (router.batch_max_bytes + (1 << 20)).to_string(),
        );
    // Producer queue and broker round-trip metrics (kafka/stats.rs).
    crate::kafka::stats::enable(&mut config);
    // Measured side by side (scripts/bench-vs-vmagent.sh, 40,000 samples/s,
    // BENCH_KAFKA_VARIANTS, two rounds, README "Kafka settings"), each against
    // these defaults (23.5 task-topic bytes per sample):
    // - compression.type=lz4: streamroute -10% CPU, broker -19%, but 41.2
    //   bytes per sample on the broker; zstd stays.
    // - compression.level=6 (zstd): 17.4 bytes per sample, +28% CPU; level 3
    //   (librdkafka's default) stays.
    // - linger.ms=50: no change in storage (batches end at every commit,
    //   router.commit_interval), broker -16% within its noise; 20 stays.
    for (key, value) in [("compression.type", "zstd"), ("linger.ms", "20")] {
        if config.get(key).is_none() {
            config.set(key, value);
        }
    }
    config
}

fn consumer_config(kafka: &KafkaConfig, router: &RouterConfig) -> rdkafka::ClientConfig {
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

impl Worker {
    fn new(
        config: Arc<Config>,
        live: Live<Rules>,
        progress: Arc<Progress>,
    ) -> Result<Worker, RouterError> {
        let rules_version = live.version();
        let rules = live.get();
        let revoked = Arc::new(AtomicBool::new(false));
        let lost = Arc::new(AtomicBool::new(false));
        let context = RouterContext {
            revoked: revoked.clone(),
            lost: lost.clone(),
            progress: progress.clone(),
            ingress: config.topics.ingress.clone(),
        };
        let consumer = consumer_config(&config.kafka, &config.router)
            .create_with_context(context)
            .map_err(RouterError::Client)?;
        let producer = producer_config(&config.kafka, &config.router)
            .create_with_context(StatsContext::new(PRODUCER_CLIENT))
            .map_err(RouterError::Client)?;
        let n = rules.routes.len();
        Ok(Worker {
            limits: rules.limits.clone(),
            config,
            routes: rules.routes.clone(),
            live,
            rules_version,
            partitions: vec![0; n],
            partitions_checked: Instant::now(),
            consumer,
            producer,
            initialized: false,
            open: Cell::new(false),
            revoked,
            lost,
            progress,
        })
    }

    fn timeout(&self) -> Duration {
        self.config.router.transaction_timeout
    }

    /// One step of a blocking Kafka call: short, so that the worker can
    /// poll, notice shutdown and report readiness between steps.
    fn step(&self) -> Duration {
        self.timeout().min(KAFKA_STEP)
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
    fn run(
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
        self.progress.healthy.store(true, Ordering::Release);
        info!(group = %self.config.router.group_id, topic = %self.config.topics.ingress, "router running");
        let mut txn = Txn::default();
        let mut failures = 0u32;
        let mut drain: Option<(Ends, Instant)> = None;
        loop {
            if shutdown.is_cancelled() {
                let ingress = &self.config.topics.ingress;
                let (ends, since) = drain.get_or_insert_with(|| {
                    (Ends::of_assignment(&self.consumer, ingress), Instant::now())
                });
                if ends.reached(&self.consumer, ingress) {
                    ends.log_reached(since.elapsed());
                    break;
                }
                if hard_stop.is_cancelled() || failures > 0 {
                    ends.report_left(&self.consumer, ingress);
                    break;
                }
            }
            match self.transaction(&mut txn, hard_stop) {
                Ok(()) => {
                    if failures > 0 {
                        info!(failures, "transactions commit again");
                    }
                    failures = 0;
                    // An empty transaction commits without a broker, so
                    // readiness also asks for a broker connection (Progress::ready).
                    self.progress.healthy.store(true, Ordering::Release);
                }
                Err(e) => {
                    failures += 1;
                    self.progress.healthy.store(false, Ordering::Release);
                    warn!(error = %e, failures, "transaction failed; aborting and retrying its records");
                    self.recover(&e, &txn, shutdown);
                    if let Some((code, reason)) = self.consumer.client().fatal_error() {
                        error!(?code, reason = %reason, "ingress consumer failed fatally; restarting the router");
                        return Err(RouterError::ConsumerFailed(reason));
                    }
                    if self.lost.load(Ordering::Acquire) {
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
            txn = Txn::default();
        }
        info!("router stopped");
        Ok(())
    }

    fn start(&mut self) -> Result<(), String> {
        self.init().map_err(|e| format!("init transactions: {e}"))?;
        self.refresh_partitions()?;
        self.consumer
            .subscribe(&[&self.config.topics.ingress])
            .map_err(|e| format!("subscribe: {e}"))?;
        Ok(())
    }

    /// Reads each route's partition count (when a topic grows, jump hash
    /// moves few tasks, only onto the new partitions).
    fn refresh_partitions(&mut self) -> Result<(), String> {
        for (i, route) in self.routes.iter().enumerate() {
            let md = self
                .producer
                .client()
                .fetch_metadata(Some(&route.topic), Duration::from_secs(10))
                .map_err(|e| format!("metadata of {}: {e}", route.topic))?;
            let count = md
                .topics()
                .first()
                .filter(|t| t.error().is_none())
                .map_or(0, |t| t.partitions().len());
            if count == 0 {
                return Err(format!(
                    "topic {} of route {} does not exist (streamroute topics apply)",
                    route.topic, route.name
                ));
            }
            self.partitions[i] = count as u32;
        }
        self.partitions_checked = Instant::now();
        Ok(())
    }

    /// Initialises transactions once per producer; this also fences a
    /// predecessor with the same transactional id and aborts what it left open.
    fn init(&mut self) -> Result<(), KafkaError> {
        if !self.initialized {
            self.producer.init_transactions(self.step())?;
            self.initialized = true;
        }
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

    fn begin(&self) -> Result<(), KafkaError> {
        self.producer.begin_transaction()?;
        self.open.set(true);
        Ok(())
    }

    fn transaction(
        &mut self,
        txn: &mut Txn,
        shutdown: &CancellationToken,
    ) -> Result<(), KafkaError> {
        self.init()?;
        if self.partitions_checked.elapsed() > Duration::from_secs(30) {
            if let Err(e) = self.refresh_partitions() {
                warn!(error = %e, "cannot refresh task topic partitions; keeping the known counts");
            }
        }
        self.take_reloaded_rules();
        txn.stats = vec![RouteStats::default(); self.routes.len()];
        self.begin()?;
        let deadline = Instant::now() + self.config.router.commit_interval;
        while !shutdown.is_cancelled() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            if self.lost.load(Ordering::Acquire) {
                // Ends this transaction; `run` then restarts the worker.
                return Err(KafkaError::Canceled);
            }
            self.progress.beat("polling the ingress topic");
            let polled = self.consumer.poll(left.min(Duration::from_millis(100)));
            let message = match polled {
                None => None,
                Some(Err(e)) => {
                    warn!(error = %e, "ingress consumer error");
                    if self.consumer.client().fatal_error().is_some() {
                        // A dead consumer reads nothing again: end this
                        // transaction, and `run` ends the worker.
                        return Err(e);
                    }
                    None
                }
                Some(Ok(message)) => Some(message),
            };
            if self.revoked.swap(false, Ordering::AcqRel) && !txn.first.is_empty() {
                // Partitions may have moved: what this transaction read may
                // now belong to another router. Start over.
                info!("rebalance during a transaction; aborting it");
                self.abort(shutdown)?;
                metrics::counter!(m::TRANSACTIONS, "outcome" => "aborted").increment(1);
                let position = message.as_ref().map(|m| (m.partition(), m.offset()));
                let skip = self.rewind_except(txn, position);
                *txn = Txn {
                    stats: vec![RouteStats::default(); self.routes.len()],
                    ..Txn::default()
                };
                self.begin()?;
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
        if !txn.next.is_empty() {
            let mut offsets = TopicPartitionList::new();
            for (partition, next) in &txn.next {
                offsets.add_partition_offset(
                    &self.config.topics.ingress,
                    *partition,
                    Offset::Offset(*next),
                )?;
            }
            // Only missing before the consumer joined a group, and then
            // nothing was consumed: treat it like any failed transaction.
            let group = self
                .consumer
                .group_metadata()
                .ok_or(KafkaError::ConsumerCommit(RDKafkaErrorCode::Fail))?;
            self.retry_steps(shutdown, "send offsets", self.timeout(), |w| {
                w.producer
                    .send_offsets_to_transaction(&offsets, &group, w.step())
            })?;
        }
        self.commit(shutdown)?;
        self.committed(txn);
        Ok(())
    }

    /// Commits the open transaction. A retriable failure (a timeout) may
    /// hide a commit that happened, so it is retried, never aborted: an
    /// abort after a real commit would make us process the records again.
    /// It is retried for up to ten transaction timeouts, so that a broker
    /// away for minutes finds the commit still waiting; a transaction the
    /// coordinator timed out meanwhile fails for good and is retried whole.
    fn commit(&self, shutdown: &CancellationToken) -> Result<(), KafkaError> {
        let result = self.retry_steps(shutdown, "commit", self.timeout() * 10, |w| {
            w.producer.commit_transaction(w.step())
        });
        if result.is_ok() {
            self.open.set(false);
        }
        result
    }

    /// Aborts the open transaction, in steps with the producer polled
    /// between them: the abort purges the queued records and waits for
    /// their delivery reports, which only a poll serves.
    fn abort(&self, shutdown: &CancellationToken) -> Result<(), KafkaError> {
        if !self.open.get() {
            return Ok(());
        }
        self.retry_steps(shutdown, "abort", self.timeout(), |w| {
            w.producer.abort_transaction(w.step())
        })?;
        self.open.set(false);
        Ok(())
    }

    /// Calls a resumable transactional operation until it succeeds, fails
    /// for good, `within` runs out or shutdown begins. Between steps the
    /// producer is polled and the router reported not ready.
    fn retry_steps(
        &self,
        shutdown: &CancellationToken,
        what: &'static str,
        within: Duration,
        mut call: impl FnMut(&Self) -> Result<(), KafkaError>,
    ) -> Result<(), KafkaError> {
        let started = Instant::now();
        let mut warned = false;
        loop {
            self.progress.beat(what);
            match call(self) {
                Err(KafkaError::Transaction(e))
                    if e.is_retriable()
                        && started.elapsed() < within
                        && !shutdown.is_cancelled() =>
                {
                    if started.elapsed() >= UNCONFIRMED_NOT_READY && !warned {
                        warned = true;
                        self.progress.healthy.store(false, Ordering::Release);
                        warn!(error = %e, "{what} not confirmed by kafka yet; not ready, retrying");
                    }
                    self.producer.poll(Duration::from_millis(100));
                }
                result => return result,
            }
        }
    }

    /// Routes one ingress record into the open transaction's batches, or
    /// dead-letters it.
    fn process(&self, message: &BorrowedMessage<'_>, txn: &mut Txn) -> Result<(), KafkaError> {
        let (partition, offset) = (message.partition(), message.offset());
        txn.first.entry(partition).or_insert(offset);
        txn.next.insert(partition, offset + 1);
        if let Some(ts) = message.timestamp().to_millis() {
            txn.timestamps.push(ts);
        }
        let headers = match copy_headers(message.headers()) {
            Ok(headers) => headers,
            Err(reason) => return self.dead_letter(message, None, "bad_headers", &reason, txn),
        };
        let meta = match IngressMeta::from_headers(headers.as_ref()) {
            Ok(meta) => meta,
            Err(reason) => {
                return self.dead_letter(message, headers.as_ref(), "bad_headers", &reason, txn)
            }
        };
        let Some(value) = message.payload().filter(|v| !v.is_empty()) else {
            return self.dead_letter(
                message,
                headers.as_ref(),
                "empty",
                "the record has no value",
                txn,
            );
        };
        let encoding = meta.encoding.unwrap_or_else(|| sniff(value));
        let max_decoded = self.config.router.max_decoded_bytes;
        // 1.0 is decompressed here (into a buffer reused on this thread) so
        // that the zero-copy reader can try it first (no String per label);
        // what it declines, and 2.0, takes the prost path, which reports any
        // error exactly as before.
        let raw = match meta.protocol {
            Protocol::V1 => match decompress_reusing(value, encoding, max_decoded) {
                Ok(raw) => Some(raw),
                Err(e) => {
                    return self.dead_letter(
                        message,
                        headers.as_ref(),
                        e.reason(),
                        &e.to_string(),
                        txn,
                    )
                }
            },
            Protocol::V2 => None,
        };
        let fast_request = raw
            .as_deref()
            .and_then(|raw| fast::parse(raw, &self.limits));
        let reader = if fast_request.is_some() {
            Reader::Fast
        } else {
            Reader::Prost
        };
        reader.count("router");
        let slow_request = if fast_request.is_some() {
            None
        } else {
            let decoded =
                match raw.as_deref() {
                    Some(raw) => <WriteRequest as prost::Message>::decode(raw)
                        .map_err(DecodeError::BadProtobuf),
                    None => decode_request(value, encoding, meta.protocol, max_decoded)
                        .map(|d| d.request),
                };
            let request = match decoded {
                Ok(request) => request,
                Err(e) => {
                    return self.dead_letter(
                        message,
                        headers.as_ref(),
                        e.reason(),
                        &e.to_string(),
                        txn,
                    )
                }
            };
            if let Err(e) = validate_v1(&request, &self.limits) {
                return self.dead_letter(
                    message,
                    headers.as_ref(),
                    e.reason(),
                    &e.to_string(),
                    txn,
                );
            }
            Some(request)
        };
        let (max_samples, max_bytes) = (
            self.config.router.batch_max_samples,
            self.config.router.batch_max_bytes,
        );
        let tenant = meta.tenant;
        let mut full = Vec::new();
        let batches = &mut txn.batches;
        let task_samples = &mut txn.task_samples;
        if let Some(request) = fast_request {
            route_fast(
                &request,
                &self.routes,
                &self.partitions,
                &mut txn.stats,
                |route, partition, task, entry| {
                    let key = (route, partition, tenant.clone());
                    let batch = batches.entry(key.clone()).or_default();
                    entry.append_to(batch);
                    *task_samples.entry((route, task)).or_default() +=
                        (entry.samples + entry.histograms) as u64;
                    if batch.samples + batch.histograms >= max_samples
                        || batch.encoded.len() + entry.entry_len() > max_bytes
                    {
                        full.push(key);
                    }
                },
            );
        } else if let Some(mut request) = slow_request {
            // Only the prost path sees metadata: the fast reader declines it.
            let mut families = (!request.metadata.is_empty()).then(|| {
                let metadata = std::mem::take(&mut request.metadata);
                Families::new(metadata, &request.timeseries, self.routes.len())
            });
            route_request_named(
                request,
                &self.routes,
                &self.partitions,
                &mut txn.stats,
                families.is_some(),
                |route, partition, task, series, original| {
                    if let Some(families) = families.as_mut() {
                        families.saw(route, partition, original, series);
                    }
                    let key = (route, partition, tenant.clone());
                    let batch = batches.entry(key.clone()).or_default();
                    append_series(batch, series);
                    *task_samples.entry((route, task)).or_default() +=
                        (series.samples.len() + series.histograms.len()) as u64;
                    if batch.samples + batch.histograms >= max_samples
                        || batch.encoded.len() + entry_len(series) > max_bytes
                    {
                        full.push(key);
                    }
                },
            );
            let metadata = families.map(|f| f.finish(&self.routes, &self.partitions));
            for (route, partition, md) in metadata.into_iter().flatten() {
                txn.stats[route].metadata_out += 1;
                let key = (route, partition, tenant.clone());
                let batch = batches.entry(key.clone()).or_default();
                append_metadata(batch, &md);
                // Many families (Prometheus sends them all at once) fill a
                // batch too; writing a key twice finds it gone the second time.
                if batch.encoded.len() >= max_bytes {
                    full.push(key);
                }
            }
        }
        for key in full {
            if let Some(batch) = txn.batches.remove(&key) {
                self.write(&key, &batch, txn)?;
            }
        }
        self.report_buffered(txn);
        Ok(())
    }

    /// Sets the per-route gauge of series waiting in open batches.
    fn report_buffered(&self, txn: &Txn) {
        let mut buffered = vec![0usize; self.routes.len()];
        for ((route, _, _), batch) in &txn.batches {
            buffered[*route] += batch.series;
        }
        for (route, series) in self.routes.iter().zip(buffered) {
            metrics::gauge!(m::BUFFERED, "route" => route.name.clone()).set(series as f64);
        }
    }

    /// Writes every batch (at the end of a transaction).
    fn flush(&self, txn: &mut Txn) -> Result<(), KafkaError> {
        let batches: Vec<_> = txn.batches.drain().collect();
        for (key, batch) in batches {
            self.write(&key, &batch, txn)?;
        }
        self.report_buffered(txn);
        Ok(())
    }

    fn write(
        &self,
        key: &(usize, u32, Option<String>),
        batch: &Output,
        txn: &mut Txn,
    ) -> Result<(), KafkaError> {
        let (route, partition, tenant) = key;
        let name = &self.routes[*route].name;
        let (encoding, value) = record_value(&batch.encoded, self.routes[*route].record_encoding);
        if encoding != self.routes[*route].record_encoding {
            warn!(route = %name, "cannot compress a task record; writing it as identity");
        }
        let meta = IngressMeta {
            encoding: Some(encoding),
            protocol: Protocol::V1,
            tenant: tenant.clone(),
            received_at_ms: None,
        };
        let headers = meta.to_headers().insert(Header {
            key: HEADER_ROUTE,
            value: Some(name.as_str()),
        });
        let record = BaseRecord::<(), [u8]>::to(&self.routes[*route].topic)
            .partition(*partition as i32)
            .payload(value.as_ref())
            .headers(headers);
        self.send(record)?;
        let written = txn.written.entry(*route).or_default();
        written.0 += 1;
        written.1 += value.len() as u64;
        *txn.partition_samples
            .entry((*route, *partition))
            .or_default() += (batch.samples + batch.histograms) as u64;
        Ok(())
    }

    /// Sends a record, waiting while the local queue is full (bounded by the
    /// transaction timeout).
    fn send<K: ToBytes + ?Sized>(
        &self,
        mut record: BaseRecord<'_, K, [u8]>,
    ) -> Result<(), KafkaError> {
        let deadline = Instant::now() + self.timeout();
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                    if Instant::now() < deadline =>
                {
                    record = back;
                    self.producer.poll(Duration::from_millis(50));
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    /// Sends an ingress record that can never be routed to the dead-letter
    /// topic, inside the transaction, with headers saying why and whence.
    fn dead_letter(
        &self,
        message: &BorrowedMessage<'_>,
        original: Option<&OwnedHeaders>,
        reason: &'static str,
        detail: &str,
        txn: &mut Txn,
    ) -> Result<(), KafkaError> {
        warn!(
            partition = message.partition(),
            offset = message.offset(),
            reason,
            detail,
            "ingress record dead-lettered"
        );
        let (partition, offset) = (
            message.partition().to_string(),
            message.offset().to_string(),
        );
        let mut headers = OwnedHeaders::new();
        if let Some(original) = original {
            for h in original.iter() {
                headers = headers.insert(Header {
                    key: h.key,
                    value: h.value,
                });
            }
        }
        let headers = headers
            .insert(Header {
                key: "dead-letter-reason",
                value: Some(reason),
            })
            .insert(Header {
                key: "dead-letter-detail",
                value: Some(detail),
            })
            .insert(Header {
                key: "source-topic",
                value: Some(message.topic()),
            })
            .insert(Header {
                key: "source-partition",
                value: Some(partition.as_str()),
            })
            .insert(Header {
                key: "source-offset",
                value: Some(offset.as_str()),
            });
        let mut record = BaseRecord::<[u8], [u8]>::to(&self.config.topics.dead_letter)
            .payload(message.payload().unwrap_or_default())
            .headers(headers);
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        self.send(record)?;
        txn.dead_lettered.push(reason);
        Ok(())
    }

    /// Publishes a committed transaction's metrics.
    fn committed(&self, txn: &Txn) {
        metrics::counter!(m::TRANSACTIONS, "outcome" => "committed").increment(1);
        if let Ok(mut committed) = self.progress.committed.lock() {
            committed.extend(txn.next.iter().map(|(p, next)| (*p, *next)));
        }
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
        for ((route, partition), samples) in &txn.partition_samples {
            metrics::counter!(m::PARTITION_SAMPLES, "route" => self.routes[*route].name.clone(), "partition" => partition.to_string())
                .increment(*samples);
        }
        for ((route, task), samples) in &txn.task_samples {
            metrics::counter!(m::TASK_SAMPLES, "route" => self.routes[*route].name.clone(), "task" => task.to_string())
                .increment(*samples);
        }
        for reason in &txn.dead_lettered {
            metrics::counter!(m::DEAD_LETTERED, "reason" => *reason).increment(1);
        }
        debug!(records = txn.timestamps.len(), "transaction committed");
    }

    /// After a failed transaction: abort it (or replace a producer that
    /// failed fatally or cannot abort) and rewind the consumer so its
    /// records are read again.
    fn recover(&mut self, error: &KafkaError, txn: &Txn, shutdown: &CancellationToken) {
        let fatal = matches!(error, KafkaError::Transaction(e) if e.is_fatal())
            || self.producer.client().fatal_error().is_some();
        if fatal {
            error!(error = %error, "transactional producer failed fatally; creating a new one");
            self.replace_producer();
        } else if let Err(e) = self.abort(shutdown) {
            warn!(error = %e, "abort failed; creating a new producer, which fences the old one");
            self.replace_producer();
        }
        if !txn.first.is_empty() {
            metrics::counter!(m::TRANSACTIONS, "outcome" => "aborted").increment(1);
        }
        self.rewind(txn);
    }

    /// Drops the producer for a new one with the same transactional id.
    /// Its first `init_transactions` (at the next transaction) bumps the
    /// epoch, fencing the old producer, and the coordinator aborts the
    /// transaction the old one left open.
    fn replace_producer(&mut self) {
        match producer_config(&self.config.kafka, &self.config.router)
            .create_with_context(StatsContext::new(PRODUCER_CLIENT))
        {
            Ok(p) => {
                self.producer = p;
                self.initialized = false;
                self.open.set(false);
            }
            Err(e) => error!(error = %e, "cannot create a new producer"),
        }
    }

    /// Seeks every partition the transaction read back to its first record.
    fn rewind(&self, txn: &Txn) {
        self.rewind_except(txn, None);
    }

    /// Like `rewind`, for a rebalance whose poll also returned the record
    /// at `polled` (partition, offset). If that record continues a
    /// partition of the aborted transaction, the partition is rewound and
    /// the record must be skipped (it comes again): returns true. If it is
    /// the partition's first record (a fresh assignment restarts at the
    /// committed offset), the partition is left alone and the record is
    /// processed: returns false.
    fn rewind_except(&self, txn: &Txn, polled: Option<(i32, i64)>) -> bool {
        let mut skip = false;
        for (partition, first) in &txn.first {
            if let Some((p, offset)) = polled {
                if p == *partition {
                    if offset <= *first {
                        continue;
                    }
                    skip = true;
                }
            }
            if let Err(e) = self.consumer.seek(
                &self.config.topics.ingress,
                *partition,
                Offset::Offset(*first),
                Duration::from_secs(5),
            ) {
                // Not ours any more: its next owner starts at the committed offset.
                debug!(partition, error = %e, "cannot rewind partition");
            }
        }
        skip
    }
}

fn sleep_unless(shutdown: &CancellationToken, duration: Duration) {
    let until = Instant::now() + duration;
    while !shutdown.is_cancelled() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A task record's value in `wanted` encoding, with the encoding it is
/// really in: identity when compressing fails (a body too large for
/// snappy), so the header always tells consumers the truth.
fn record_value(encoded: &[u8], wanted: Encoding) -> (Encoding, Cow<'_, [u8]>) {
    if wanted == Encoding::Identity {
        return (Encoding::Identity, Cow::Borrowed(encoded));
    }
    match compress(encoded, wanted) {
        Ok(body) => (wanted, Cow::Owned(body)),
        Err(_) => (Encoding::Identity, Cow::Borrowed(encoded)),
    }
}
