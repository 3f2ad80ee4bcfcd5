//! What a label table would save in the task topic (issue 12's 8 bytes per
//! sample): reads task records as they are on the broker and compresses
//! each as Kafka's zstd batch compression would (level 3, one record per
//! batch, as the router writes one per partition per transaction), once as
//! it is (remote write 1.0: every label string in every series) and once
//! rewritten with remote write 2.0's symbol table (each string once per
//! record, labels as references), and, for scale, once without labels
//! (what the samples alone cost).
//!
//! ```sh
//! kcat -C -b 127.0.0.1:9092 -t TASK_TOPIC -e -f '%R%s' > records.bin
//! cargo run --release --example storage_model -- records.bin
//! ```
//!
//! `%R` writes each value's length as 4 bytes, big-endian, before it. The
//! values must be plain protobuf (`content-encoding: identity`, the
//! router's default).

use std::collections::HashMap;

use prost::Message;
use streamroute::remote_write::proto::v2;
use streamroute::remote_write::WriteRequest;

/// 2.0's form of `req`: strings in a table in first-seen order (the empty
/// string first, as 2.0 requires), labels as references.
fn with_symbols(req: &WriteRequest) -> v2::Request {
    let mut symbols = vec![String::new()];
    let mut index: HashMap<String, u32> = HashMap::from([(String::new(), 0)]);
    let mut symbol = |s: &str| -> u32 {
        if let Some(&i) = index.get(s) {
            return i;
        }
        let i = u32::try_from(symbols.len()).expect("fewer than 2^32 strings");
        symbols.push(s.to_owned());
        index.insert(s.to_owned(), i);
        i
    };
    let timeseries = req
        .timeseries
        .iter()
        .map(|series| v2::TimeSeries {
            labels_refs: series
                .labels
                .iter()
                .flat_map(|l| [symbol(&l.name), symbol(&l.value)])
                .collect(),
            samples: series
                .samples
                .iter()
                .map(|s| v2::Sample {
                    value: s.value,
                    timestamp: s.timestamp,
                    start_timestamp: 0,
                })
                .collect(),
            ..Default::default()
        })
        .collect();
    v2::Request {
        symbols,
        timeseries,
    }
}

fn zstd_len(bytes: &[u8]) -> usize {
    zstd::bulk::compress(bytes, 3)
        .expect("zstd compresses")
        .len()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: storage_model RECORDS (kcat -f '%R%s')")?;
    let data = std::fs::read(&path)?;
    let (mut rest, mut records, mut samples) = (&data[..], 0usize, 0usize);
    let (mut v1_raw, mut v1_zstd, mut v2_raw, mut v2_zstd) = (0, 0, 0, 0);
    let (mut bare_raw, mut bare_zstd) = (0, 0);
    while !rest.is_empty() {
        let (len, after) = rest.split_at_checked(4).ok_or("a truncated length")?;
        let len = u32::from_be_bytes(len.try_into()?) as usize;
        let (value, after) = after.split_at_checked(len).ok_or("a truncated record")?;
        rest = after;
        let req = WriteRequest::decode(value)?;
        let v2 = with_symbols(&req);
        // What the samples alone cost: the same request without labels.
        let mut bare = v2.clone();
        bare.symbols.truncate(1);
        bare.timeseries
            .iter_mut()
            .for_each(|s| s.labels_refs.clear());
        let bare = bare.encode_to_vec();
        bare_raw += bare.len();
        bare_zstd += zstd_len(&bare);
        let v2 = v2.encode_to_vec();
        records += 1;
        samples += req
            .timeseries
            .iter()
            .map(|s| s.samples.len())
            .sum::<usize>();
        v1_raw += value.len();
        v1_zstd += zstd_len(value);
        v2_raw += v2.len();
        v2_zstd += zstd_len(&v2);
    }
    if samples == 0 {
        return Err("no samples in the records".into());
    }
    let per = |bytes: usize| bytes as f64 / samples as f64;
    println!(
        "{records} records, {samples} samples ({:.0} per record)",
        samples as f64 / records.max(1) as f64
    );
    println!("form                      raw B/sample  zstd-3 B/sample");
    println!(
        "1.0 (as written today)    {:>12.1}  {:>15.1}",
        per(v1_raw),
        per(v1_zstd)
    );
    println!(
        "2.0 symbol table          {:>12.1}  {:>15.1}",
        per(v2_raw),
        per(v2_zstd)
    );
    println!(
        "2.0 without labels        {:>12.1}  {:>15.1}   (the samples alone)",
        per(bare_raw),
        per(bare_zstd)
    );
    Ok(())
}
