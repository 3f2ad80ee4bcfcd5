//! The pure part of the router: one decoded ingress payload in, encoded
//! series per (route, partition) out. No I/O, so it is unit-tested and
//! benchmarked on its own.
//!
//! Invariants: every output series has its labels sorted by name and
//! carries the route's task label `0..task_count`; a series goes to exactly
//! one partition per route that keeps it; each route relabels its own copy.

use std::borrow::Cow;
use std::fmt::Write as _;

use super::aggregation::{Aggregation, AggregationError, Routed};
use super::batches::BatchKey;
use super::config::{RecordFormat, RouteConfig, UnknownEncoding, UnknownFormat};
use super::relabel_cache::{Kept, Outcome, RelabelCache};
use super::task_id::{inject_label, jump_hash, labels_hash_iter, task_id, TaskIdConfig};
use crate::kafka::record::series::SeriesWriter;
use crate::relabel::{LabelPair, RelabelError, Rules, Scratch};
use crate::remote_write::fast::FastRequest;
use crate::remote_write::proto::v1::{Label, TimeSeries, WriteRequest};
use crate::remote_write::{entry, Encoding, NameValidation};

/// Why a route does not compile.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// Its relabel rules (inline or `relabel_file`).
    #[error(transparent)]
    Rules(#[from] RelabelError),
    /// Its `stream_aggr_file`.
    #[error(transparent)]
    Aggregation(#[from] AggregationError),
    /// Its `record_encoding`.
    #[error(transparent)]
    Encoding(#[from] UnknownEncoding),
    /// Its `record_format`.
    #[error(transparent)]
    Format(#[from] UnknownFormat),
}

/// A compiled route.
pub struct Route {
    /// Route name.
    pub name: String,
    /// Output topic.
    pub topic: String,
    rules: Rules,
    task: TaskIdConfig,
    partition_labels: Vec<String>,
    aggregation: Option<Aggregation>,
    /// Encoding of the task records' values (`record_encoding`).
    pub record_encoding: Encoding,
    /// How series are written in them (`record_format`).
    pub record_format: RecordFormat,
    /// Unique per compiled route in this process: what a
    /// [`RelabelCache`] remembers is of one route.
    id: u64,
}

/// The next [`Route::id`].
static NEXT_ROUTE_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl Route {
    /// Compiles a route's rules, validating label names under `names`.
    pub fn compile(config: &RouteConfig, names: NameValidation) -> Result<Route, RouteError> {
        Ok(Route {
            name: config.name.clone(),
            topic: config.topic.clone(),
            rules: config.rules(names)?,
            task: config.task(),
            partition_labels: config.partition_labels.clone(),
            aggregation: config.aggregation()?,
            record_encoding: config.record_encoding()?,
            record_format: config.record_format()?,
            id: NEXT_ROUTE_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        })
    }

    /// The route's relabel rules (metadata without series is judged by
    /// them too, see `super::metadata`).
    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// The route's `stream_aggr_file` rules, when set.
    pub fn aggregation(&self) -> Option<&Aggregation> {
        self.aggregation.as_ref()
    }

    /// Relabels `labels` and stamps the task label. Returns the task id and
    /// partition (of `partitions`), or None when the series is dropped.
    pub fn apply<L: LabelPair>(&self, labels: &mut Vec<L>, partitions: u32) -> Option<(u32, u32)> {
        self.apply_routed(labels, partitions)
            .map(|(t, p, _)| (t, p))
    }

    /// [`Route::apply`], also saying how the aggregation rules decided.
    pub fn apply_routed<L: LabelPair>(
        &self,
        labels: &mut Vec<L>,
        partitions: u32,
    ) -> Option<(u32, u32, Routed)> {
        self.apply_with(labels, partitions, &mut Scratch::default())
    }

    /// [`Route::apply_routed`] with buffers kept from series to series (see
    /// [`Rules::process_with`]): the strings of the labels it sets, the
    /// task label's too, come from `scratch`.
    pub fn apply_with<L: LabelPair>(
        &self,
        labels: &mut Vec<L>,
        partitions: u32,
        scratch: &mut Scratch,
    ) -> Option<(u32, u32, Routed)> {
        let (task, routed, partition_key) = self.stamp_with(labels, scratch)?;
        Some((task, jump_hash(partition_key, partitions), routed))
    }

    /// [`Route::apply_with`] without the partition count: returns the task
    /// id, how it was decided and the partition key, whose
    /// `jump_hash(key, partitions)` is the series' partition.
    fn stamp_with<L: LabelPair>(
        &self,
        labels: &mut Vec<L>,
        scratch: &mut Scratch,
    ) -> Option<(u32, Routed, u64)> {
        if !self.rules.process_with(labels, scratch) {
            return None;
        }
        let (task, routed) = match &self.aggregation {
            Some(aggregation) => aggregation.task_id(labels, &self.task),
            None => (task_id(labels, &self.task), Routed::Unmatched),
        };
        let mut name = scratch.string();
        name.push_str(&self.task.label_name);
        let mut value = scratch.string();
        // Writing to a String cannot fail.
        let _ = write!(value, "{task}");
        inject_label(labels, L::from_parts(name, value));
        // `partition_for_task` is `jump_hash` of the task id.
        let partition_key = if self.partition_labels.is_empty() {
            u64::from(task)
        } else {
            let selected = labels
                .iter()
                .map(|l| (l.name(), l.value()))
                .filter(|(n, _)| self.partition_labels.iter().any(|p| p == n));
            labels_hash_iter(selected)
        };
        Some((task, routed, partition_key))
    }
}

/// What routing a payload produced for one (route, partition).
#[derive(Debug, Default)]
pub struct Output {
    /// Encoded `TimeSeries` entries, each as WriteRequest field 1, so a
    /// concatenation of them is itself a valid WriteRequest.
    pub encoded: Vec<u8>,
    /// Series in `encoded`.
    pub series: usize,
    /// Float samples in `encoded`.
    pub samples: usize,
    /// Native histogram samples in `encoded`.
    pub histograms: usize,
}

/// Counters of one payload per route, for metrics.
#[derive(Debug, Default, Clone, Copy)]
pub struct RouteStats {
    /// Series that entered the route.
    pub series_in: u64,
    /// Series the relabel rules dropped.
    pub series_dropped: u64,
    /// Samples that entered the route.
    pub samples_in: u64,
    /// Samples dropped with their series.
    pub samples_dropped: u64,
    /// Series whose matching aggregation rules share no grouping label
    /// (routed by the empty label set, all to one task).
    pub aggregation_conflicts: u64,
    /// Metadata entries written (one per family and partition).
    pub metadata_out: u64,
    /// Series of the fast path found in the route's relabel cache.
    pub cache_hits: u64,
    /// Series of the fast path relabeled and put in the cache.
    pub cache_misses: u64,
    /// Times the cache forgot everything to stay within its budget.
    pub cache_clears: u64,
}

/// Routes every series of `request` through every route, calling
/// `emit(route index, partition, task, series)` for each kept series.
/// `partitions[i]` is route i's output partition count.
///
/// Series are relabeled in place: the last route works on the series' own
/// labels, so with one route (the common case) no label is copied. Earlier
/// routes work on a copy, kept in `scratch` so that its strings are reused
/// from series to series.
pub fn route_request(
    request: WriteRequest,
    routes: &[Route],
    partitions: &[u32],
    stats: &mut [RouteStats],
    mut emit: impl FnMut(usize, u32, u32, &TimeSeries),
) {
    route_request_named(
        request,
        routes,
        partitions,
        stats,
        false,
        |r, p, t, s, _| emit(r, p, t, s),
    )
}

/// [`route_request`], also handing `emit` each series' `__name__` before
/// relabeling when `names` is set ("" otherwise), which metadata needs
/// (see `super::metadata`).
pub fn route_request_named(
    request: WriteRequest,
    routes: &[Route],
    partitions: &[u32],
    stats: &mut [RouteStats],
    names: bool,
    mut emit: impl FnMut(usize, u32, u32, &TimeSeries, &str),
) {
    let mut scratch: Vec<Label> = Vec::new();
    // One per route, as in `route_fast`.
    let mut buffers: Vec<Scratch> = routes.iter().map(|_| Scratch::default()).collect();
    let mut original = String::new();
    for mut series in request.timeseries {
        let samples = (series.samples.len() + series.histograms.len()) as u64;
        if names {
            original.clear();
            if let Some(name) = series.labels.iter().find(|l| l.name == "__name__") {
                original.push_str(&name.value);
            }
        }
        for (i, route) in routes.iter().enumerate() {
            let last = i + 1 == routes.len();
            if !last {
                // Later routes need the original labels: keep them in
                // `scratch` and let this route relabel a copy.
                copy_labels(&mut scratch, &series.labels);
                std::mem::swap(&mut scratch, &mut series.labels);
            }
            stats[i].series_in += 1;
            stats[i].samples_in += samples;
            match route.apply_with(&mut series.labels, partitions[i], &mut buffers[i]) {
                Some((task, partition, routed)) => {
                    stats[i].aggregation_conflicts += u64::from(routed == Routed::Conflict);
                    emit(i, partition, task, &series, &original)
                }
                None => {
                    stats[i].series_dropped += 1;
                    stats[i].samples_dropped += samples;
                }
            }
            if !last {
                std::mem::swap(&mut scratch, &mut series.labels);
            }
        }
    }
}

/// Makes `dst` a copy of `src`, reusing `dst`'s string buffers (a plain
/// `clone` would allocate every string anew).
fn copy_labels(dst: &mut Vec<Label>, src: &[Label]) {
    dst.truncate(src.len());
    for (d, s) in dst.iter_mut().zip(src) {
        d.name.clone_from(&s.name);
        d.value.clone_from(&s.value);
    }
    let copied = dst.len();
    dst.extend_from_slice(&src[copied..]);
}

/// A label borrowed from the decompressed payload until a relabel rule
/// changes it: the fast path's [`LabelPair`].
pub type CowLabel<'a> = (Cow<'a, str>, Cow<'a, str>);

impl LabelPair for CowLabel<'_> {
    fn name(&self) -> &str {
        &self.0
    }
    fn value(&self) -> &str {
        &self.1
    }
    fn from_parts(name: String, value: String) -> Self {
        (Cow::Owned(name), Cow::Owned(value))
    }
}

/// A relabeled series of the fast path, as handed to `emit`.
pub struct FastEntry<'s, 'a> {
    /// The relabeled labels, sorted, with the task label, encoded as
    /// `TimeSeries.labels` (field 1 entries).
    pub labels: &'s [u8],
    /// The series' `__name__` after relabeling ("" without one).
    pub relabeled_name: &'s str,
    /// The series' other fields, already encoded (see `remote_write::fast::FastRequest::rest`).
    pub rest: &'s [u8],
    /// Float samples in `rest`.
    pub samples: usize,
    /// Native histogram samples in `rest`.
    pub histograms: usize,
    /// The series' `__name__` before relabeling ("" without one), which
    /// metadata needs (see `super::metadata`).
    pub name: &'a str,
}

impl FastEntry<'_, '_> {
    /// Appends the series to `out` as WriteRequest field 1: the same bytes
    /// [`append_series`] writes for the prost-decoded series.
    pub fn append_to(&self, out: &mut Output) {
        entry::put_entry_encoded(self.labels, self.rest, &mut out.encoded);
        out.series += 1;
        out.samples += self.samples;
        out.histograms += self.histograms;
    }

    /// Appends the series to `out` in the `series_ids` format: a
    /// definition or a reference of `ids` for `key`'s records.
    pub fn put_with_id(
        &self,
        ids: &mut SeriesWriter<BatchKey>,
        key: &BatchKey,
        now_ms: i64,
        out: &mut Output,
    ) {
        ids.put_encoded(key, self.labels, self.rest, now_ms, &mut out.encoded);
        out.series += 1;
        out.samples += self.samples;
        out.histograms += self.histograms;
    }

    /// Encoded size as a WriteRequest entry, like [`entry_len`].
    pub fn entry_len(&self) -> usize {
        entry::encoded_entry_len(self.labels.len() + self.rest.len())
    }
}

/// What [`route_fast`] keeps from request to request on one worker: per
/// route, what it made of the series it saw (a [`RelabelCache`] of
/// `router.relabel_cache_bytes`), and buffers.
pub struct FastRouting {
    budget: usize,
    caches: Vec<RelabelCache>,
    /// One per route: its capture positions are made for its regexes.
    scratch: Vec<Scratch>,
    /// The series' labels before relabeling, encoded: the caches' key
    /// when the request's own bytes of them cannot be (`FastSeries::label_run`).
    key: Vec<u8>,
    /// A missed series' labels after relabeling, encoded.
    encoded: Vec<u8>,
    /// A missed series' `__name__` after relabeling.
    name: String,
}

impl FastRouting {
    /// Caches of at most `budget` bytes per route (0: none).
    pub fn new(budget: usize) -> FastRouting {
        FastRouting {
            budget,
            caches: Vec::new(),
            scratch: Vec::new(),
            key: Vec::new(),
            encoded: Vec::new(),
            name: String::new(),
        }
    }

    /// Bytes the caches hold (see `RelabelCache::used`).
    pub fn cache_bytes(&self) -> usize {
        self.caches.iter().map(RelabelCache::used).sum()
    }

    /// One cache and scratch per route of `routes`; a cache of another
    /// route (before a reload) forgets what it had.
    fn fit(&mut self, routes: &[Route]) {
        self.caches.truncate(routes.len());
        for (cache, route) in self.caches.iter_mut().zip(routes) {
            cache.serve(route.id);
        }
        let have = self.caches.len();
        let budget = self.budget;
        self.caches.extend(
            routes[have..]
                .iter()
                .map(|r| RelabelCache::new(budget, r.id)),
        );
        self.scratch.resize_with(routes.len(), Scratch::default);
    }
}

/// [`route_request`] for a request read by
/// [`crate::remote_write::fast::parse`]: the same
/// routing, stats and output bytes, without decoding labels into strings.
/// Each route relabels its own copy of the borrowed labels; copying them is
/// cheap, so unlike [`route_request`] no route works in place. A series a
/// route has seen before (in `fast`'s cache) is not relabeled again.
pub fn route_fast<'a>(
    request: &FastRequest<'a>,
    routes: &[Route],
    partitions: &[u32],
    fast: &mut FastRouting,
    stats: &mut [RouteStats],
    mut emit: impl FnMut(usize, u32, u32, &FastEntry<'_, 'a>),
) {
    fast.fit(routes);
    let cached = fast.budget > 0;
    let FastRouting {
        caches,
        scratch,
        key,
        encoded,
        name: relabeled_name,
        ..
    } = fast;
    let mut labels: Vec<CowLabel<'a>> = Vec::new();
    for series in &request.series {
        let samples = (series.samples + series.histograms) as u64;
        let original = request
            .labels
            .get(series.labels.clone())
            .unwrap_or_default();
        let name = original
            .iter()
            .find(|(n, _)| *n == "__name__")
            .map_or("", |(_, v)| *v);
        let rest = request.rest(series);
        // Counts the series and hands it to `emit` when kept.
        let mut deliver = |i: usize, outcome: Outcome<'_>, stats: &mut RouteStats| {
            stats.series_in += 1;
            stats.samples_in += samples;
            match outcome {
                Outcome::Kept(kept) => {
                    stats.aggregation_conflicts += u64::from(kept.routed == Routed::Conflict);
                    let entry = FastEntry {
                        labels: kept.labels,
                        relabeled_name: kept.name,
                        rest,
                        samples: series.samples,
                        histograms: series.histograms,
                        name,
                    };
                    emit(
                        i,
                        jump_hash(kept.partition_key, partitions[i]),
                        kept.task,
                        &entry,
                    );
                }
                Outcome::Dropped => {
                    stats.series_dropped += 1;
                    stats.samples_dropped += samples;
                }
            }
        };
        // The labels as the request wrote them when that is one run of
        // label entries, else encoded anew: equal keys are equal labels.
        let key: &[u8] = match series.label_run {
            Some(run) => run,
            None => {
                key.clear();
                if cached {
                    entry::put_labels(original.iter().copied(), key);
                }
                key
            }
        };
        for (i, route) in routes.iter().enumerate() {
            let miss = match cached.then(|| caches[i].get(key)) {
                Some(Ok(outcome)) => {
                    stats[i].cache_hits += 1;
                    deliver(i, outcome, &mut stats[i]);
                    continue;
                }
                Some(Err(miss)) => Some(miss),
                None => None,
            };
            labels.clear();
            labels.extend(
                original
                    .iter()
                    .map(|&(n, v)| (Cow::Borrowed(n), Cow::Borrowed(v))),
            );
            encoded.clear();
            relabeled_name.clear();
            let outcome = match route.stamp_with(&mut labels, &mut scratch[i]) {
                Some((task, routed, partition_key)) => {
                    entry::put_labels(labels.iter().map(|(n, v)| (&**n, &**v)), encoded);
                    if let Some((_, v)) = labels.iter().find(|(n, _)| n == "__name__") {
                        relabeled_name.push_str(v);
                    }
                    Outcome::Kept(Kept {
                        task,
                        routed,
                        partition_key,
                        labels: encoded,
                        name: relabeled_name,
                    })
                }
                None => Outcome::Dropped,
            };
            deliver(i, outcome, &mut stats[i]);
            if let Some(miss) = miss {
                stats[i].cache_misses += 1;
                stats[i].cache_clears += u64::from(caches[i].insert(key, miss, outcome));
            }
            // The series is written: the strings of the labels set for it
            // are spares for the next one.
            for (name, value) in labels.drain(..) {
                for text in [name, value] {
                    if let Cow::Owned(text) = text {
                        scratch[i].give(text);
                    }
                }
            }
        }
    }
}

/// Appends `series` to `out` as WriteRequest field 1.
pub fn append_series(out: &mut Output, series: &TimeSeries) {
    entry::put_series(series, &mut out.encoded);
    out.series += 1;
    out.samples += series.samples.len();
    out.histograms += series.histograms.len();
}

/// [`append_series`] in the `series_ids` format (see
/// [`FastEntry::put_with_id`]). The prost path only: its other fields are
/// encoded into a buffer of their own first.
pub fn put_series_with_id(
    out: &mut Output,
    series: &TimeSeries,
    ids: &mut SeriesWriter<BatchKey>,
    key: &BatchKey,
    now_ms: i64,
) {
    let mut rest = Vec::new();
    entry::put_rest(series, &mut rest);
    let labels = series.labels.iter().map(|l| (&*l.name, &*l.value));
    ids.put(key, labels, &rest, now_ms, &mut out.encoded);
    out.series += 1;
    out.samples += series.samples.len();
    out.histograms += series.histograms.len();
}

/// Encoded size of `series` as a WriteRequest entry (for batch limits).
pub fn entry_len(series: &TimeSeries) -> usize {
    entry::series_entry_len(series)
}

#[cfg(test)]
mod tests;
