//! Unit tests of the routing step.

use prost::Message;

use super::*;
use crate::relabel::RelabelConfig;
use crate::remote_write::proto::v1::Sample;
use crate::remote_write::{fast, validate_v1, Limits};

fn route(rules: &str, task_count: u32) -> Route {
    let relabel_configs: Vec<RelabelConfig> = serde_yaml::from_str(rules).unwrap();
    Route::compile(
        &RouteConfig {
            relabel_configs,
            ..RouteConfig::new("r", "t", task_count)
        },
        NameValidation::default(),
    )
    .unwrap()
}

/// A route of 64 tasks with the `stream_aggr_file` at `file`.
fn aggregation_route(file: &std::path::Path) -> Route {
    Route::compile(
        &RouteConfig {
            stream_aggr_file: Some(file.to_path_buf()),
            ..RouteConfig::new("default", "streamroute.tasks.default", 64)
        },
        NameValidation::default(),
    )
    .unwrap()
}

fn series(job: &str) -> TimeSeries {
    TimeSeries {
        labels: vec![Label::new("__name__", "up"), Label::new("job", job)],
        samples: vec![Sample {
            value: 1.0,
            timestamp: 1,
        }],
        ..Default::default()
    }
}

#[test]
fn routes_fan_out_on_their_own_copies() {
    let routes = [
        route("- target_label: job\n  replacement: changed\n", 4),
        route("- source_labels: [job]\n  regex: b\n  action: drop\n", 8),
    ];
    let request = WriteRequest {
        timeseries: vec![series("a"), series("b")],
        metadata: vec![],
    };
    let mut stats = [RouteStats::default(); 2];
    let mut out = Vec::new();
    route_request(request, &routes, &[2, 3], &mut stats, |r, p, t, s| {
        out.push((r, p, t, s.clone()))
    });
    // Route 0 sees both series (rewritten); route 1 sees the originals, dropping job=b.
    assert_eq!(out.len(), 3);
    assert_eq!(out.iter().filter(|o| o.0 == 0).count(), 2);
    assert!(out
        .iter()
        .filter(|o| o.0 == 0)
        .all(|o| o.3.labels[1].value == "changed"));
    let r1: Vec<_> = out.iter().filter(|o| o.0 == 1).collect();
    assert_eq!(r1.len(), 1);
    assert_eq!(
        r1[0].3.labels[1].value, "a",
        "route 1 did not see route 0's change"
    );
    assert_eq!(stats[1].series_dropped, 1);
    assert_eq!(stats[1].samples_in, 2);
    for (_, p, t, s) in &out {
        assert!(*p < 3);
        let names: Vec<&str> = s.labels.iter().map(|l| l.name.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted, "labels stay sorted");
        assert_eq!(
            s.labels.last().unwrap(),
            &Label::new("stream_task_id", t.to_string())
        );
    }
}

#[test]
fn a_series_bringing_its_own_task_label_gets_the_same_task() {
    let r = route("[]", 16);
    let mut plain = vec![("__name__".to_string(), "up".to_string())];
    let mut stamped = vec![
        ("__name__".to_string(), "up".to_string()),
        ("stream_task_id".to_string(), "999".to_string()),
    ];
    assert_eq!(r.apply(&mut plain, 4), r.apply(&mut stamped, 4));
    assert_eq!(plain, stamped, "the stale value is overwritten");
}

/// The hand-written label encoding must be byte-identical to prost's.
#[test]
fn entries_are_encoded_exactly_like_prost() {
    use crate::remote_write::proto::v1::{Exemplar, Histogram};
    let long = "x".repeat(200); // multi-byte length varints
    let many: Vec<Label> = (0..20)
        .map(|i| Label::new(format!("l{i:02}"), long.clone()))
        .collect();
    let cases = [
        TimeSeries::default(),
        series("a"),
        TimeSeries {
            labels: vec![
                Label::new("", ""),
                Label::new("a", ""),
                Label::new("", "v"),
                Label::new(long.clone(), long.clone()),
            ],
            samples: vec![
                Sample {
                    value: 0.0,
                    timestamp: 0,
                },
                Sample {
                    value: -1.5,
                    timestamp: -3,
                },
            ],
            exemplars: vec![Exemplar {
                labels: vec![Label::new("trace_id", "abc")],
                value: 2.0,
                timestamp: 5,
            }],
            histograms: vec![Histogram {
                timestamp: 7,
                ..Default::default()
            }],
        },
        TimeSeries {
            labels: many,
            ..series("b")
        },
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
    assert_eq!(
        out.encoded.len(),
        entry_len(&series("a")) + entry_len(&series("b"))
    );
    let decoded = WriteRequest::decode(out.encoded.as_slice()).unwrap();
    assert_eq!(decoded.timeseries, vec![series("a"), series("b")]);
    assert_eq!((out.series, out.samples), (2, 2));
}

/// Routes `raw` (a decompressed 1.0 WriteRequest) both ways and checks
/// that the fast path emits the same series, bytes and stats as prost.
/// Returns false when the fast reader declined the request.
fn same_on_both_paths(raw: &[u8], routes: &[Route], partitions: &[u32]) -> bool {
    let Some(fast_req) = fast::parse(raw, &Limits::default()) else {
        return false;
    };
    let request = WriteRequest::decode(raw).unwrap();
    validate_v1(&request, &Limits::default()).unwrap();
    let (mut slow, mut quick) = (Vec::new(), Vec::new());
    let mut slow_stats = vec![RouteStats::default(); routes.len()];
    let mut quick_stats = slow_stats.clone();
    route_request(
        request,
        routes,
        partitions,
        &mut slow_stats,
        |r, p, t, series| {
            let mut out = Output::default();
            append_series(&mut out, series);
            slow.push((
                r,
                p,
                t,
                entry_len(series),
                out.encoded,
                out.series,
                out.samples,
                out.histograms,
            ));
        },
    );
    let fields = |x: &RouteStats| {
        (
            x.series_in,
            x.series_dropped,
            x.samples_in,
            x.samples_dropped,
            x.aggregation_conflicts,
        )
    };
    // Without a relabel cache, with one that misses every series, and with
    // the same one again, finding every series.
    let (mut none, mut cache) = (FastRouting::new(0), FastRouting::new(1 << 20));
    for (case, hits) in [(0, false), (1, false), (1, true)] {
        let routing = if case == 0 { &mut none } else { &mut cache };
        quick.clear();
        quick_stats.fill(RouteStats::default());
        route_fast(
            &fast_req,
            routes,
            partitions,
            routing,
            &mut quick_stats,
            |r, p, t, entry| {
                let mut out = Output::default();
                entry.append_to(&mut out);
                quick.push((
                    r,
                    p,
                    t,
                    entry.entry_len(),
                    out.encoded,
                    out.series,
                    out.samples,
                    out.histograms,
                ));
            },
        );
        assert_eq!(quick, slow);
        for (q, s) in quick_stats.iter().zip(&slow_stats) {
            assert_eq!(fields(q), fields(s));
            if hits {
                assert_eq!((q.cache_hits, q.cache_misses), (q.series_in, 0));
            }
        }
    }
    true
}

const BENCH_RULES: &str = "- source_labels: [__name__]\n  regex: 'go_memstats_.*'\n  action: drop\n- source_labels: [instance]\n  regex: '([^:]+):\\d+'\n  target_label: host\n- action: labeldrop\n  regex: container\n";

#[test]
fn fast_path_matches_prost_on_generator_payloads_with_histograms_and_exemplars() {
    use crate::remote_write::proto::v1::{histogram, BucketSpan, Exemplar, Histogram};
    let mut request = crate::produce::generate::payload(0, 500, 3, 1_700_000_000_000);
    for (i, ts) in request.timeseries.iter_mut().enumerate() {
        if i % 3 == 0 {
            ts.samples.push(Sample {
                value: 0.0,
                timestamp: 0,
            });
            ts.exemplars.push(Exemplar {
                labels: vec![Label::new("trace_id", "abc")],
                value: 2.0,
                timestamp: 5,
            });
        }
        if i % 5 == 0 {
            ts.histograms.push(Histogram {
                count: Some(histogram::Count::CountInt(3)),
                schema: -1,
                positive_spans: vec![BucketSpan {
                    offset: -2,
                    length: 2,
                }],
                // Buckets 1 and 2: the count of 3 adds up.
                positive_deltas: vec![1, 1],
                timestamp: 7,
                ..Default::default()
            });
        }
    }
    let raw = request.encode_to_vec();
    let routes = [
        route(BENCH_RULES, 64),
        route("- target_label: job\n  replacement: changed\n", 4),
        route("[]", 16),
    ];
    assert!(same_on_both_paths(&raw, &routes, &[8, 3, 5]));
    // With a stream aggregation file: the same routing on both paths,
    // and every series of one `by: [job]` group on one task.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("aggr.yml");
    std::fs::write(
        &file,
        "- match: '{__name__=~\"http_.*\"}'\n  interval: 1m\n  outputs: [total]\n  by: [job]\n",
    )
    .unwrap();
    assert!(same_on_both_paths(&raw, &[aggregation_route(&file)], &[3]));
    let aggr = aggregation_route(&file);
    let mut tasks: std::collections::BTreeMap<(String, String), std::collections::BTreeSet<u32>> =
        Default::default();
    route_request(
        request,
        &[aggr],
        &[3],
        &mut [RouteStats::default()],
        |_, _, t, s| {
            let get = |n: &str| {
                s.labels
                    .iter()
                    .find(|l| l.name == n)
                    .map_or(String::new(), |l| l.value.clone())
            };
            if get("__name__").starts_with("http_") {
                tasks
                    .entry((get("__name__"), get("job")))
                    .or_default()
                    .insert(t);
            }
        },
    );
    assert!(tasks.len() > 10, "{tasks:?}");
    assert!(tasks.values().all(|t| t.len() == 1), "{tasks:?}");
    assert!(same_on_both_paths(&raw, &routes[..1], &[8]));
}

/// Every valid encoding takes the fast path and routes as prost's
/// decode does (explicit zeros, any field order, unknown fields);
/// what prost refuses and invalid requests are declined.
#[test]
fn fast_reader_reads_every_valid_form_and_declines_the_rest() {
    let limits = Limits::default();
    let ok = WriteRequest {
        timeseries: vec![series("a")],
        metadata: vec![],
    }
    .encode_to_vec();
    assert!(fast::parse(&ok, &limits).is_some());
    assert!(fast::parse(&[], &limits).is_some_and(|r| r.series.is_empty()));
    // series: labels {__name__="up"} then the given non-label bytes.
    let with_rest = |rest: &[u8]| {
        let mut ts = vec![0x0a, 14, 0x0a, 8];
        ts.extend_from_slice(b"__name__");
        ts.extend_from_slice(&[0x12, 2, b'u', b'p']);
        ts.extend_from_slice(rest);
        let mut raw = vec![0x0a, ts.len() as u8];
        raw.extend_from_slice(&ts);
        raw
    };
    for good in [
        &[0x12, 2, 0x10, 5][..],
        &[0x12, 2, 0x10, 0][..],          // explicit zero timestamp
        &[0x12, 3, 0x10, 0x85, 0x00][..], // non-minimal varint
        &[0x12, 0x82, 0x00, 0x10, 5][..], // non-minimal length
        &[0x1a, 0, 0x12, 2, 0x10, 5][..], // exemplar before sample
        &[0x12, 2, 0x10, 5, 0x0a, 0][..], // label after a sample (empty: invalid name)
        &[0x2a, 0][..],                   // unknown field
    ] {
        let raw = with_rest(good);
        let valid = WriteRequest::decode(raw.as_slice())
            .ok()
            .is_some_and(|r| validate_v1(&r, &limits).is_ok());
        assert_eq!(
            same_on_both_paths(&raw, &[route("[]", 4)], &[2]),
            valid,
            "{good:?}"
        );
    }
    for bad in [
        &[0x12, 9, 0x09][..], // truncated
        &[0x10, 5][..],       // samples as a varint
    ] {
        let raw = with_rest(bad);
        assert!(WriteRequest::decode(raw.as_slice()).is_err());
        assert!(fast::parse(&raw, &limits).is_none(), "{bad:?}");
    }
    // Metadata, invalid UTF-8, invalid requests.
    let mut meta = ok.clone();
    meta.extend_from_slice(&[0x1a, 0]);
    assert!(fast::parse(&meta, &limits).is_none());
    let utf8 = vec![0x0a, 5, 0x0a, 3, 0x0a, 1, 0xff];
    assert!(fast::parse(&utf8, &limits).is_none());
    assert!(WriteRequest::decode(utf8.as_slice()).is_err());
    let unsorted = WriteRequest {
        timeseries: vec![TimeSeries {
            labels: vec![Label::new("b", "1"), Label::new("a", "2")],
            ..series("a")
        }],
        metadata: vec![],
    };
    assert!(fast::parse(&unsorted.encode_to_vec(), &limits).is_none());
    let small = Limits {
        max_series_per_request: 0,
        ..Limits::default()
    };
    assert!(fast::parse(&ok, &small).is_none());
}

/// The fast reader applies the same name rules as `validate_v1`: UTF-8
/// names by default, legacy ones when configured, a non-empty
/// `__name__`, and histogram counts that add up.
#[test]
fn fast_reader_follows_name_validation_metric_name_and_histogram_rules() {
    use crate::remote_write::proto::v1::{histogram, Histogram};
    use crate::remote_write::NameValidation;
    let one = |labels: Vec<Label>, histograms: Vec<Histogram>| {
        WriteRequest {
            timeseries: vec![TimeSeries {
                labels,
                histograms,
                ..series("a")
            }],
            metadata: vec![],
        }
        .encode_to_vec()
    };
    let utf8 = one(
        vec![
            Label::new("__name__", "http.server.duration"),
            Label::new("service.name", "checkout"),
        ],
        vec![],
    );
    assert!(same_on_both_paths(&utf8, &[route("[]", 4)], &[2]));
    let legacy = Limits {
        name_validation: NameValidation::Legacy,
        ..Limits::default()
    };
    assert!(fast::parse(&utf8, &legacy).is_none());
    assert!(fast::parse(
        &one(vec![Label::new("job", "a")], vec![]),
        &Limits::default()
    )
    .is_none());
    assert!(fast::parse(
        &one(
            vec![Label::new("__name__", ""), Label::new("job", "a")],
            vec![]
        ),
        &Limits::default()
    )
    .is_none());
    let hist = |count| Histogram {
        count: Some(histogram::Count::CountInt(count)),
        positive_deltas: vec![1, 1],
        sum: 1.0,
        ..Default::default()
    };
    let up = || vec![Label::new("__name__", "up")];
    assert!(same_on_both_paths(
        &one(up(), vec![hist(3)]),
        &[route("[]", 4)],
        &[2]
    ));
    assert!(fast::parse(&one(up(), vec![hist(4)]), &Limits::default()).is_none());
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config { cases: 200, failure_persistence: None, ..Default::default() })]

    /// Random series (valid or not, labels sorted or not): the fast
    /// reader accepts exactly the valid ones (all canonical, as prost
    /// wrote them), and then routes them exactly like prost.
    #[test]
    fn fast_path_agrees_with_prost(
        labels in proptest::collection::vec(("[a-c_][a-c0-9]{0,2}|__name__|job|instance|container|service\\.name|é|", "[a-z:0-9]{0,6}|go_memstats_x|h:80"), 0..6),
        samples in proptest::collection::vec((proptest::prelude::any::<f64>(), proptest::prelude::any::<i64>()), 0..3),
        histogram in proptest::option::of((0u64..4, proptest::collection::vec(-1i64..3, 0..3))),
        rules in 0usize..3,
    ) {
        use crate::remote_write::proto::v1::{histogram as h, Histogram};
        let ts = TimeSeries {
            labels: labels.into_iter().map(|(n, v)| Label::new(n, v)).collect(),
            samples: samples.into_iter().map(|(value, timestamp)| Sample { value, timestamp }).collect(),
            histograms: histogram
                .map(|(count, positive_deltas)| Histogram { count: Some(h::Count::CountInt(count)), positive_deltas, sum: 1.0, ..Default::default() })
                .into_iter()
                .collect(),
            ..Default::default()
        };
        let request = WriteRequest { timeseries: vec![ts.clone(), series("a"), ts], metadata: vec![] };
        let raw = request.encode_to_vec();
        let valid = validate_v1(&request, &Limits::default()).is_ok();
        let rules = [BENCH_RULES, "[]", "- regex: '(.*)'\n  action: labeldrop\n"][rules];
        let routes = [route(rules, 16), route(BENCH_RULES, 3)];
        proptest::prop_assert_eq!(same_on_both_paths(&raw, &routes, &[4, 2]), valid);
    }
}

/// `partition_labels = ["job"]`: the partition is the jump hash of the
/// Prometheus hash of `job` alone (`job\xff<value>\xff`), whatever the
/// other labels, on both reader paths.
#[test]
fn partition_labels_hash_only_the_named_labels() {
    use xxhash_rust::xxh64::xxh64;
    let r = Route::compile(
        &RouteConfig {
            partition_labels: vec!["job".into()],
            ..RouteConfig::new("r", "t", 64)
        },
        NameValidation::default(),
    )
    .unwrap();
    for job in ["a", "b", "api", "node-exporter"] {
        let layout = [b"job".as_slice(), &[0xff], job.as_bytes(), &[0xff]].concat();
        let want = jump_hash(xxh64(&layout, 0), 4);
        let mut partitions = std::collections::BTreeSet::new();
        for i in 0..16 {
            let mut labels = vec![
                ("__name__".to_string(), "up".to_string()),
                ("i".to_string(), i.to_string()),
                ("job".to_string(), job.to_string()),
            ];
            partitions.insert(r.apply(&mut labels, 4).unwrap().1);
        }
        assert_eq!(partitions, [want].into(), "job={job}");
    }
}

/// A `stream_aggr_file` whose rules for `w` group by `job` and by
/// everything but `job` leaves no routing label: each such series is a
/// conflict, counted on both reader paths; other series are not.
#[test]
fn aggregation_conflicts_are_counted_on_both_paths() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("aggr.yml");
    std::fs::write(
        &file,
        "- match: 'w'\n  interval: 1m\n  without: [__name__, job]\n  outputs: [total]\n\
         - match: '{job=~\".+\", __name__=\"w\"}'\n  interval: 1m\n  by: [job]\n  outputs: [total]\n",
    )
    .unwrap();
    let route = aggregation_route(&file);
    assert!(route.aggregation().is_some(), "the file's rules are kept");
    let named = |name: &str, job: &str| TimeSeries {
        labels: vec![Label::new("__name__", name), Label::new("job", job)],
        samples: vec![Sample {
            value: 1.0,
            timestamp: 1,
        }],
        ..Default::default()
    };
    let request = WriteRequest {
        timeseries: vec![
            named("w", "a"),
            named("w", "b"),
            named("up", "a"),
            named("w", "c"),
        ],
        metadata: vec![],
    };
    let raw = request.encode_to_vec();
    let routes = [route];
    let mut slow = [RouteStats::default()];
    route_request(request, &routes, &[2], &mut slow, |_, _, _, _| {});
    let mut quick = [RouteStats::default()];
    let fast_req = fast::parse(&raw, &Limits::default()).unwrap();
    route_fast(
        &fast_req,
        &routes,
        &[2],
        &mut FastRouting::new(1 << 20),
        &mut quick,
        |_, _, _, _| {},
    );
    assert_eq!(slow[0].aggregation_conflicts, 3);
    assert_eq!(quick[0].aggregation_conflicts, 3);
}

/// Routes `raw` through `routes` on the fast path with `routing`,
/// returning what was emitted, encoded.
fn fast_emitted(
    raw: &[u8],
    routes: &[Route],
    partitions: &[u32],
    routing: &mut FastRouting,
) -> Vec<(usize, u32, u32, Vec<u8>)> {
    let request = fast::parse(raw, &Limits::default()).unwrap();
    let mut stats = vec![RouteStats::default(); routes.len()];
    let mut out = Vec::new();
    route_fast(
        &request,
        routes,
        partitions,
        routing,
        &mut stats,
        |r, p, t, entry| {
            let mut o = Output::default();
            entry.append_to(&mut o);
            out.push((r, p, t, o.encoded));
        },
    );
    out
}

/// A reload compiles the routes anew: a cache that served the old rules
/// must not answer for the new ones, even at the same index.
#[test]
fn the_relabel_cache_forgets_the_rules_of_a_reload() {
    let raw = WriteRequest {
        timeseries: vec![series("a"), series("b")],
        metadata: vec![],
    }
    .encode_to_vec();
    let mut routing = FastRouting::new(1 << 20);
    let dropping = [route(
        "- source_labels: [job]\n  regex: a\n  action: drop\n",
        4,
    )];
    assert_eq!(fast_emitted(&raw, &dropping, &[2], &mut routing).len(), 1);
    let keeping = [route("[]", 4)];
    assert_eq!(fast_emitted(&raw, &keeping, &[2], &mut routing).len(), 2);
    // And a change of partition count, without a reload, is followed.
    let mut uncached = FastRouting::new(0);
    for partitions in [1, 7, 64] {
        assert_eq!(
            fast_emitted(&raw, &keeping, &[partitions], &mut routing),
            fast_emitted(&raw, &keeping, &[partitions], &mut uncached)
        );
    }
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config { cases: 300, failure_persistence: None, ..Default::default() })]

    /// Requests of valid series from a small alphabet (many share names,
    /// values or prefixes of them), routed one after another through one cache:
    /// each comes out as it does without a cache, also when the cache is so
    /// small that it forgets everything now and then. Each series is
    /// written in one of three forms (`written`): as prost writes it (the
    /// cache's key is the request's own label bytes), with empty names and
    /// values written out (other bytes, the same labels), or with its last
    /// label after its sample (the key is encoded anew).
    #[test]
    fn a_shared_relabel_cache_routes_like_none(
        requests in proptest::collection::vec(
            proptest::collection::vec(
                (
                    "a|ab|go_memstats_x|up",
                    proptest::collection::btree_map("job|instance|a|ab|go_x", "|a|ab|b|go_memstats_x|h:80|h:8", 0..4),
                    0u8..3,
                ),
                1..6,
            ),
            1..6,
        ),
        budget in proptest::prop_oneof![proptest::strategy::Just(1usize << 20), 200usize..2_000],
    ) {
        let routes = [route(BENCH_RULES, 16), route("- regex: 'a.*'\n  action: labeldrop\n", 3)];
        let mut cached = FastRouting::new(budget);
        let mut uncached = FastRouting::new(0);
        for series in requests {
            let mut raw = Vec::new();
            for (name, mut labels, form) in series {
                // Every series valid: a metric name, sorted first.
                labels.insert("__name__".to_string(), name);
                let labels: Vec<(&str, &str)> = labels.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
                put_field(&mut raw, 1, &written(&labels, form));
            }
            if fast::parse(&raw, &Limits::default()).is_none() {
                continue;
            }
            proptest::prop_assert_eq!(
                fast_emitted(&raw, &routes, &[4, 2], &mut cached),
                fast_emitted(&raw, &routes, &[4, 2], &mut uncached)
            );
        }
    }
}

/// Appends field `field` of `body` (length-delimited) to `out`.
fn put_field(out: &mut Vec<u8>, field: u32, body: &[u8]) {
    prost::encoding::encode_key(field, prost::encoding::WireType::LengthDelimited, out);
    prost::encoding::encode_varint(body.len() as u64, out);
    out.extend_from_slice(body);
}

/// A `TimeSeries` of `labels` and one sample, written in `form`: 0 as
/// prost writes it, 1 with empty label names and values written out, 2
/// with the last label after the sample. All three decode alike.
fn written(labels: &[(&str, &str)], form: u8) -> Vec<u8> {
    let label = |&(name, value): &(&str, &str)| {
        let mut body = Vec::new();
        for (field, text) in [(1, name), (2, value)] {
            if !text.is_empty() || form == 1 {
                put_field(&mut body, field, text.as_bytes());
            }
        }
        body
    };
    let sample = Sample {
        value: 1.0,
        timestamp: 1,
    }
    .encode_to_vec();
    let (late, early) = match form {
        2 => labels
            .split_last()
            .map_or((None, labels), |(l, e)| (Some(l), e)),
        _ => (None, labels),
    };
    let mut series = Vec::new();
    for l in early {
        put_field(&mut series, 1, &label(l));
    }
    put_field(&mut series, 2, &sample);
    if let Some(l) = late {
        put_field(&mut series, 1, &label(l));
    }
    series
}

/// What the docs of `router.relabel_cache_bytes` say a series costs: about
/// 550 bytes for the generator's 12-15 labels (the benchmarks' series).
#[test]
fn a_cached_series_of_the_benchmark_takes_about_550_bytes() {
    let request = crate::produce::generate::payload(0, 2_000, 0, 1_700_000_000_000);
    let raw = request.encode_to_vec();
    let mut routing = FastRouting::new(64 << 20);
    fast_emitted(&raw, &[route(BENCH_RULES, 64)], &[8], &mut routing);
    let per_series = routing.cache_bytes() / 2_000;
    eprintln!("{per_series} bytes per cached series");
    assert!((400..800).contains(&per_series), "{per_series}");
}

/// Two series whose labels differ only in one written after the sample,
/// where the request's own label bytes cannot be the cache's key.
#[test]
fn a_label_after_the_samples_is_part_of_the_cache_key() {
    let routes = [route("[]", 16)];
    let mut raw = Vec::new();
    for job in ["a", "b"] {
        put_field(
            &mut raw,
            1,
            &written(&[("__name__", "up"), ("job", job)], 2),
        );
    }
    let mut cached = FastRouting::new(1 << 20);
    let emitted = fast_emitted(&raw, &routes, &[4], &mut cached);
    assert_eq!(
        emitted,
        fast_emitted(&raw, &routes, &[4], &mut FastRouting::new(0))
    );
    assert_ne!(emitted[0].3, emitted[1].3);
}
