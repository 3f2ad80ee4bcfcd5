//! One ingress record into the open transaction: decode, validate, route
//! each series into its batch. Pure: no Kafka, so a record the router
//! cannot route comes back as [`Unroutable`] for the worker to dead-letter.
//!
//! A 1.0 body is decompressed into a buffer reused on this thread, so that
//! the zero-copy reader can try it first (no String per label); what it
//! declines, and 2.0, takes the prost path, which reports any error as the
//! gateway does.
//!
//! Depends on `remote_write` (codecs, readers, validation), `route`,
//! `metadata`, `batches` and `txn`.

use super::batches::BatchKey;
use super::metadata::{append_metadata, Families};
use super::route::{append_series, entry_len, route_fast, route_request_named, Route};
use super::txn::Txn;
use crate::kafka::record::IngressMeta;
use crate::remote_write::{
    decode_request, decompress_reusing, fast, sniff, validate_v1, DecodeError, Limits, Protocol,
    Reader, WriteRequest,
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
    let max_decoded = routing.max_decoded;
    let raw = match meta.protocol {
        Protocol::V1 => Some(
            decompress_reusing(value, encoding, max_decoded)
                .map_err(|e| Unroutable::new(e.reason(), e))?,
        ),
        Protocol::V2 => None,
    };
    if let Some(request) = raw
        .as_deref()
        .and_then(|raw| fast::parse(raw, routing.limits))
    {
        Reader::Fast.count("router");
        route_fast_request(&request, meta.tenant.as_ref(), routing, txn);
        return Ok(());
    }
    Reader::Prost.count("router");
    let decoded = match raw.as_deref() {
        Some(raw) => {
            <WriteRequest as prost::Message>::decode(raw).map_err(DecodeError::BadProtobuf)
        }
        None => decode_request(value, encoding, meta.protocol, max_decoded).map(|d| d.request),
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
    request: &fast::FastRequest<'_>,
    tenant: Option<&String>,
    routing: &Routing<'_>,
    txn: &mut Txn,
) {
    let Txn {
        batches,
        stats,
        task_samples,
        ..
    } = txn;
    route_fast(
        request,
        routing.routes,
        routing.partitions,
        stats,
        |route, partition, task, entry| {
            batches.add(key(route, partition, tenant), entry.entry_len(), |b| {
                entry.append_to(b)
            });
            *task_samples.entry((route, task)).or_default() +=
                (entry.samples + entry.histograms) as u64;
        },
    );
}

fn route_slow_request(
    mut request: WriteRequest,
    tenant: Option<&String>,
    routing: &Routing<'_>,
    txn: &mut Txn,
) {
    // Only the prost path sees metadata: the fast reader declines it.
    let mut families = (!request.metadata.is_empty()).then(|| {
        let metadata = std::mem::take(&mut request.metadata);
        Families::new(metadata, &request.timeseries, routing.routes.len())
    });
    let Txn {
        batches,
        stats,
        task_samples,
        ..
    } = txn;
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
            batches.add(key(route, partition, tenant), entry_len(series), |b| {
                append_series(b, series)
            });
            *task_samples.entry((route, task)).or_default() +=
                (series.samples.len() + series.histograms.len()) as u64;
        },
    );
    let metadata = families.map(|f| f.finish(routing.routes, routing.partitions));
    for (route, partition, md) in metadata.into_iter().flatten() {
        stats[route].metadata_out += 1;
        // Many families (Prometheus sends them all at once) fill a batch
        // too; a metadata entry's successor is at least one byte.
        batches.add(key(route, partition, tenant), 1, |b| {
            append_metadata(b, &md)
        });
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
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
}
