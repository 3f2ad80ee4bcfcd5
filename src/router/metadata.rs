//! Metric metadata (type, help, unit) from an ingress payload into the task
//! topics: which (route, partition) batches get which `MetricMetadata`.
//!
//! Rule (see ARCHITECTURE.md, "Task-topic record"):
//! - a family with series in the same payload follows them: its entry goes
//!   to every partition the route wrote one of those series to, under the
//!   family name the relabel rules left them with; a family whose series
//!   the route dropped entirely gets no entry;
//! - a family without series in the payload (Prometheus 2.x sends metadata
//!   in requests of their own) goes to every partition of the route (its
//!   series spread over all of them: the task id hashes every label), under
//!   the name the route's rules give the label set `{__name__=<family>}`,
//!   and nowhere when they drop it by its name (see [`family_under_rules`]).
//!
//! A series belongs to family `f` when its `__name__` is `f`, or `f` plus
//! one of the suffixes of [`SUFFIXES`] (histogram, summary, OpenMetrics
//! counter series); an exact match wins.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::route::{Output, Route};
use crate::relabel::Rules;
use crate::remote_write::proto::v1::{Label, MetricMetadata, TimeSeries};

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

    /// Every (route, partition, entry) to write; `routes` are the routes
    /// (for their rules), `partitions[r]` is route r's partition count.
    pub fn finish(self, routes: &[Route], partitions: &[u32]) -> Vec<(usize, u32, MetricMetadata)> {
        // Families without series, in the payload's order (the first entry
        // of a name wins, also when the rules rename two to one name).
        let mut alone: Vec<usize> = self
            .by_name
            .values()
            .copied()
            .filter(|&i| !self.with_series[i])
            .collect();
        alone.sort_unstable();
        let mut out = Vec::new();
        for (route, targets) in self.targets.into_iter().enumerate() {
            for ((i, family), parts) in targets {
                let md = MetricMetadata {
                    metric_family_name: family,
                    ..self.metadata[i].clone()
                };
                out.extend(parts.into_iter().map(|p| (route, p, md.clone())));
            }
            let mut named = BTreeSet::new();
            for &i in &alone {
                let md = &self.metadata[i];
                let Some(family) =
                    family_under_rules(routes[route].rules(), &md.metric_family_name)
                else {
                    continue;
                };
                if !named.insert(family.clone()) {
                    continue;
                }
                let md = MetricMetadata {
                    metric_family_name: family,
                    ..md.clone()
                };
                out.extend((0..partitions[route]).map(|p| (route, p, md.clone())));
            }
        }
        out.sort_by(|a, b| {
            (a.0, a.1, &a.2.metric_family_name).cmp(&(b.0, b.1, &b.2.metric_family_name))
        });
        out
    }
}

/// The name a family without series has under a route's `rules`, or None
/// when its metadata goes nowhere.
///
/// The rules run on the label set `{__name__=<family>}`: what they do to
/// the name is what they do to the family's series, as long as they judge
/// by the name (a drop or a rename of `__name__` by regex, the common
/// case). They cannot see the labels a family's series have besides the
/// name. So a drop is a verdict on the family only when the same rules keep
/// a series without that name ([`PROBE`]): a drop that also hits the probe
/// (a `keep` on `job`, say, which no name-only label set passes) says
/// nothing about the family, and its entry goes unchanged, as metadata for
/// a family without series is harmless downstream and losing a kept
/// family's metadata is not. A kept label set without a `__name__` (a
/// `labeldrop` of it) gets no entry.
pub fn family_under_rules(rules: &Rules, family: &str) -> Option<String> {
    let mut labels = vec![Label::new("__name__", family)];
    if rules.process_any(&mut labels) {
        return labels
            .into_iter()
            .find(|l| l.name == "__name__")
            .map(|l| l.value)
            .filter(|name| !name.is_empty());
    }
    let mut probe = vec![Label::new(PROBE.0, PROBE.1)];
    if rules.process_any(&mut probe) {
        None
    } else {
        Some(family.to_owned())
    }
}

/// A label set without `__name__` that name rules leave alone (relabeling
/// drops an empty set, so the probe needs one label).
pub const PROBE: (&str, &str) = ("streamroute_metadata_probe", "1");

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

    /// A route of `rules` (YAML relabel configs).
    fn route(rules: &str) -> Route {
        let config: crate::router::config::RouteConfig = serde_yaml::from_str(&format!(
            "name: r\ntopic: t\ntask_count: 4\nrelabel_configs: {rules}\n"
        ))
        .unwrap();
        Route::compile(&config, crate::remote_write::NameValidation::Utf8).unwrap()
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
            .finish(&[route("[]"), route("[]")], &[3, 2])
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
            .finish(&[route("[]")], &[2])
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

    #[test]
    fn families_without_series_follow_the_rules_on_their_name() {
        let metadata = vec![
            md("sr_dropped_total", MetricType::Counter),
            md("sr_old_total", MetricType::Counter),
            md("sr_kept_bytes", MetricType::Gauge),
            md("sr_twin_total", MetricType::Counter),
        ];
        let rules = r#"[
            {source_labels: [__name__], regex: sr_dropped_total, action: drop},
            {source_labels: [__name__], regex: "sr_(old|twin)_total", target_label: __name__, replacement: sr_new_total}
        ]"#;
        let routes = [route(rules), route("[]")];
        let families = Families::new(metadata, &[], 2);
        let got: Vec<_> = families
            .finish(&routes, &[2, 1])
            .into_iter()
            .map(|(r, p, m)| (r, p, m.metric_family_name, m.r#type))
            .collect();
        let (c, g) = (MetricType::Counter as i32, MetricType::Gauge as i32);
        let s = |name: &str| name.to_string();
        // Route 0: dropped gone, old renamed (twin renamed onto the same
        // name: the first entry wins), kept unchanged, on both partitions.
        // Route 1 has no rules: everything, unchanged.
        let want = vec![
            (0, 0, s("sr_kept_bytes"), g),
            (0, 0, s("sr_new_total"), c),
            (0, 1, s("sr_kept_bytes"), g),
            (0, 1, s("sr_new_total"), c),
            (1, 0, s("sr_dropped_total"), c),
            (1, 0, s("sr_kept_bytes"), g),
            (1, 0, s("sr_old_total"), c),
            (1, 0, s("sr_twin_total"), c),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn rules_that_judge_other_labels_leave_a_family_unchanged() {
        let rules = |yaml: &str| route(yaml);
        // A keep on job drops every name-only label set: no verdict.
        let keep_job = rules("[{source_labels: [job], regex: api, action: keep}]");
        assert_eq!(
            family_under_rules(keep_job.rules(), "up").as_deref(),
            Some("up")
        );
        // A drop on the name is one.
        let drop_up = rules("[{source_labels: [__name__], regex: up, action: drop}]");
        assert_eq!(family_under_rules(drop_up.rules(), "up"), None);
        assert_eq!(
            family_under_rules(drop_up.rules(), "down").as_deref(),
            Some("down")
        );
        // A keep list of names: families off the list are not dropped (the
        // probe fails it too), so their metadata still goes.
        let keep_list = rules("[{source_labels: [__name__], regex: up, action: keep}]");
        assert_eq!(
            family_under_rules(keep_list.rules(), "down").as_deref(),
            Some("down")
        );
        // Dropping __name__ leaves no family name.
        let no_name = rules("[{regex: __name__, action: labeldrop}]");
        assert_eq!(family_under_rules(no_name.rules(), "up"), None);
        // A rename by template.
        let prefix = rules(
            "[{source_labels: [__name__], regex: '(.+)', target_label: __name__, replacement: 'team_$1'}]",
        );
        assert_eq!(
            family_under_rules(prefix.rules(), "up").as_deref(),
            Some("team_up")
        );
    }
}
