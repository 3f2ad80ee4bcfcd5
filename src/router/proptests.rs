//! Property tests of the pure routing step and of the ingress record
//! headers: every emitted series is stamped, partitioned and encoded
//! correctly, each route works on its own copy, and no header crashes the
//! router.

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::test_runner::Config;
use prost::Message;
use rdkafka::message::{Header, OwnedHeaders};

use super::config::RouteConfig;
use super::route::{append_series, entry_len, route_request, Output, Route, RouteStats};
use super::task_id::{task_id, TaskIdConfig};
use crate::kafka::record::{
    IngressMeta, HEADER_ENCODING, HEADER_PROTOCOL, HEADER_RECEIVED_AT, HEADER_TENANT,
};
use crate::relabel::RelabelConfig;
use crate::remote_write::proto::v1::{Exemplar, Sample};
use crate::remote_write::{validate_v1, Label, Limits, TimeSeries, WriteRequest};

/// `cases` runs, no regression files written into the source tree.
fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

/// Relabel rules a route may have: none, rewrites, drops, a rule writing
/// the task label itself, one removing everything but a few labels.
const RULES: &[&str] = &[
    "[]",
    "- target_label: env\n  replacement: prod\n",
    "- source_labels: [job]\n  regex: 'a.*'\n  action: drop\n",
    "- source_labels: [job]\n  target_label: stream_task_id\n  replacement: '99999$1'\n",
    "- target_label: shard_task\n  replacement: '-1'\n- regex: 'job|instance|shard_task'\n  action: labelkeep\n",
    "- source_labels: [instance]\n  modulus: 5\n  target_label: job\n  action: hashmod\n- source_labels: [job]\n  regex: '0'\n  action: drop\n",
    "- regex: '(.*)'\n  action: labeldrop\n",
];

#[derive(Debug, Clone)]
struct RouteSpec {
    rules: usize,
    task_count: u32,
    task_labels: Vec<String>,
    label_name: String,
    partition_labels: Vec<String>,
    partitions: u32,
}

fn route_spec() -> impl Strategy<Value = RouteSpec> {
    let subset = || {
        prop::sample::subsequence(vec!["__name__", "instance", "job", "nope"], 0..=2)
            .prop_map(|v| v.into_iter().map(str::to_owned).collect::<Vec<String>>())
    };
    (
        0..RULES.len(),
        prop_oneof![Just(1u32), 1u32..100, Just(u32::MAX)],
        subset(),
        prop::sample::select(vec!["stream_task_id", "shard_task"]).prop_map(str::to_owned),
        subset(),
        prop_oneof![Just(1u32), 1u32..64],
    )
        .prop_map(
            |(rules, task_count, task_labels, label_name, partition_labels, partitions)| {
                RouteSpec {
                    rules,
                    task_count,
                    task_labels,
                    label_name,
                    partition_labels,
                    partitions,
                }
            },
        )
}

fn compile(spec: &RouteSpec) -> Route {
    let relabel_configs: Vec<RelabelConfig> = serde_yaml::from_str(RULES[spec.rules]).unwrap();
    Route::compile(
        &RouteConfig {
            task_labels: spec.task_labels.clone(),
            task_label_name: spec.label_name.clone(),
            partition_labels: spec.partition_labels.clone(),
            relabel_configs,
            ..RouteConfig::new("r", "t", spec.task_count)
        },
        crate::remote_write::NameValidation::default(),
    )
    .unwrap()
}

fn label_name() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => prop::sample::select(vec![
            "__name__", "instance", "job", "env", "stream_task_id", "shard_task", "a", "zz",
            "service.name", "é",
        ])
        .prop_map(str::to_owned),
        1 => "[a-zA-Z_][a-zA-Z0-9_]{0,6}",
    ]
}

fn label_value() -> impl Strategy<Value = String> {
    prop_oneof![3 => ".{0,10}", 1 => Just(String::new()), 1 => "a[0-9]"]
}

/// Sorted, unique, valid labels with a non-empty `__name__`, possibly
/// UTF-8 ones, possibly bringing a task label of their own.
fn labels() -> impl Strategy<Value = Vec<Label>> {
    (
        prop::collection::btree_map(label_name(), label_value(), 0..6),
        "[a-z.é]{1,8}",
    )
        .prop_map(|(mut m, name): (BTreeMap<_, _>, String)| {
            m.insert("__name__".to_owned(), name);
            m.into_iter().map(|(n, v)| Label::new(n, v)).collect()
        })
}

fn series() -> impl Strategy<Value = TimeSeries> {
    (
        labels(),
        prop::collection::vec((-1e9f64..1e9, any::<i64>()), 0..3),
        prop::collection::vec((-1e9f64..1e9, any::<i64>()), 0..2),
    )
        .prop_map(|(labels, samples, exemplars)| TimeSeries {
            labels,
            samples: samples
                .into_iter()
                .map(|(value, timestamp)| Sample { value, timestamp })
                .collect(),
            exemplars: exemplars
                .into_iter()
                .map(|(value, timestamp)| Exemplar {
                    labels: vec![Label::new("trace_id", "t")],
                    value,
                    timestamp,
                })
                .collect(),
            histograms: vec![],
        })
}

fn request() -> impl Strategy<Value = WriteRequest> {
    prop::collection::vec(series(), 1..6).prop_map(|timeseries| WriteRequest {
        timeseries,
        metadata: vec![],
    })
}

proptest! {
    #![proptest_config(config(500))]

    /// Routing a valid request through 1–3 routes.
    #[test]
    fn routing_stamps_partitions_and_encodes(
        req in request(),
        specs in prop::collection::vec(route_spec(), 1..=3),
    ) {
        prop_assert!(validate_v1(&req, &Limits::default()).is_ok());
        let routes: Vec<Route> = specs.iter().map(compile).collect();
        let partitions: Vec<u32> = specs.iter().map(|s| s.partitions).collect();
        let mut stats = vec![RouteStats::default(); routes.len()];
        let mut emitted: Vec<(usize, u32, u32, TimeSeries)> = Vec::new();
        route_request(req.clone(), &routes, &partitions, &mut stats, |r, p, t, s| {
            emitted.push((r, p, t, s.clone()));
        });

        // Each emitted series: task < task_count, partition < partitions,
        // labels strictly ascending and non-empty, the task label set to the task.
        for (r, p, t, s) in &emitted {
            let spec = &specs[*r];
            prop_assert!(*t < spec.task_count, "task {} of {}", t, spec.task_count);
            prop_assert!(*p < spec.partitions, "partition {} of {}", p, spec.partitions);
            prop_assert!(
                s.labels.windows(2).all(|w| w[0].name < w[1].name),
                "labels not sorted/unique: {:?}", s.labels
            );
            prop_assert!(s.labels.iter().all(|l| !l.value.is_empty()), "empty value: {:?}", s.labels);
            let stamped: Vec<&Label> = s.labels.iter().filter(|l| l.name == spec.label_name).collect();
            prop_assert_eq!(stamped.len(), 1);
            prop_assert_eq!(&stamped[0].value, &t.to_string());
        }

        // Each route saw every series on its own copy of the original labels:
        // what it emitted is exactly what it does to a fresh copy, in order.
        for (r, route) in routes.iter().enumerate() {
            let mut want = Vec::new();
            for ts in &req.timeseries {
                let mut labels = ts.labels.clone();
                if let Some((t, p)) = route.apply(&mut labels, partitions[r]) {
                    want.push((p, t, TimeSeries { labels, ..ts.clone() }));
                }
            }
            let got: Vec<(u32, u32, TimeSeries)> = emitted
                .iter()
                .filter(|e| e.0 == r)
                .map(|(_, p, t, s)| (*p, *t, s.clone()))
                .collect();
            prop_assert_eq!(&got, &want, "route {}", r);
            let n = req.timeseries.len() as u64;
            prop_assert_eq!(stats[r].series_in, n);
            prop_assert_eq!(stats[r].series_dropped, n - got.len() as u64);
        }

        // Per (route, partition): the appended entries decode (prost) to
        // exactly the emitted series, and the counters and sizes agree.
        let mut outputs: BTreeMap<(usize, u32), (Output, Vec<TimeSeries>)> = BTreeMap::new();
        for (r, p, _, s) in &emitted {
            let (out, series) = outputs.entry((*r, *p)).or_default();
            append_series(out, s);
            series.push(s.clone());
        }
        for ((r, p), (out, series)) in &outputs {
            let decoded = WriteRequest::decode(out.encoded.as_slice()).unwrap();
            prop_assert_eq!(&decoded.timeseries, series, "route {} partition {}", r, p);
            prop_assert_eq!(out.series, series.len());
            prop_assert_eq!(out.samples, series.iter().map(|s| s.samples.len()).sum::<usize>());
            prop_assert_eq!(out.encoded.len(), series.iter().map(entry_len).sum::<usize>());
        }
    }

    /// A series' task does not depend on a task label it already carries,
    /// whatever its value; re-routing a stamped series keeps task, partition
    /// and labels.
    #[test]
    fn task_id_ignores_existing_task_label(
        labels in labels(),
        stale in ".{0,12}",
        spec in route_spec(),
    ) {
        let name = spec.label_name.clone();
        // Empty values count as absent (relabeling removes them), so leave
        // them out to compare with what the route hashes.
        let plain: Vec<Label> =
            labels.into_iter().filter(|l| l.name != name && !l.value.is_empty()).collect();
        let mut stamped = plain.clone();
        let at = stamped.partition_point(|l| l.name < name);
        stamped.insert(at, Label::new(name.clone(), stale));

        let cfg = TaskIdConfig {
            task_count: spec.task_count,
            task_labels: (!spec.task_labels.is_empty()).then(|| spec.task_labels.clone()),
            task_labels_without: Vec::new(),
            label_name: name,
        };
        let task = task_id(&plain, &cfg);
        prop_assert!(task < spec.task_count);
        prop_assert_eq!(task_id(&stamped, &cfg), task);

        // Without relabel rules the route's result is the same both ways.
        let route = compile(&RouteSpec { rules: 0, ..spec.clone() });
        let plain_is_empty = plain.is_empty();
        let (mut a, mut b) = (plain, stamped);
        let ra = route.apply(&mut a, spec.partitions);
        let rb = route.apply(&mut b, spec.partitions);
        // A series with no other label is dropped (or kept for its stale task label).
        prop_assert_eq!(ra.is_some(), !plain_is_empty);
        if let Some((t, _)) = ra {
            prop_assert_eq!(t, task);
            // Stamping again is a no-op.
            let mut again = a.clone();
            prop_assert_eq!(route.apply(&mut again, spec.partitions), ra);
            prop_assert_eq!(&again, &a);
        }
        if !plain_is_empty {
            prop_assert_eq!(ra, rb);
            prop_assert_eq!(a, b);
        }
    }
}

/// A header key: the known ones, near misses, anything.
fn header_key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![HEADER_ENCODING, HEADER_PROTOCOL, HEADER_TENANT, HEADER_RECEIVED_AT])
            .prop_map(str::to_owned),
        1 => prop::sample::select(vec!["Content-Encoding", "tenant\0x", "", "route", "protocol "])
            .prop_map(str::to_owned),
        1 => ".{0,12}",
    ]
}

/// A header value: good ones, near misses, arbitrary bytes, or none.
fn header_value() -> impl Strategy<Value = Option<Vec<u8>>> {
    let good = prop::sample::select(vec![
        "snappy",
        "zstd",
        "identity",
        "ZSTD ",
        "gzip",
        "v1",
        "v2",
        "prometheus.WriteRequest",
        "io.prometheus.write.v2.Request",
        "1700000000000",
        "-1",
        "9223372036854775808",
        "team-a",
        "",
    ])
    .prop_map(|s| s.as_bytes().to_vec());
    prop::option::weighted(
        0.9,
        prop_oneof![3 => good, 1 => prop::collection::vec(any::<u8>(), 0..16), 1 => ".{0,8}".prop_map(String::into_bytes)],
    )
}

fn owned_headers(list: &[(String, Option<Vec<u8>>)]) -> OwnedHeaders {
    list.iter().fold(OwnedHeaders::new(), |h, (key, value)| {
        h.insert(Header {
            key,
            value: value.as_deref(),
        })
    })
}

fn is_known(key: &str) -> bool {
    // librdkafka stores keys NUL-terminated: "tenant\0x" reads back as "tenant".
    let key = key.split('\0').next().unwrap_or_default();
    [
        HEADER_ENCODING,
        HEADER_PROTOCOL,
        HEADER_TENANT,
        HEADER_RECEIVED_AT,
    ]
    .contains(&key)
}

proptest! {
    #![proptest_config(config(1000))]

    /// Any headers: metadata or an error, never a panic. Unknown headers are
    /// ignored, and metadata read back from its own headers is unchanged.
    #[test]
    fn ingress_headers_never_panic(
        list in prop::collection::vec((header_key(), header_value()), 0..8),
    ) {
        let result = IngressMeta::from_headers(Some(&owned_headers(&list)));
        let known: Vec<_> = list.iter().filter(|(k, _)| is_known(k)).cloned().collect();
        let known_only = IngressMeta::from_headers(Some(&owned_headers(&known)));
        match (&result, &known_only) {
            (Ok(a), Ok(b)) => {
                prop_assert_eq!(a, b);
                prop_assert_eq!(&IngressMeta::from_headers(Some(&a.to_headers())).unwrap(), a);
            }
            // Unknown keys are skipped, but their values must still be UTF-8.
            (Err(e), _) => prop_assert!(e.to_string().starts_with("header "), "{}", e),
            (Ok(a), Err(e)) => {
                return Err(TestCaseError::fail(format!("unknown headers turned {e:?} into {a:?}")))
            }
        }
    }
}

/// Guard against a vacuous routing property: the rule sets compile, and
/// some series are kept and some dropped.
#[test]
fn route_rules_compile_and_both_keep_and_drop() {
    let mut kept = 0;
    let mut dropped = 0;
    for rules in 0..RULES.len() {
        let spec = RouteSpec {
            rules,
            task_count: 8,
            task_labels: vec![],
            label_name: "stream_task_id".into(),
            partition_labels: vec![],
            partitions: 4,
        };
        let route = compile(&spec);
        let mut labels = vec![Label::new("__name__", "up"), Label::new("job", "api")];
        match route.apply(&mut labels, 4) {
            Some(_) => kept += 1,
            None => dropped += 1,
        }
    }
    assert!(kept > 0 && dropped > 0, "kept {kept}, dropped {dropped}");
}
