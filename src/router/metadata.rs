//! Metric metadata (type, help, unit) from an ingress payload into the task
//! topics: which (route, partition) batches get which `MetricMetadata`.
//!
//! Rule (see ARCHITECTURE.md, "Task-topic record"):
//! - a family with series in the same payload follows them: its entry goes
//!   to every partition the route wrote one of those series to, under the
//!   family name the relabel rules left them with; a family whose series
//!   the route dropped entirely gets no entry;
//! - a family without series in the payload (Prometheus 2.x sends metadata
//!   in requests of their own) goes to every partition of the route,
//!   unchanged: its series spread over all partitions (the task id hashes
//!   every label), and without series the rules have nothing to judge.
//!
//! A series belongs to family `f` when its `__name__` is `f`, or `f` plus
//! one of the suffixes of [`SUFFIXES`] (histogram, summary, OpenMetrics
//! counter series); an exact match wins.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::route::Output;
use crate::remote_write::proto::v1::{MetricMetadata, TimeSeries};

/// Series name suffixes of one family, as the exposition formats write them.
pub const SUFFIXES: [&str; 8] = [
    "_bucket", "_sum", "_count", "_total", "_created", "_info", "_gsum", "_gcount",
];

/// The metadata of one payload and where its families' series went.
pub struct Families {
    metadata: Vec<MetricMetadata>,
    /// Family name → index in `metadata` (the first entry of a name wins).
    by_name: HashMap<String, usize>,
    /// Per metadata entry: the payload has series of this family.
    with_series: Vec<bool>,
    /// Per route: (entry, family name after relabeling) → partitions.
    targets: Vec<BTreeMap<(usize, String), BTreeSet<u32>>>,
}

impl Families {
    /// Takes the payload's metadata; `series` are its series before
    /// relabeling, `routes` the number of routes.
    pub fn new(metadata: Vec<MetricMetadata>, series: &[TimeSeries], routes: usize) -> Families {
        let mut by_name = HashMap::new();
        for (i, md) in metadata.iter().enumerate() {
            if !md.metric_family_name.is_empty() {
                by_name.entry(md.metric_family_name.clone()).or_insert(i);
            }
        }
        let mut families = Families {
            with_series: vec![false; metadata.len()],
            metadata,
            by_name,
            targets: vec![BTreeMap::new(); routes],
        };
        for ts in series {
            if let Some((i, _)) = families.family_of(metric_name(ts)) {
                families.with_series[i] = true;
            }
        }
        families
    }

    /// The metadata entry of a series named `name`, and the suffix that
    /// joined them ("" for an exact match).
    fn family_of(&self, name: &str) -> Option<(usize, &'static str)> {
        if let Some(&i) = self.by_name.get(name) {
            return Some((i, ""));
        }
        SUFFIXES.iter().find_map(|&suffix| {
            let family = name.strip_suffix(suffix)?;
            self.by_name.get(family).map(|&i| (i, suffix))
        })
    }

    /// Notes that `route` wrote `series` (relabeled; `original` was its
    /// `__name__` before) to `partition`.
    pub fn saw(&mut self, route: usize, partition: u32, original: &str, series: &TimeSeries) {
        let Some((i, suffix)) = self.family_of(original) else {
            return;
        };
        let name = metric_name(series);
        // A renamed family keeps the suffix its series had, if it still has it.
        let family = name.strip_suffix(suffix).unwrap_or(name);
        let targets = &mut self.targets[route];
        match targets.get_mut(&(i, family.to_owned())) {
            Some(partitions) => {
                partitions.insert(partition);
            }
            None => {
                targets.insert((i, family.to_owned()), BTreeSet::from([partition]));
            }
        }
    }

    /// Every (route, partition, entry) to write; `partitions[r]` is route
    /// r's partition count.
    pub fn finish(self, partitions: &[u32]) -> Vec<(usize, u32, MetricMetadata)> {
        let mut out = Vec::new();
        for (route, targets) in self.targets.into_iter().enumerate() {
            for ((i, family), parts) in targets {
                let md = MetricMetadata {
                    metric_family_name: family,
                    ..self.metadata[i].clone()
                };
                out.extend(parts.into_iter().map(|p| (route, p, md.clone())));
            }
            for &i in self.by_name.values() {
                if !self.with_series[i] {
                    let md = &self.metadata[i];
                    out.extend((0..partitions[route]).map(|p| (route, p, md.clone())));
                }
            }
        }
        out.sort_by(|a, b| {
            (a.0, a.1, &a.2.metric_family_name).cmp(&(b.0, b.1, &b.2.metric_family_name))
        });
        out
    }
}

/// Appends `metadata` to `out` as WriteRequest field 3 (`metadata`), so the
/// record stays a valid WriteRequest.
pub fn append_metadata(out: &mut Output, metadata: &MetricMetadata) {
    prost::encoding::message::encode(3, metadata, &mut out.encoded);
}

/// The series' `__name__` ("" without one).
fn metric_name(series: &TimeSeries) -> &str {
    series
        .labels
        .iter()
        .find(|l| l.name == "__name__")
        .map_or("", |l| l.value.as_str())
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::remote_write::proto::v1::metric_metadata::MetricType;
    use crate::remote_write::proto::v1::{Label, WriteRequest};

    fn md(name: &str, kind: MetricType) -> MetricMetadata {
        MetricMetadata {
            r#type: kind as i32,
            metric_family_name: name.into(),
            help: format!("help of {name}"),
            unit: "seconds".into(),
        }
    }

    fn ts(name: &str) -> TimeSeries {
        TimeSeries {
            labels: vec![Label::new("__name__", name)],
            ..Default::default()
        }
    }

    #[test]
    fn metadata_appended_as_field_3_decodes_with_the_series() {
        let mut out = Output::default();
        super::super::route::append_series(&mut out, &ts("up"));
        append_metadata(&mut out, &md("up", MetricType::Gauge));
        // Field 3, wire type 2: key byte 0x1a, right after the series.
        let series_len = out.encoded.len() - md("up", MetricType::Gauge).encoded_len() - 2;
        assert_eq!(out.encoded[series_len], 0x1a);
        let decoded = WriteRequest::decode(out.encoded.as_slice()).unwrap();
        assert_eq!(decoded.timeseries, vec![ts("up")]);
        assert_eq!(decoded.metadata, vec![md("up", MetricType::Gauge)]);
    }

    #[test]
    fn families_follow_series_renames_and_drops() {
        let metadata = vec![
            md("http_duration", MetricType::Histogram),
            md("dropped", MetricType::Counter),
            md("renamed_total", MetricType::Counter),
            md("alone", MetricType::Gauge),
        ];
        let series = [
            ts("http_duration_bucket"),
            ts("http_duration_sum"),
            ts("dropped"),
            ts("renamed_total"),
        ];
        let mut families = Families::new(metadata, &series, 2);
        // Route 0: histogram series on partitions 1 and 2, "renamed_total"
        // relabeled to "new_total", "dropped" dropped.
        families.saw(0, 2, "http_duration_bucket", &ts("http_duration_bucket"));
        families.saw(0, 1, "http_duration_sum", &ts("http_duration_sum"));
        families.saw(0, 1, "http_duration_bucket", &ts("http_duration_bucket"));
        families.saw(0, 0, "renamed_total", &ts("new_total"));
        // Route 1: only "dropped" kept, on partition 0.
        families.saw(1, 0, "dropped", &ts("dropped"));
        let got: Vec<_> = families
            .finish(&[3, 2])
            .into_iter()
            .map(|(r, p, m)| (r, p, m.metric_family_name, m.r#type))
            .collect();
        let (h, c, g) = (
            MetricType::Histogram as i32,
            MetricType::Counter as i32,
            MetricType::Gauge as i32,
        );
        let want = vec![
            (0, 0, "alone".to_string(), g),
            (0, 0, "new_total".to_string(), c),
            (0, 1, "alone".to_string(), g),
            (0, 1, "http_duration".to_string(), h),
            (0, 2, "alone".to_string(), g),
            (0, 2, "http_duration".to_string(), h),
            (1, 0, "alone".to_string(), g),
            (1, 0, "dropped".to_string(), c),
            (1, 1, "alone".to_string(), g),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn exact_name_wins_and_unnamed_entries_are_skipped() {
        let metadata = vec![
            md("x", MetricType::Counter),
            md("x_total", MetricType::Gauge),
            md("", MetricType::Gauge),
        ];
        let mut families = Families::new(metadata, &[ts("x_total")], 1);
        families.saw(0, 0, "x_total", &ts("x_total"));
        let got: Vec<_> = families
            .finish(&[2])
            .into_iter()
            .map(|(_, p, m)| (p, m.metric_family_name))
            .collect();
        // "x" has no series of its own here (x_total is its own family), so
        // it goes everywhere; the nameless entry nowhere.
        let want = [(0, "x"), (0, "x_total"), (1, "x")];
        assert_eq!(
            got,
            want.map(|(p, n)| (p, n.to_string())).to_vec(),
            "{got:?}"
        );
    }
}
