//! The pure part of the router: one decoded ingress payload in, encoded
//! series per (route, partition) out. No I/O, so it is unit-tested and
//! benchmarked on its own.
//!
//! Invariants: every output series has its labels sorted by name and
//! carries the route's task label `0..task_count`; a series goes to exactly
//! one partition per route that keeps it; each route relabels its own copy.

use super::config::RouteConfig;
use super::task_id::{inject_task_label_any, jump_hash, labels_hash_iter, partition_for_task, task_id, TaskIdConfig};
use crate::relabel::{LabelPair, Rules};
use crate::remote_write::proto::v1::{Label, TimeSeries, WriteRequest};

/// A compiled route.
pub struct Route {
    /// Route name.
    pub name: String,
    /// Output topic.
    pub topic: String,
    rules: Rules,
    task: TaskIdConfig,
    partition_labels: Vec<String>,
}

impl Route {
    /// Compiles a route's rules.
    pub fn compile(config: &RouteConfig) -> Result<Route, String> {
        Ok(Route {
            name: config.name.clone(),
            topic: config.topic.clone(),
            rules: config.rules()?,
            task: config.task(),
            partition_labels: config.partition_labels.clone(),
        })
    }

    /// Relabels `labels` and stamps the task label. Returns the task id and
    /// partition (of `partitions`), or None when the series is dropped.
    pub fn apply<L: LabelPair>(&self, labels: &mut Vec<L>, partitions: u32) -> Option<(u32, u32)> {
        if !self.rules.process_any(labels) {
            return None;
        }
        let task = task_id(labels, &self.task);
        inject_task_label_any(labels, &self.task.label_name, task);
        let partition = if self.partition_labels.is_empty() {
            partition_for_task(task, partitions)
        } else {
            let selected = labels
                .iter()
                .map(|l| (l.name(), l.value()))
                .filter(|(n, _)| self.partition_labels.iter().any(|p| p == n));
            jump_hash(labels_hash_iter(selected), partitions)
        };
        Some((task, partition))
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
    let mut scratch: Vec<Label> = Vec::new();
    for mut series in request.timeseries {
        let samples = (series.samples.len() + series.histograms.len()) as u64;
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
            match route.apply(&mut series.labels, partitions[i]) {
                Some((task, partition)) => emit(i, partition, task, &series),
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

/// Appends `series` to `out` as WriteRequest field 1.
pub fn append_series(out: &mut Output, series: &TimeSeries) {
    encode_entry(series, &mut out.encoded);
    out.series += 1;
    out.samples += series.samples.len();
    out.histograms += series.histograms.len();
}

/// Encoded size of `series` as a WriteRequest entry (for batch limits).
pub fn entry_len(series: &TimeSeries) -> usize {
    let len = series_len(series);
    1 + prost::encoding::encoded_len_varint(len as u64) + len
}

// Protobuf keys (field number << 3 | wire type 2, length-delimited).
/// `WriteRequest.timeseries`, `TimeSeries.labels` and `Label.name`: field 1.
const KEY_FIELD_1: u8 = 1 << 3 | 2;
/// `Label.value`: field 2.
const KEY_FIELD_2: u8 = 2 << 3 | 2;

/// Writes what `prost::encoding::message::encode(1, series, buf)` writes,
/// byte for byte, but encodes the labels (most of every entry) by hand:
/// prost's generic path computes each label's length twice and writes
/// varints one `BufMut` call per byte. Samples, exemplars and histograms
/// still go through prost.
fn encode_entry(series: &TimeSeries, buf: &mut Vec<u8>) {
    let len = series_len(series);
    buf.reserve(1 + 10 + len);
    buf.push(KEY_FIELD_1);
    put_varint(buf, len);
    for label in &series.labels {
        buf.push(KEY_FIELD_1);
        put_varint(buf, label_len(label));
        // proto3 leaves empty strings out, as prost does.
        for (key, text) in [(KEY_FIELD_1, &label.name), (KEY_FIELD_2, &label.value)] {
            if !text.is_empty() {
                buf.push(key);
                put_varint(buf, text.len());
                buf.extend_from_slice(text.as_bytes());
            }
        }
    }
    prost::encoding::message::encode_repeated(2, &series.samples, buf);
    prost::encoding::message::encode_repeated(3, &series.exemplars, buf);
    prost::encoding::message::encode_repeated(4, &series.histograms, buf);
}

/// `series.encoded_len()`, with the labels summed by hand (see [`encode_entry`]).
fn series_len(series: &TimeSeries) -> usize {
    let labels: usize = series
        .labels
        .iter()
        .map(|label| {
            let len = label_len(label);
            1 + prost::encoding::encoded_len_varint(len as u64) + len
        })
        .sum();
    labels
        + prost::encoding::message::encoded_len_repeated(2, &series.samples)
        + prost::encoding::message::encoded_len_repeated(3, &series.exemplars)
        + prost::encoding::message::encoded_len_repeated(4, &series.histograms)
}

/// `label.encoded_len()`.
fn label_len(label: &Label) -> usize {
    let field = |text: &str| match text.len() {
        0 => 0,
        n => 1 + prost::encoding::encoded_len_varint(n as u64) + n,
    };
    field(&label.name) + field(&label.value)
}

/// Appends `value` as a protobuf varint.
fn put_varint(buf: &mut Vec<u8>, value: usize) {
    let mut value = value as u64;
    while value >= 0x80 {
        // Low 7 bits, with the continuation bit set.
        buf.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    buf.push(value as u8);
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::relabel::RelabelConfig;
    use crate::remote_write::proto::v1::Sample;

    fn route(rules: &str, task_count: u32) -> Route {
        let relabel_configs: Vec<RelabelConfig> = serde_yaml::from_str(rules).unwrap();
        Route::compile(&RouteConfig {
            name: "r".into(),
            topic: "t".into(),
            task_count,
            task_labels: vec![],
            task_label_name: "stream_task_id".into(),
            partition_labels: vec![],
            relabel_configs,
            relabel_file: None,
        })
        .unwrap()
    }

    fn series(job: &str) -> TimeSeries {
        TimeSeries {
            labels: vec![Label::new("__name__", "up"), Label::new("job", job)],
            samples: vec![Sample { value: 1.0, timestamp: 1 }],
            ..Default::default()
        }
    }

    #[test]
    fn routes_fan_out_on_their_own_copies() {
        let routes = [
            route("- target_label: job\n  replacement: changed\n", 4),
            route("- source_labels: [job]\n  regex: b\n  action: drop\n", 8),
        ];
        let request = WriteRequest { timeseries: vec![series("a"), series("b")], metadata: vec![] };
        let mut stats = [RouteStats::default(); 2];
        let mut out = Vec::new();
        route_request(request, &routes, &[2, 3], &mut stats, |r, p, t, s| out.push((r, p, t, s.clone())));
        // Route 0 sees both series (rewritten); route 1 sees the originals, dropping job=b.
        assert_eq!(out.len(), 3);
        assert_eq!(out.iter().filter(|o| o.0 == 0).count(), 2);
        assert!(out.iter().filter(|o| o.0 == 0).all(|o| o.3.labels[1].value == "changed"));
        let r1: Vec<_> = out.iter().filter(|o| o.0 == 1).collect();
        assert_eq!(r1.len(), 1);
        assert_eq!(r1[0].3.labels[1].value, "a", "route 1 did not see route 0's change");
        assert_eq!(stats[1].series_dropped, 1);
        assert_eq!(stats[1].samples_in, 2);
        for (_, p, t, s) in &out {
            assert!(*p < 3);
            let names: Vec<&str> = s.labels.iter().map(|l| l.name.as_str()).collect();
            let mut sorted = names.clone();
            sorted.sort_unstable();
            assert_eq!(names, sorted, "labels stay sorted");
            assert_eq!(s.labels.last().unwrap(), &Label::new("stream_task_id", t.to_string()));
        }
    }

    #[test]
    fn a_series_bringing_its_own_task_label_gets_the_same_task() {
        let r = route("[]", 16);
        let mut plain = vec![("__name__".to_string(), "up".to_string())];
        let mut stamped = vec![("__name__".to_string(), "up".to_string()), ("stream_task_id".to_string(), "999".to_string())];
        assert_eq!(r.apply(&mut plain, 4), r.apply(&mut stamped, 4));
        assert_eq!(plain, stamped, "the stale value is overwritten");
    }

    /// The hand-written label encoding must be byte-identical to prost's.
    #[test]
    fn entries_are_encoded_exactly_like_prost() {
        use crate::remote_write::proto::v1::{Exemplar, Histogram};
        let long = "x".repeat(200); // multi-byte length varints
        let many: Vec<Label> = (0..20).map(|i| Label::new(format!("l{i:02}"), long.clone())).collect();
        let cases = [
            TimeSeries::default(),
            series("a"),
            TimeSeries {
                labels: vec![Label::new("", ""), Label::new("a", ""), Label::new("", "v"), Label::new(long.clone(), long.clone())],
                samples: vec![Sample { value: 0.0, timestamp: 0 }, Sample { value: -1.5, timestamp: -3 }],
                exemplars: vec![Exemplar { labels: vec![Label::new("trace_id", "abc")], value: 2.0, timestamp: 5 }],
                histograms: vec![Histogram { timestamp: 7, ..Default::default() }],
            },
            TimeSeries { labels: many, ..series("b") },
        ];
        for ts in &cases {
            let mut want = Vec::new();
            prost::encoding::message::encode(1, ts, &mut want);
            let mut out = Output::default();
            append_series(&mut out, ts);
            assert_eq!(out.encoded, want);
            assert_eq!(entry_len(ts), want.len());
        }
    }

    #[test]
    fn concatenated_entries_decode_as_one_write_request() {
        let mut out = Output::default();
        append_series(&mut out, &series("a"));
        append_series(&mut out, &series("b"));
        assert_eq!(out.encoded.len(), entry_len(&series("a")) + entry_len(&series("b")));
        let decoded = WriteRequest::decode(out.encoded.as_slice()).unwrap();
        assert_eq!(decoded.timeseries, vec![series("a"), series("b")]);
        assert_eq!((out.series, out.samples), (2, 2));
    }
}
