//! The pure part of the router: one decoded ingress payload in, encoded
//! series per (route, partition) out. No I/O, so it is unit-tested and
//! benchmarked on its own.
//!
//! Invariants: every output series has its labels sorted by name and
//! carries the route's task label `0..task_count`; a series goes to exactly
//! one partition per route that keeps it; each route relabels its own copy.

use prost::Message;

use super::config::RouteConfig;
use super::task_id::{inject_task_label, jump_hash, labels_hash_iter, partition_for_task, task_id, TaskIdConfig};
use crate::relabel::Rules;
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
    pub fn apply(&self, labels: &mut Vec<(String, String)>, partitions: u32) -> Option<(u32, u32)> {
        if !self.rules.process(labels) {
            return None;
        }
        let task = task_id(labels, &self.task);
        inject_task_label(labels, &self.task.label_name, task);
        let partition = if self.partition_labels.is_empty() {
            partition_for_task(task, partitions)
        } else {
            let selected = labels
                .iter()
                .filter(|(n, _)| self.partition_labels.iter().any(|p| p == n))
                .map(|(n, v)| (n.as_str(), v.as_str()));
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
pub fn route_request(
    request: WriteRequest,
    routes: &[Route],
    partitions: &[u32],
    stats: &mut [RouteStats],
    mut emit: impl FnMut(usize, u32, u32, &TimeSeries),
) {
    let mut labels: Vec<(String, String)> = Vec::with_capacity(16);
    for mut series in request.timeseries {
        let samples = (series.samples.len() + series.histograms.len()) as u64;
        let original: Vec<(String, String)> =
            std::mem::take(&mut series.labels).into_iter().map(|l| (l.name, l.value)).collect();
        for (i, route) in routes.iter().enumerate() {
            labels.clear();
            labels.extend(original.iter().cloned());
            stats[i].series_in += 1;
            stats[i].samples_in += samples;
            let Some((task, partition)) = route.apply(&mut labels, partitions[i]) else {
                stats[i].series_dropped += 1;
                stats[i].samples_dropped += samples;
                continue;
            };
            series.labels = labels.drain(..).map(|(name, value)| Label { name, value }).collect();
            emit(i, partition, task, &series);
        }
    }
}

/// Appends `series` to `out` as WriteRequest field 1.
pub fn append_series(out: &mut Output, series: &TimeSeries) {
    prost::encoding::message::encode(1, series, &mut out.encoded);
    out.series += 1;
    out.samples += series.samples.len();
    out.histograms += series.histograms.len();
}

/// Encoded size of `series` as a WriteRequest entry (for batch limits).
pub fn entry_len(series: &TimeSeries) -> usize {
    let len = series.encoded_len();
    1 + prost::encoding::encoded_len_varint(len as u64) + len
}

#[cfg(test)]
mod tests {
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
