//! Tests of the module-level API: protocol detection, `decode_request`,
//! `render_labels` and error reasons.

use super::proto::v2;
use super::*;
use prost::Message;

fn v1_request() -> WriteRequest {
    WriteRequest {
        timeseries: vec![TimeSeries {
            labels: vec![Label::new("__name__", "up"), Label::new("job", "node")],
            samples: vec![proto::v1::Sample {
                value: 1.0,
                timestamp: 1_700_000_000_000,
            }],
            ..Default::default()
        }],
        metadata: vec![],
    }
}

fn v2_request(labels_refs: Vec<u32>) -> v2::Request {
    v2::Request {
        symbols: ["", "__name__", "up", "job", "node"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        timeseries: vec![v2::TimeSeries {
            labels_refs,
            samples: vec![v2::Sample {
                value: 1.0,
                timestamp: 1_700_000_000_000,
                start_timestamp: 0,
            }],
            ..Default::default()
        }],
    }
}

#[test]
fn protocol_from_content_type() {
    let ok = [
        (None, Protocol::V1),
        (Some(""), Protocol::V1),
        (Some("application/x-protobuf"), Protocol::V1),
        (Some("Application/X-Protobuf"), Protocol::V1),
        (
            Some("application/x-protobuf;proto=prometheus.WriteRequest"),
            Protocol::V1,
        ),
        (
            Some("application/x-protobuf; proto=io.prometheus.write.v2.Request"),
            Protocol::V2,
        ),
        (
            Some("application/x-protobuf;charset=utf-8;PROTO=\"io.prometheus.write.v2.Request\""),
            Protocol::V2,
        ),
    ];
    for (header, want) in ok {
        assert_eq!(
            Protocol::from_content_type(header).unwrap(),
            want,
            "{header:?}"
        );
    }
    for p in [Protocol::V1, Protocol::V2] {
        assert_eq!(
            Protocol::from_content_type(Some(p.content_type())).unwrap(),
            p
        );
    }
    for bad in [
        "application/json",
        "text/plain",
        "application/x-protobuf;proto=io.prometheus.write.v3.Request",
        "application/x-protobuf;proto=",
    ] {
        let err = Protocol::from_content_type(Some(bad)).unwrap_err();
        assert_eq!(err.reason(), "unsupported_content_type", "{bad}");
        assert!(err.to_string().contains(bad), "{err}");
    }
}

#[test]
fn decode_v1_each_encoding() {
    let req = v1_request();
    let raw = req.encode_to_vec();
    for enc in [Encoding::Snappy, Encoding::Zstd, Encoding::Identity] {
        let body = compress(&raw, enc).unwrap();
        let d = decode_request(&body, enc, Protocol::V1, 1 << 20).unwrap();
        assert_eq!(d.request, req, "{enc}");
        assert_eq!(d.raw, raw, "{enc}");
        assert_eq!(d.protocol, Protocol::V1);
    }
}

#[test]
fn decode_v2_converts_and_validates() {
    let raw = v2_request(vec![1, 2, 3, 4]).encode_to_vec();
    let body = compress(&raw, Encoding::Snappy).unwrap();
    let d = decode_request(&body, Encoding::Snappy, Protocol::V2, 1 << 20).unwrap();
    assert_eq!(d.request, v1_request());
    assert_eq!(d.raw, raw);
    assert_eq!(d.protocol, Protocol::V2);
    let stats = validate_v1(&d.request, &Limits::default()).unwrap();
    assert_eq!((stats.series, stats.samples), (1, 1));

    // Unsorted 2.0 labels are caught by the shared validation.
    let raw = v2_request(vec![3, 4, 1, 2]).encode_to_vec();
    let d = decode_request(&raw, Encoding::Identity, Protocol::V2, 1 << 20).unwrap();
    let err = validate_v1(&d.request, &Limits::default()).unwrap_err();
    assert_eq!(err.reason(), "unsorted_labels");

    // Bad references surface from decode_request as errors.
    let raw = v2_request(vec![1, 7]).encode_to_vec();
    let err = decode_request(&raw, Encoding::Identity, Protocol::V2, 1 << 20).unwrap_err();
    assert_eq!(err.reason(), "bad_symbol_ref");
}

#[test]
fn decode_errors() {
    // 0xff is not a valid protobuf key/wire type combination here.
    let err =
        decode_request(&[0xff, 0xff, 0xff], Encoding::Identity, Protocol::V1, 100).unwrap_err();
    assert_eq!(err.reason(), "bad_protobuf");
    let raw = v1_request().encode_to_vec();
    let err = decode_request(&raw, Encoding::Identity, Protocol::V1, raw.len() - 1).unwrap_err();
    assert_eq!(err.reason(), "body_too_large");
    let err = decode_request(&raw, Encoding::Snappy, Protocol::V1, 1 << 20).unwrap_err();
    assert_eq!(err.reason(), "bad_snappy");
}

#[test]
fn render_labels_format_escaping_and_truncation() {
    assert_eq!(render_labels(&[]), "{}");
    let labels = vec![
        Label::new("__name__", "x"),
        Label::new("job", "y"),
        Label::new("q", "a\"b\\c\nd"),
    ];
    assert_eq!(
        render_labels(&labels),
        r#"{__name__="x", job="y", q="a\"b\\c\nd"}"#
    );

    let many: Vec<Label> = (0..1000)
        .map(|i| Label::new(format!("l{i}"), "é".repeat(50)))
        .collect();
    let s = render_labels(&many);
    assert!(s.len() <= 210, "{} bytes", s.len());
    assert!(s.starts_with("{l0=\"éé"), "{s}");
    assert!(s.ends_with("..."), "{s}");
}

#[test]
fn reasons_are_short_snake_case() {
    let decode = [
        DecodeError::UnknownEncoding("x".into()),
        DecodeError::UnsupportedContentType("x".into()),
        DecodeError::BodyTooLarge { size: 2, max: 1 },
        DecodeError::DecodedTooLarge { size: 2, max: 1 },
        DecodeError::BadSnappy(snap::Error::Empty),
        DecodeError::BadZstd(std::io::Error::other("x")),
        DecodeError::BadProtobuf(prost::DecodeError::new("x")),
        DecodeError::BadSymbolTable,
        DecodeError::BadSymbolRef {
            series: 0,
            reference: 1,
            symbols: 0,
        },
        DecodeError::OddLabelRefs { series: 0, len: 1 },
        DecodeError::DecodeMemory { max: 1 },
    ];
    let validation = [
        ValidationError::TooManySeries { count: 2, max: 1 },
        ValidationError::NoLabels { series: 0 },
        ValidationError::TooManyLabels {
            series: 0,
            labels: String::new(),
            count: 2,
            max: 1,
        },
        ValidationError::LabelNameTooLong {
            series: 0,
            labels: String::new(),
            name: String::new(),
            len: 2,
            max: 1,
        },
        ValidationError::InvalidLabelName {
            series: 0,
            labels: String::new(),
            name: String::new(),
        },
        ValidationError::LabelValueTooLong {
            series: 0,
            labels: String::new(),
            name: String::new(),
            len: 2,
            max: 1,
        },
        ValidationError::DuplicateLabel {
            series: 0,
            labels: String::new(),
            name: String::new(),
        },
        ValidationError::UnsortedLabels {
            series: 0,
            labels: String::new(),
            name: String::new(),
            previous: String::new(),
        },
    ];
    let mut reasons: Vec<&str> = decode.iter().map(DecodeError::reason).collect();
    reasons.extend(validation.iter().map(ValidationError::reason));
    let n = reasons.len();
    for r in &reasons {
        assert!(
            r.len() <= 32 && r.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
            "{r}"
        );
    }
    reasons.sort_unstable();
    reasons.dedup();
    assert_eq!(reasons.len(), n, "reasons must be distinct");
}

#[test]
fn reader_counts_requests_per_role_and_reader() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        Reader::Fast.count("router");
        Reader::Fast.count("router");
        Reader::Prost.count("gateway");
    });
    let text = handle.render();
    for line in [
        r#"streamroute_remote_write_requests_read_total{role="router",reader="fast"} 2"#,
        r#"streamroute_remote_write_requests_read_total{role="gateway",reader="prost"} 1"#,
    ] {
        assert!(text.lines().any(|l| l == line), "{line} not in {text}");
    }
}

/// Label names sort by their bytes (Go compares strings bytewise).
#[test]
fn cmp_names_orders_like_bytes() {
    let names = [
        "", "a", "ab", "b", "B", "_", "__name__", "é", "éa", "e", "a\u{0}", "zz",
    ];
    for a in names {
        for b in names {
            assert_eq!(
                cmp_names(a, b),
                a.as_bytes().cmp(b.as_bytes()),
                "{a:?} {b:?}"
            );
        }
    }
}

/// `check_bounded` reads small 1.0 bodies without walking them first
/// (`fast::MAX_HEAP_PER_DECODED_BYTE`); what it reports is still what
/// `decode_bounded` reports, whether or not the body was walked first.
#[test]
fn check_bounded_reports_what_decode_bounded_reports() {
    let limits = Limits {
        max_series_per_request: 1_000,
        ..Limits::default()
    };
    let empty_series = [0x0a, 0x00].repeat(2_000);
    let valid = v1_request().encode_to_vec();
    let cases = [
        // Not walked first (4,000 bytes × 128 is below the budget).
        (&empty_series, 1 << 30),
        (&valid, 1 << 30),
        // Walked first, and over the budget.
        (&empty_series, 8 << 10),
        (&valid, 100),
    ];
    for (body, max_heap) in cases {
        let checked = check_bounded(
            body,
            Encoding::Identity,
            Protocol::V1,
            1 << 20,
            &limits,
            max_heap,
        );
        let decoded = decode_bounded(
            body,
            Encoding::Identity,
            Protocol::V1,
            1 << 20,
            &limits,
            max_heap,
        );
        match (checked, decoded) {
            (Ok(checked), Ok((_, stats))) => assert_eq!(checked.stats, stats),
            (Err(c), Err(d)) => assert_eq!(c.to_string(), d.to_string(), "budget {max_heap}"),
            (c, d) => panic!("budget {max_heap}: {c:?} against {:?}", d.map(|(_, s)| s)),
        }
    }
}
