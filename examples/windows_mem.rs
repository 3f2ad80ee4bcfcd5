//! Peak RSS of the egress windows of one partition with many series, with
//! and without storing them in sled (`State::set_with_windows`), and the
//! sled folder's size:
//! `cargo run --release --example windows_mem -- SERIES ROUNDS store|nostore DIR`.
//!
//! Every series gets one sample per round, rounds 10 s apart in event
//! time, 2,000 series per record, a delay of 5 s (so a round is held until
//! the next one arrives), one store per record as the worker does, sled
//! flushed every second.

use std::sync::Arc;
use std::time::{Duration, Instant};

use streamroute::egress::windows::store::{Meta, Unsaved};
use streamroute::egress::windows::{Emit, OnGap, OnLate, Point, Settings, Windows};
use streamroute::state::{partition_key, Position, State};

fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

fn hwm() -> String {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .filter(|l| l.starts_with("VmHWM") || l.starts_with("VmRSS"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let a: Vec<String> = std::env::args().collect();
    let series: u64 = a[1].parse().expect("SERIES");
    let rounds: i64 = a[2].parse().expect("ROUNDS");
    let store = a[3] == "store";
    let settings = Settings {
        delay: 5_000,
        on_late: OnLate::Drop,
        gap_factor: 2.0,
        default_interval: 10_000,
        on_gap: OnGap::None,
        expire_after: 3_600_000,
    };
    let mut w = Windows::new(settings);
    let state =
        State::open(std::path::Path::new(&a[4]), Duration::from_secs(1)).expect("open sled");
    let prefix = partition_key("t", 0);
    let mut unsaved = Unsaved::default();
    let started = Instant::now();
    let mut offset = 0i64;
    let (mut sent, mut last_flush) = (0usize, Instant::now());
    for round in 0..rounds {
        for first in (0..series).step_by(2000) {
            let mut out = Emit::default();
            for i in first..(first + 2000).min(series) {
                let labels =
                    format!("\n\x10\n\x08__name__\x12\x04bench\n\x0a\n\x02id\x12\x04{i:04}");
                w.ingest(
                    offset,
                    i.wrapping_mul(0x9e3779b97f4a7c15),
                    || Arc::from(labels.as_bytes()),
                    [Point {
                        ts: round * 10_000,
                        value: i as f64,
                    }],
                    &mut out,
                );
            }
            w.release(&mut out);
            sent += out.samples();
            offset += 1;
            if store {
                unsaved.merge(w.take_changes());
                let meta = Meta {
                    read_through: Some(offset),
                    watermark: w.watermark(),
                };
                let (wb, gb) = unsaved.batches(&prefix, &meta);
                let p = Position {
                    topic: "t".into(),
                    partition: 0,
                    next_offset: w.holds_from().unwrap_or(offset),
                };
                state.set_with_windows(&p, &wb, &gb).await.expect("sled");
                unsaved.clear();
                if last_flush.elapsed() > Duration::from_secs(1) {
                    state.flush().await.expect("sled");
                    last_flush = Instant::now();
                }
            } else {
                w.take_changes();
            }
        }
        eprintln!(
            "round {round}: {:.1}s sent {sent} series {} | {}",
            started.elapsed().as_secs_f64(),
            w.series_count(),
            hwm()
        );
    }
    state.flush().await.expect("sled");
    let mb = dir_bytes(std::path::Path::new(&a[4])) as f64 / 1048576.0;
    eprintln!(
        "done: {:.1}s, {series} series, sled {mb:.0} MiB on disk | {}",
        started.elapsed().as_secs_f64(),
        hwm()
    );
}
