//! One ingress record into the open transaction: decode, validate, route
//! each series into its batch. Pure: no Kafka, so a record the router
//! cannot route comes back as [`Unroutable`] for the worker to dead-letter.
//!
//! A body is decompressed into a buffer reused on this thread, so that the
//! zero-copy reader (1.0 or 2.0) can try it first (no String per label);
//! what it declines takes the prost path, which reports any error as the
//! gateway does.
//!
//! Depends on `remote_write` (codecs, readers, validation), `route`,
//! `metadata`, `batches` and `txn`.

use std::cell::RefCell;

use super::batches::BatchKey;
use super::config::RecordFormat;
use super::metadata::{append_metadata, Families};
use super::route::{
    append_series, entry_len, put_series_with_id, route_fast, route_request_named, FastRouting,
    Route,
};
use super::txn::Txn;
use crate::kafka::record::IngressMeta;
use prost::Message;

use crate::remote_write::proto::v1::{Label, TimeSeries};
use crate::remote_write::proto::v2;
use crate::remote_write::{
    decompress_reusing, fast, sniff, validate_v1, DecodeError, Limits, Protocol, Reader,
    WriteRequest,
};

/// Why a record cannot be routed: it goes to the dead-letter topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unroutable {
    /// Short snake_case reason, the metric label.
    pub reason: &'static str,
    pub detail: String,
}

impl Unroutable {
    pub fn new(reason: &'static str, detail: impl ToString) -> Unroutable {
        Unroutable {
            reason,
            detail: detail.to_string(),
        }
    }
}

/// What routing needs besides the record.
pub struct Routing<'a> {
    pub routes: &'a [Route],
    /// Route i's output partition count.
    pub partitions: &'a [u32],
    /// The limits ingress records are validated with.
    pub limits: &'a Limits,
    /// `router.max_decoded_bytes`.
    pub max_decoded: usize,
    /// The wall clock (Unix ms) when the record is routed: when the series
    /// ids of `series_ids` routes are defined and refreshed.
    pub now_ms: i64,
    /// The worker's relabel caches and buffers of the fast path.
    pub fast: &'a RefCell<FastRouting>,
}

/// Routes the record `value` with its header `meta` into `txn`'s batches.
pub fn route_record(
    value: Option<&[u8]>,
    meta: &IngressMeta,
    routing: &Routing<'_>,
    txn: &mut Txn,
) -> Result<(), Unroutable> {
    let Some(value) = value.filter(|v| !v.is_empty()) else {
        return Err(Unroutable::new("empty", "the record has no value"));
    };
    let encoding = meta.encoding.unwrap_or_else(|| sniff(value));
    let raw = decompress_reusing(value, encoding, routing.max_decoded)
        .map_err(|e| Unroutable::new(e.reason(), e))?;
    let fast = match meta.protocol {
        Protocol::V1 => fast::parse(&raw, routing.limits),
        Protocol::V2 => fast::parse_v2(&raw, routing.limits),
    };
    if let Some(request) = fast {
        Reader::Fast.count("router");
        route_fast_request(request, meta.tenant.as_ref(), routing, txn);
        return Ok(());
    }
    Reader::Prost.count("router");
    let decoded = match meta.protocol {
        Protocol::V1 => WriteRequest::decode(&*raw).map_err(DecodeError::BadProtobuf),
        Protocol::V2 => v2::Request::decode(&*raw)
            .map_err(DecodeError::BadProtobuf)
            .and_then(v2::Request::into_v1),
    };
    let request = decoded.map_err(|e| Unroutable::new(e.reason(), e))?;
    validate_v1(&request, routing.limits).map_err(|e| Unroutable::new(e.reason(), e))?;
    route_slow_request(request, meta.tenant.as_ref(), routing, txn);
    Ok(())
}

fn key(route: usize, partition: u32, tenant: Option<&String>) -> BatchKey {
    BatchKey {
        route,
        partition,
        tenant: tenant.cloned(),
    }
}

fn route_fast_request(
    mut request: fast::FastRequest<'_>,
    tenant: Option<&String>,
    routing: &Routing<'_>,
    txn: &mut Txn,
) {
    // Metadata (2.0 only, see `fast::parse_v2`) goes where
    // `route_slow_request` sends it: `Families` is told the name of every
    // series through `probe`, a one-label series reused for each.
    let mut families = (!request.metadata.is_empty()).then(|| {
        let names: std::collections::BTreeSet<&str> = request
            .series
            .iter()
            .map(|s| fast_name(request.labels.get(s.labels.clone()).unwrap_or_default()))
            .collect();
        let named: Vec<TimeSeries> = names.into_iter().map(name_probe).collect();
        let metadata = std::mem::take(&mut request.metadata);
        Families::new(metadata, &named, routing.routes.len())
    });
    let mut probe = name_probe("");
    let Txn {
        batches,
        series,
        stats,
        task_samples,
        ..
    } = &mut *txn;
    route_fast(
        &request,
        routing.routes,
        routing.partitions,
        &mut routing.fast.borrow_mut(),
        stats,
        |route, partition, task, entry| {
            if let Some(families) = families.as_mut() {
                probe.labels[0].value.clear();
                probe.labels[0].value.push_str(entry.relabeled_name);
                families.saw(route, partition, entry.name, &probe);
            }
            let key = key(route, partition, tenant);
            match routing.routes[route].record_format {
                RecordFormat::WriteRequest => {
                    batches.add(key, entry.entry_len(), |b| entry.append_to(b))
                }
                RecordFormat::SeriesIds => batches.add(key.clone(), entry.entry_len(), |b| {
                    entry.put_with_id(series, &key, routing.now_ms, b)
                }),
            }
            *task_samples.entry((route, task)).or_default() +=
                (entry.samples + entry.histograms) as u64;
        },
    );
    write_metadata(families, tenant, routing, txn);
}

/// The first `__name__` of borrowed labels, "" when there is none.
fn fast_name<'a>(labels: &[(&'a str, &'a str)]) -> &'a str {
    labels
        .iter()
        .find(|(n, _)| *n == "__name__")
        .map_or("", |(_, v)| v)
}

/// A series with only a `__name__` label: what `Families` reads a name from.
fn name_probe(name: &str) -> TimeSeries {
    TimeSeries {
        labels: vec![Label::new("__name__", name)],
        ..TimeSeries::default()
    }
}

/// Writes the metadata entries of `families` (see `super::metadata`) into
/// `txn`'s batches, after the payload's series.
fn write_metadata(
    families: Option<Families>,
    tenant: Option<&String>,
    routing: &Routing<'_>,
    txn: &mut Txn,
) {
    let metadata = families.map(|f| f.finish(routing.routes, routing.partitions));
    for (route, partition, md) in metadata.into_iter().flatten() {
        txn.stats[route].metadata_out += 1;
        // Many families (Prometheus sends them all at once) fill a batch
        // too; a metadata entry's successor is at least one byte.
        txn.batches.add(key(route, partition, tenant), 1, |b| {
            append_metadata(b, &md)
        });
    }
}

fn route_slow_request(
    mut request: WriteRequest,
    tenant: Option<&String>,
    routing: &Routing<'_>,
    txn: &mut Txn,
) {
    // 1.0 metadata comes this way: `fast::parse` declines it.
    let mut families = (!request.metadata.is_empty()).then(|| {
        let metadata = std::mem::take(&mut request.metadata);
        Families::new(metadata, &request.timeseries, routing.routes.len())
    });
    let Txn {
        batches,
        series: ids,
        stats,
        task_samples,
        ..
    } = &mut *txn;
    route_request_named(
        request,
        routing.routes,
        routing.partitions,
        stats,
        families.is_some(),
        |route, partition, task, series, original| {
            if let Some(families) = families.as_mut() {
                families.saw(route, partition, original, series);
            }
            let key = key(route, partition, tenant);
            match routing.routes[route].record_format {
                RecordFormat::WriteRequest => {
                    batches.add(key, entry_len(series), |b| append_series(b, series))
                }
                RecordFormat::SeriesIds => batches.add(key.clone(), entry_len(series), |b| {
                    put_series_with_id(b, series, ids, &key, routing.now_ms)
                }),
            }
            *task_samples.entry((route, task)).or_default() +=
                (series.samples.len() + series.histograms.len()) as u64;
        },
    );
    write_metadata(families, tenant, routing, txn);
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::kafka::record::series::SeriesWriter;
    use crate::remote_write::proto::v1::{Label, MetricMetadata, Sample, TimeSeries};
    use crate::remote_write::{compress, Encoding, NameValidation};
    use crate::router::batches::BatchLimits;
    use crate::router::config::RouteConfig;

    fn route(name: &str, task_count: u32, relabel: &str) -> Route {
        let config: RouteConfig = toml::from_str(&format!(
            "name = \"{name}\"\ntopic = \"t-{name}\"\ntask_count = {task_count}\n{relabel}"
        ))
        .unwrap();
        Route::compile(&config, NameValidation::default()).unwrap()
    }

    fn series(name: &str, i: usize, samples: usize) -> TimeSeries {
        TimeSeries {
            labels: vec![
                Label::new("__name__", name),
                Label::new("instance", format!("host-{i}")),
            ],
            samples: (0..samples)
                .map(|t| Sample {
                    value: t as f64,
                    timestamp: 1_000 + t as i64,
                })
                .collect(),
            ..Default::default()
        }
    }

    fn snappy(request: &WriteRequest) -> Vec<u8> {
        compress(&request.encode_to_vec(), Encoding::Snappy).unwrap()
    }

    fn meta(tenant: Option<&str>) -> IngressMeta {
        IngressMeta {
            encoding: Some(Encoding::Snappy),
            protocol: Protocol::V1,
            tenant: tenant.map(str::to_string),
            received_at_ms: None,
        }
    }

    fn txn(routes: usize, max_samples: usize) -> Txn {
        Txn::new(
            routes,
            BatchLimits {
                max_samples,
                max_bytes: 1 << 20,
            },
            SeriesWriter::with_id(7, std::time::Duration::from_secs(60)),
        )
    }

    /// (route, partition, tenant, series, samples) of every batch, sorted.
    fn batches(txn: &mut Txn) -> Vec<(usize, u32, Option<String>, usize, usize)> {
        let mut out: Vec<_> = txn
            .batches
            .take_all()
            .into_iter()
            .map(|(k, b)| (k.route, k.partition, k.tenant, b.series, b.samples))
            .collect();
        out.sort();
        out
    }

    fn request(n: usize) -> WriteRequest {
        WriteRequest {
            timeseries: (0..n).map(|i| series("up", i, 2)).collect(),
            metadata: vec![],
        }
    }

    #[test]
    fn every_kept_series_lands_in_one_batch_per_route_with_its_tenant() {
        let routes = [
            route("all", 8, ""),
            route(
                "some",
                4,
                "[[relabel_configs]]\nsource_labels = [\"instance\"]\nregex = \"host-[0-4]\"\naction = \"keep\"",
            ),
        ];
        let limits = Limits::default();
        let routing = Routing {
            routes: &routes,
            partitions: &[2, 1],
            limits: &limits,
            max_decoded: 1 << 20,
            now_ms: 0,
            fast: &RefCell::new(FastRouting::new(1 << 20)),
        };
        let mut t = txn(2, 10_000);
        let body = snappy(&request(20));
        route_record(Some(&body), &meta(Some("a")), &routing, &mut t).unwrap();
        let found = batches(&mut t);
        let per_route = |r: usize| {
            found
                .iter()
                .filter(|b| b.0 == r)
                .fold((0, 0), |(s, n), b| (s + b.3, n + b.4))
        };
        assert_eq!(per_route(0), (20, 40), "{found:?}");
        assert_eq!(per_route(1), (5, 10), "{found:?}");
        assert!(found.iter().all(|b| b.2.as_deref() == Some("a")));
        assert!(found.iter().all(|b| b.1 < [2, 1][b.0]), "{found:?}");
        assert_eq!(t.stats[1].series_in, 20);
        assert_eq!(t.stats[1].series_dropped, 15);
        let tasks: u64 = t.task_samples.values().sum();
        assert_eq!(tasks, 50);
    }

    #[test]
    fn the_fast_and_the_prost_path_fill_the_same_batches() {
        let routes = [route("r", 16, "")];
        let limits = Limits::default();
        let routing = Routing {
            routes: &routes,
            partitions: &[4],
            limits: &limits,
            max_decoded: 1 << 20,
            now_ms: 0,
            fast: &RefCell::new(FastRouting::new(1 << 20)),
        };
        let plain = request(30);
        // Metadata sends the record down the prost path.
        let mut with_metadata = plain.clone();
        with_metadata.metadata.push(MetricMetadata {
            r#type: 1,
            metric_family_name: "up".into(),
            help: "h".into(),
            unit: String::new(),
        });
        let (mut fast, mut slow) = (txn(1, 10_000), txn(1, 10_000));
        route_record(Some(&snappy(&plain)), &meta(None), &routing, &mut fast).unwrap();
        route_record(
            Some(&snappy(&with_metadata)),
            &meta(None),
            &routing,
            &mut slow,
        )
        .unwrap();
        let (fast, slow) = (batches(&mut fast), batches(&mut slow));
        assert_eq!(fast, slow);
        assert!(fast.len() > 1, "30 series over 16 tasks spread: {fast:?}");
    }

    #[test]
    fn batches_that_fill_up_are_taken_and_the_rest_stay_open() {
        let routes = [route("r", 1, "")];
        let limits = Limits::default();
        let routing = Routing {
            routes: &routes,
            partitions: &[1],
            limits: &limits,
            max_decoded: 1 << 20,
            now_ms: 0,
            fast: &RefCell::new(FastRouting::new(1 << 20)),
        };
        let mut t = txn(1, 5);
        // 2 samples per series: the third series reaches 6 >= 5.
        route_record(Some(&snappy(&request(3))), &meta(None), &routing, &mut t).unwrap();
        let full = t.batches.take_full();
        assert_eq!(full.len(), 1);
        assert_eq!(full[0].1.samples, 6);
        route_record(Some(&snappy(&request(2))), &meta(None), &routing, &mut t).unwrap();
        assert!(t.batches.take_full().is_empty());
        assert_eq!(batches(&mut t), [(0, 0, None, 2, 4)]);
    }

    #[test]
    fn records_that_cannot_be_routed_say_why() {
        let routes = [route("r", 1, "")];
        let limits = Limits {
            max_labels_per_series: 1,
            ..Limits::default()
        };
        let routing = Routing {
            routes: &routes,
            partitions: &[1],
            limits: &limits,
            max_decoded: 1 << 20,
            now_ms: 0,
            fast: &RefCell::new(FastRouting::new(1 << 20)),
        };
        let mut t = txn(1, 100);
        let reason = |value: Option<&[u8]>, t: &mut Txn| {
            route_record(value, &meta(None), &routing, t)
                .unwrap_err()
                .reason
        };
        assert_eq!(reason(None, &mut t), "empty");
        assert_eq!(reason(Some(b""), &mut t), "empty");
        assert_eq!(reason(Some(b"\xff\xff\xff\xff"), &mut t), "bad_snappy");
        let two_labels = snappy(&request(1));
        let err = route_record(Some(&two_labels), &meta(None), &routing, &mut t).unwrap_err();
        assert_eq!(err.reason, "too_many_labels", "{err:?}");
        assert!(batches(&mut t).is_empty());
    }

    #[test]
    fn a_series_ids_route_writes_what_resolves_to_the_plain_routes_bytes() {
        use crate::kafka::record::series::{SeriesBook, SeriesRecord};
        let ids = |name: &str| {
            let config: RouteConfig = toml::from_str(&format!(
                "name = \"{name}\"\ntopic = \"t\"\ntask_count = 8\nrecord_format = \"series_ids\""
            ))
            .unwrap();
            Route::compile(&config, NameValidation::default()).unwrap()
        };
        let routes = [route("plain", 8, ""), ids("ids")];
        let limits = Limits::default();
        let mut routing = Routing {
            routes: &routes,
            partitions: &[3, 3],
            limits: &limits,
            max_decoded: 1 << 20,
            now_ms: 1_000,
            fast: &RefCell::new(FastRouting::new(1 << 20)),
        };
        let plain = request(40);
        let mut with_metadata = plain.clone();
        with_metadata.metadata.push(MetricMetadata {
            r#type: 1,
            metric_family_name: "up".into(),
            help: "h".into(),
            unit: String::new(),
        });
        let mut book = SeriesBook::default();
        let mut t = txn(2, 10_000);
        // The fast path, the prost path (metadata), then the fast path again
        // a second later: references only.
        for (body, now_ms) in [(&plain, 1_000), (&with_metadata, 1_500), (&plain, 2_000)] {
            routing.now_ms = now_ms;
            route_record(Some(&snappy(body)), &meta(None), &routing, &mut t).unwrap();
            let batches = batch_bytes(&mut t);
            let of = |route: usize| batches.iter().filter(move |b| b.0 == route);
            for (plain, ids) in of(0).zip(of(1)) {
                assert_eq!(plain.1, ids.1, "the same partition");
                let record = SeriesRecord {
                    writer: t.series.origin().writer,
                    refresh_ms: 60_000,
                    timestamp_ms: now_ms,
                    value: &ids.3,
                };
                let mut resolved = Vec::new();
                book.resolve(&record, &mut resolved).unwrap();
                assert_eq!(resolved, plain.3, "partition {}", plain.1);
                if now_ms == 2_000 {
                    assert!(ids.3.len() * 3 < plain.3.len(), "references are short");
                }
            }
            assert_eq!(of(0).count(), of(1).count());
        }
    }

    /// (route, partition, tenant, encoded bytes) of every batch, sorted.
    fn batch_bytes(txn: &mut Txn) -> Vec<(usize, u32, Option<String>, Vec<u8>)> {
        let mut out: Vec<_> = txn
            .batches
            .take_all()
            .into_iter()
            .map(|(k, b)| (k.route, k.partition, k.tenant, b.encoded))
            .collect();
        out.sort();
        out
    }

    #[test]
    fn a_v2_request_with_metadata_routes_the_same_on_the_fast_and_the_slow_path() {
        use crate::remote_write::proto::v2;
        let routes = [
            route("all", 8, ""),
            route(
                "renamed",
                4,
                "[[relabel_configs]]\nsource_labels = [\"__name__\"]\nregex = \"rpc_(.*)\"\ntarget_label = \"__name__\"\nreplacement = \"svc_$1\"",
            ),
        ];
        let limits = Limits::default();
        let routing = Routing {
            routes: &routes,
            partitions: &[3, 2],
            limits: &limits,
            max_decoded: 1 << 20,
            now_ms: 0,
            fast: &RefCell::new(FastRouting::new(1 << 20)),
        };
        // Prometheus 3 style: metadata on every series; a histogram family
        // (suffixed series), a counter, and a gauge.
        let symbols: Vec<String> = [
            "",
            "__name__",
            "rpc_seconds_bucket",
            "rpc_seconds_count",
            "up_total",
            "temp",
            "instance",
            "a",
            "b",
            "c",
            "Latency.",
            "seconds",
            "Ups.",
            "le",
            "1",
        ]
        .map(String::from)
        .to_vec();
        let md = |r#type, help_ref, unit_ref| {
            Some(v2::Metadata {
                r#type,
                help_ref,
                unit_ref,
            })
        };
        let series = |name: u32, instance: u32, metadata| v2::TimeSeries {
            labels_refs: vec![1, name, 6, instance],
            samples: vec![v2::Sample {
                value: 1.5,
                timestamp: 1000,
                start_timestamp: 500,
            }],
            metadata,
            ..Default::default()
        };
        let request = v2::Request {
            symbols,
            timeseries: vec![
                series(2, 7, md(3, 10, 11)),
                series(2, 8, md(3, 10, 11)),
                series(3, 9, md(3, 10, 11)),
                series(4, 7, md(1, 12, 0)),
                series(5, 8, md(2, 0, 0)),
                series(5, 9, None),
            ],
        };
        let raw = request.encode_to_vec();
        let body = compress(&raw, Encoding::Snappy).unwrap();
        let meta = IngressMeta {
            protocol: Protocol::V2,
            ..meta(Some("t"))
        };
        let fast_read = fast::parse_v2(&raw, &limits).unwrap();
        // into_v1 keys metadata by the series name: four names, four entries.
        assert_eq!(fast_read.metadata.len(), 4, "{:?}", fast_read.metadata);
        drop(fast_read);

        let (mut fast, mut slow) = (txn(2, 10_000), txn(2, 10_000));
        route_record(Some(&body), &meta, &routing, &mut fast).unwrap();
        let converted = request.into_v1().unwrap();
        validate_v1(&converted, &limits).unwrap();
        route_slow_request(converted, Some(&"t".to_string()), &routing, &mut slow);

        let metadata_out = |t: &Txn| t.stats.iter().map(|s| s.metadata_out).collect::<Vec<_>>();
        assert_eq!(metadata_out(&fast), metadata_out(&slow));
        assert!(
            metadata_out(&fast).iter().all(|&n| n > 0),
            "{:?}",
            metadata_out(&fast)
        );
        let (fast, slow) = (batch_bytes(&mut fast), batch_bytes(&mut slow));
        assert_eq!(fast, slow);
        // The renamed family's metadata is there under its new name.
        let renamed: Vec<u8> = fast
            .iter()
            .filter(|b| b.0 == 1)
            .flat_map(|b| b.3.clone())
            .collect();
        let decoded = WriteRequest::decode(renamed.as_slice()).unwrap();
        assert!(
            decoded
                .metadata
                .iter()
                .any(|m| m.metric_family_name == "svc_seconds_bucket"),
            "{:?}",
            decoded.metadata
        );
    }
}
