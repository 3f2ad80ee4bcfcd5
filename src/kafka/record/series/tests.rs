use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::Config;
use prost::Message;

use super::*;
use crate::remote_write::proto::v1::{Label, MetricMetadata, Sample, TimeSeries, WriteRequest};

const REFRESH: Duration = Duration::from_secs(60);

fn series(name: &str, instance: usize, value: f64, ts: i64) -> TimeSeries {
    TimeSeries {
        labels: vec![
            Label::new("__name__", name),
            Label::new("instance", format!("host-{instance}")),
            Label::new("job", "node"),
        ],
        samples: vec![Sample {
            value,
            timestamp: ts,
        }],
        ..TimeSeries::default()
    }
}

/// The series' fields other than labels, as prost encodes them.
fn rest(series: &TimeSeries) -> Vec<u8> {
    let without = TimeSeries {
        labels: Vec::new(),
        ..series.clone()
    };
    without.encode_to_vec()
}

fn pairs(series: &TimeSeries) -> impl Iterator<Item = (&str, &str)> + Clone {
    series.labels.iter().map(|l| (&*l.name, &*l.value))
}

/// One record of `series` for key 0, written at `now_ms`.
fn record(writer: &mut SeriesWriter<u32>, series: &[TimeSeries], now_ms: i64) -> Vec<u8> {
    let mut out = Vec::new();
    for s in series {
        writer.put(&0, pairs(s), &rest(s), now_ms, &mut out);
    }
    out
}

fn read<'a>(writer: u64, timestamp_ms: i64, value: &'a [u8]) -> SeriesRecord<'a> {
    SeriesRecord {
        writer,
        refresh_ms: REFRESH.as_millis() as i64,
        timestamp_ms,
        value,
    }
}

fn resolved(book: &mut SeriesBook, record: &SeriesRecord<'_>) -> WriteRequest {
    let mut out = Vec::new();
    book.resolve(record, &mut out).unwrap();
    WriteRequest::decode(&out[..]).unwrap()
}

#[test]
fn a_series_is_defined_once_per_refresh_and_referenced_in_between() {
    let mut writer = SeriesWriter::with_id(7, REFRESH);
    let s = series("up", 1, 1.0, 0);
    let mut written = Vec::new();
    for now in [0, 15_000, 59_999, 60_000, 75_000] {
        written.push(writer.put(&0u32, pairs(&s), &rest(&s), now, &mut Vec::new()));
    }
    use Written::{Definition as D, Reference as R};
    assert_eq!(written, [D, R, R, D, R]);
    // Another key (partition, route or tenant) has its own records.
    assert_eq!(
        writer.put(&1, pairs(&s), &rest(&s), 75_000, &mut Vec::new()),
        D
    );
}

#[test]
fn references_are_far_smaller_than_definitions() {
    let mut writer = SeriesWriter::with_id(7, REFRESH);
    let batch: Vec<TimeSeries> = (0..100).map(|i| series("up", i, 1.0, 0)).collect();
    let first = record(&mut writer, &batch, 0);
    let second = record(&mut writer, &batch, 15_000);
    let plain: usize = batch.iter().map(|s| s.encoded_len() + 2).sum();
    assert!(first.len() > plain, "{} vs {plain}", first.len());
    // An id (1-2 bytes) instead of ~40 bytes of labels per entry.
    assert!(second.len() * 2 < plain, "{} vs {plain}", second.len());
}

#[test]
fn a_reader_from_the_start_gets_every_series_back_as_written() {
    let mut writer = SeriesWriter::with_id(7, REFRESH);
    let mut book = SeriesBook::default();
    for round in 0..10i64 {
        let batch: Vec<TimeSeries> = (0..20)
            .map(|i| series("up", i, round as f64, round * 15_000))
            .collect();
        let value = record(&mut writer, &batch, round * 15_000);
        let got = resolved(&mut book, &read(7, round * 15_000, &value));
        assert_eq!(got.timeseries, batch, "round {round}");
    }
}

#[test]
fn metadata_and_plain_entries_pass_through() {
    let s = series("up", 1, 2.0, 5);
    let request = WriteRequest {
        timeseries: vec![s.clone()],
        metadata: vec![MetricMetadata {
            metric_family_name: "up".into(),
            help: "is it up".into(),
            ..MetricMetadata::default()
        }],
    };
    let value = request.encode_to_vec();
    let got = resolved(&mut SeriesBook::default(), &read(7, 0, &value));
    assert_eq!(got, request);
}

#[test]
fn an_unknown_id_is_an_error_naming_it() {
    let mut writer = SeriesWriter::with_id(0xab, REFRESH);
    let s = series("up", 1, 1.0, 0);
    record(&mut writer, std::slice::from_ref(&s), 0);
    let second = record(&mut writer, &[s], 1_000);
    let err = SeriesBook::default()
        .resolve(&read(0xab, 1_000, &second), &mut Vec::new())
        .unwrap_err();
    assert_eq!(
        err,
        SeriesError::Undefined {
            writer: 0xab,
            id: 1,
            window: Duration::from_secs(120)
        }
    );
    assert!(err.to_string().contains("00000000000000ab"), "{err}");
    // Another writer's definition of the same id does not count.
    let mut other = SeriesWriter::with_id(0xcd, REFRESH);
    let mut book = SeriesBook::default();
    let defined = record(&mut other, &[series("up", 1, 1.0, 0)], 0);
    book.learn(&read(0xcd, 0, &defined)).unwrap();
    assert!(book
        .resolve(&read(0xab, 1_000, &second), &mut Vec::new())
        .is_err());
}

#[test]
fn a_series_unused_for_a_refresh_interval_is_forgotten_and_numbered_anew() {
    let mut writer = SeriesWriter::with_id(7, REFRESH);
    let gone = series("up", 1, 1.0, 0);
    let stays = series("up", 2, 1.0, 0);
    let mut first = Vec::new();
    writer.put(&0u32, pairs(&gone), &rest(&gone), 0, &mut first);
    for now in (0..=120_000).step_by(30_000) {
        writer.put(&0u32, pairs(&stays), &rest(&stays), now, &mut Vec::new());
    }
    let mut back = Vec::new();
    writer.put(&0u32, pairs(&gone), &rest(&gone), 121_000, &mut back);
    let id = |value: &[u8]| {
        // Entry key, length, then field 5's key and the id.
        assert_eq!(value[2], 0x28);
        value[3]
    };
    assert_eq!(id(&first), 1);
    assert_eq!(id(&back), 3, "a new id: the old one was forgotten");
    assert_eq!(writer.tables[&0].ids.len(), 2);
}

#[test]
fn the_reader_forgets_definitions_three_intervals_old() {
    let mut writer = SeriesWriter::with_id(7, REFRESH);
    let mut book = SeriesBook::default();
    let value = record(&mut writer, &[series("up", 1, 1.0, 0)], 0);
    book.learn(&read(7, 0, &value)).unwrap();
    let other = record(&mut writer, &[series("up", 2, 1.0, 0)], 179_000);
    book.learn(&read(7, 179_000, &other)).unwrap();
    assert_eq!(book.len(), 2);
    book.learn(&read(7, 181_000, &other)).unwrap();
    assert_eq!(book.len(), 1);
}

#[test]
fn broken_values_are_structure_errors() {
    let mut writer = SeriesWriter::with_id(7, REFRESH);
    let value = record(&mut writer, &[series("up", 1, 1.0, 0)], 0);
    for cut in 1..value.len() {
        let err = SeriesBook::default()
            .resolve(&read(7, 0, &value[..cut]), &mut Vec::new())
            .unwrap_err();
        assert!(matches!(err, SeriesError::Structure(_)), "{cut}: {err}");
    }
}

fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config(64))]

    /// Records of several keys written over time, with series coming and
    /// going: a reader starting at any record that first learns the records
    /// of its lookback before it resolves every later record to exactly the
    /// series written (prost decodes what it wrote).
    #[test]
    fn a_reader_starting_anywhere_resolves_everything_after_its_lookback(
        rounds in proptest::collection::vec(
            (0i64..40_000, proptest::collection::vec((0usize..2, 0usize..30), 1..40)),
            1..25,
        ),
        start in any::<prop::sample::Index>(),
    ) {
        let mut writer = SeriesWriter::with_id(9, REFRESH);
        let mut now = 0;
        // (timestamp, value, series written): records in partition order.
        let mut records: Vec<(i64, Vec<u8>, Vec<TimeSeries>)> = Vec::new();
        for (step, picks) in rounds {
            now += step;
            for key in 0..2usize {
                let batch: Vec<TimeSeries> = picks
                    .iter()
                    .filter(|(k, _)| *k == key)
                    .map(|&(_, i)| series("m", i, now as f64, now))
                    .collect();
                if batch.is_empty() {
                    continue;
                }
                let mut value = Vec::new();
                for s in &batch {
                    writer.put(&key, pairs(s), &rest(s), now, &mut value);
                }
                // A record is written a little after its series are routed.
                records.push((now + 50, value, batch));
            }
        }
        let start = start.index(records.len());
        let from = records[start].0 - 2 * REFRESH.as_millis() as i64;
        let mut book = SeriesBook::default();
        for (ts, value, _) in records[..start].iter().filter(|(ts, _, _)| *ts >= from) {
            book.learn(&read(9, *ts, value)).unwrap();
        }
        for (ts, value, batch) in &records[start..] {
            let got = resolved(&mut book, &read(9, *ts, value));
            prop_assert_eq!(&got.timeseries, batch);
        }
    }
}

/// The router's `streamroute_router_series_id_entries_total` comes from
/// these counts: per key, what was written since they were last reset.
#[test]
fn the_writer_counts_definitions_and_references_per_key() {
    let mut writer: SeriesWriter<u32> = SeriesWriter::with_id(1, REFRESH);
    let (a, b) = (series("up", 1, 1.0, 1), series("up", 2, 1.0, 1));
    record(&mut writer, &[a.clone(), b.clone()], 0);
    record(&mut writer, &[a.clone(), b.clone()], 1_000);
    let mut out = Vec::new();
    writer.put(&7, pairs(&a), &rest(&a), 1_000, &mut out);
    let mut counts: Vec<(u32, Counts)> = writer.counts().map(|(k, c)| (*k, c)).collect();
    counts.sort_by_key(|(k, _)| *k);
    let of = |definitions, references| Counts {
        definitions,
        references,
    };
    assert_eq!(counts, vec![(0, of(2, 2)), (7, of(1, 0))]);
    writer.reset_counts();
    // After a refresh interval, the labels are written again.
    record(&mut writer, &[a], REFRESH.as_millis() as i64 + 1);
    let zero: Vec<Counts> = writer
        .counts()
        .map(|(_, c)| c)
        .filter(|c| *c != of(0, 0))
        .collect();
    assert_eq!(zero, vec![of(1, 0)]);
}
