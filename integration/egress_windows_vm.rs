//! The windows against real VictoriaMetrics components (v1.151.0, built by
//! scripts/vm-modern.sh):
//!
//! - gap inflation: a counter whose scrape stops for three intervals,
//!   aggregated by a vmagent with stream aggregation (`increase`, `total`,
//!   `by: [job]`, 20 s windows). Without repair the window after the gap
//!   holds the increase of the gap; with `on_gap = "interpolate"` every
//!   window is within 5% of the truth, computed here from the counter's
//!   increments; samples arriving up to `delay` late land in their window.
//! - staleness: with `on_gap = "stale_marker"`, a bare selector of the
//!   series in VictoriaMetrics returns nothing in the hole after the
//!   marker, while without it the last value is repeated for its
//!   lookbehind window (`rate()` ignores markers in VictoriaMetrics, as in
//!   Prometheus).
//!
//! Records are written to the task topics directly, in real time.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::{Rng, SeedableRng};
use streamroute::remote_write::proto::v1::{Label, Sample, TimeSeries, WriteRequest};

use crate::common::{http_get, unique, write_file};
use crate::egress::{produce_task, setup, start_egress};
use crate::router::producer;
use crate::vm_modern::{export, victoria_metrics, vmagent};

/// Aggregation interval (the shortest of the 20–30 s).
const WINDOW_MS: i64 = 20_000;
/// Scrape interval of the counter.
const SCRAPE_MS: i64 = 2_000;
/// Egress delay: more than the gap, so it closes within the window.
const DELAY_MS: i64 = 8_000;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

async fn sleep_until(ms: i64) {
    let wait = ms - now_ms();
    if wait > 0 {
        tokio::time::sleep(Duration::from_millis(wait as u64)).await;
    }
}

fn counter(name: &str, job: &str, ts: i64, value: f64) -> WriteRequest {
    WriteRequest {
        timeseries: vec![TimeSeries {
            labels: vec![
                Label::new("__name__", name),
                Label::new("instance", "i1"),
                Label::new("job", job),
            ],
            samples: vec![Sample {
                value,
                timestamp: ts,
            }],
            ..Default::default()
        }],
        metadata: vec![],
    }
}

/// The truth: per window end, the counter's increase over the samples
/// stamped in (end - 20 s, end], from the full (gap-free) series.
fn truth(samples: &[(i64, f64)], ends: &[i64]) -> BTreeMap<i64, f64> {
    ends.iter()
        .map(|&end| {
            let inc: f64 = samples
                .windows(2)
                .filter(|w| w[1].0 > end - WINDOW_MS && w[1].0 <= end)
                .map(|w| w[1].1 - w[0].1)
                .sum();
            (end, inc)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn interpolation_spreads_a_gap_over_the_stream_aggregation_windows_it_happened_in() {
    let dir = tempfile::tempdir().expect("tempdir");
    let name = unique("sr_gapagg").replace('.', "_");
    let rules = write_file(
        dir.path(),
        "aggr.yml",
        &format!(
            "- match: '{{__name__=\"{name}\"}}'\n  interval: 20s\n  by: [job]\n  \
             outputs: [increase, total]\n  enable_windows: true\n  staleness_interval: 2m\n  \
             ignore_first_sample_interval: 0s\n"
        ),
    );
    let mut vm = victoria_metrics(dir.path(), "vm");
    vm.wait_healthy().await;
    let mut agent = vmagent(dir.path(), "vmagent", &rules, &vm.write_url());
    agent.wait_healthy().await;
    let windows = |on_gap: &str| {
        format!(
            "[egress.windows]\ndelay = \"{DELAY_MS}ms\"\non_gap = \"{on_gap}\"\n\
             default_interval = \"{SCRAPE_MS}ms\"\ngap_factor = 2.0\n"
        )
    };
    // Egress "none": the gap-free counter and the one with a gap, no repair.
    // Egress "interpolate": the one with a gap, and the gap-free one sent late.
    let plain = setup(1, &agent.write_url(), &windows("none")).await;
    let repair = setup(1, &agent.write_url(), &windows("interpolate")).await;
    let (_e1, _e2) = (start_egress(&plain).await, start_egress(&repair).await);
    let producer = producer();

    // Ticks 1 s after odd seconds' boundaries never sit on a window end.
    let start = now_ms() + 1_000;
    let first_end = (start / WINDOW_MS + 1) * WINDOW_MS; // B
    let first_tick = start - start.rem_euclid(SCRAPE_MS) + SCRAPE_MS + 1_000 - SCRAPE_MS;
    let ticks: Vec<i64> = (0..)
        .map(|k| first_tick + k * SCRAPE_MS)
        .take_while(|t| *t <= first_end + 4 * WINDOW_MS + 10_000)
        .filter(|t| *t >= start)
        .collect();
    // The gap: ticks B+35, B+37, B+39 s are not scraped (B+40 s is a window end).
    let in_gap = |t: i64| t >= first_end + 34_000 && t <= first_end + 40_000;
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut value = 1_000.0;
    let full: Vec<(i64, f64)> = ticks
        .iter()
        .map(|&t| {
            value += f64::from(rng.gen_range(19..=21));
            (t, value)
        })
        .collect();
    // The late series: each sample sent up to 6.5 s after its time (< delay).
    let mut late: Vec<(i64, i64, f64)> = full
        .iter()
        .map(|&(t, v)| (t + rng.gen_range(0..6_500), t, v))
        .collect();
    late.sort_by_key(|l| l.0);
    let mut late = late.into_iter().peekable();
    for &(t, v) in &full {
        sleep_until(t).await;
        produce_task(&producer, &plain.tasks, 0, &counter(&name, "full", t, v)).await;
        if !in_gap(t) {
            produce_task(
                &producer,
                &plain.tasks,
                0,
                &counter(&name, "gap_none", t, v),
            )
            .await;
            produce_task(
                &producer,
                &repair.tasks,
                0,
                &counter(&name, "gap_fill", t, v),
            )
            .await;
        }
        while let Some(&(at, ts, v)) = late.peek() {
            if at > now_ms() {
                break;
            }
            produce_task(&producer, &repair.tasks, 0, &counter(&name, "late", ts, v)).await;
            late.next();
        }
    }
    for (at, ts, v) in late {
        sleep_until(at).await;
        produce_task(&producer, &repair.tasks, 0, &counter(&name, "late", ts, v)).await;
    }
    // Compared: the window of the gap (B+40 s), the one after (B+60 s) and
    // one more. Not the first ones: vmagent's first output for a new series
    // holds its whole value (increase from 0), in the window ending B+20 s
    // in one run (1,344 where the truth was 204) and B in another.
    let ends: Vec<i64> = (2..=4).map(|k| first_end + k * WINDOW_MS).collect();
    let want = truth(&full, &ends);
    // The last compared window is flushed after its end plus vmagent's
    // lag-based wait (about delay + 1 s).
    sleep_until(ends[2] + DELAY_MS + 8_000).await;
    let got: BTreeMap<String, BTreeMap<i64, f64>> =
        export(&vm, &format!("{{__name__=\"{name}:20s_by_job_increase\"}}"))
            .await
            .into_iter()
            .map(|e| {
                let per_end = e
                    .samples
                    .iter()
                    // Output samples are stamped with their window's end:
                    // the gap-free counter matches the truth this way only
                    // (with "+ one window" every value was one window off).
                    .map(|&(ts, v)| (ts / WINDOW_MS * WINDOW_MS, v))
                    .collect();
                (e.labels["job"].clone(), per_end)
            })
            .collect();
    let report = format!("truth {want:?}\ngot {got:?}\n{}", agent.log());
    eprintln!("{report}");
    let of = |job: &str, end: i64| {
        got.get(job)
            .and_then(|w| w.get(&end))
            .copied()
            .unwrap_or_else(|| panic!("no {job} window ending {end}\n{report}"))
    };
    let off = |job: &str, end: i64| (of(job, end) - want[&end]) / want[&end];
    for &end in &ends {
        assert!(
            off("full", end).abs() < 0.001,
            "the gap-free counter is the truth ({end})\n{report}"
        );
        assert!(
            off("gap_fill", end).abs() <= 0.05,
            "interpolated: within 5% ({end}: {:+.1}%)\n{report}",
            off("gap_fill", end) * 100.0
        );
        assert!(
            off("late", end).abs() < 0.001,
            "samples up to delay late land in their window ({end})\n{report}"
        );
    }
    // Without repair the window before the gap's end misses most of the
    // gap's increase and the window after it shows the spike.
    let (before, after) = (ends[0], ends[1]);
    assert!(off("gap_none", before) < -0.2, "{report}");
    assert!(
        off("gap_none", after) > 0.2,
        "spike after the gap\n{report}"
    );
    eprintln!(
        "window after the gap: none {:+.1}%, interpolate {:+.1}% of the truth",
        off("gap_none", after) * 100.0,
        off("gap_fill", after) * 100.0
    );
}

/// `query` from `from` to `to` (ms) every 10 s, as (time ms, value), from
/// VictoriaMetrics.
async fn query_range(
    vm: &crate::vm_modern::Daemon,
    query: &str,
    from: i64,
    to: i64,
) -> Vec<(i64, f64)> {
    let enc: String = query
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let url = format!(
        "{}/api/v1/query_range?query={enc}&start={}&end={}&step=10s",
        vm.url(),
        from / 1000,
        to / 1000
    );
    let r = http_get(&url).await.expect("query");
    assert_eq!(r.status, 200, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).expect("json");
    v["data"]["result"][0]["values"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| {
                    let t = p[0].as_f64().expect("time");
                    let v: f64 = p[1].as_str().expect("value").parse().expect("number");
                    ((t * 1000.0) as i64, v)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// VictoriaMetrics drops staleness markers before every rollup function
/// but `default_rollup` (a bare selector) and `stale_samples_over_time`
/// (`dropStaleNaNs` in app/vmselect/promql), so `rate()` is the same with
/// and without the marker; a bare selector stops at the marker instead of
/// repeating the last value for its lookbehind window.
#[tokio::test(flavor = "multi_thread")]
async fn a_stale_marker_ends_the_series_in_the_hole_for_a_bare_selector() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut vm = victoria_metrics(dir.path(), "vm");
    vm.wait_healthy().await;
    let windows = |on_gap: &str| {
        format!(
            "[egress.windows]\ndelay = \"2s\"\non_gap = \"{on_gap}\"\n\
             default_interval = \"10s\"\ngap_factor = 2.0\n"
        )
    };
    let marked = setup(1, &vm.write_url(), &windows("stale_marker")).await;
    let plain = setup(1, &vm.write_url(), &windows("none")).await;
    let (_e1, _e2) = (start_egress(&marked).await, start_egress(&plain).await);
    let name = unique("sr_stale").replace('.', "_");
    let producer = producer();
    // 10 s apart from t0 to t0+100 s, nothing for 100 s, then on from
    // t0+200 s; the counter rises 10 per 10 s throughout (1/s).
    let t0 = (now_ms() - 20 * 60 * 1000) / 10_000 * 10_000;
    for k in (0..=10).chain(20..=30) {
        let (ts, v) = (t0 + k * 10_000, (k * 10) as f64);
        produce_task(
            &producer,
            &marked.tasks,
            0,
            &counter(&name, "marked", ts, v),
        )
        .await;
        produce_task(&producer, &plain.tasks, 0, &counter(&name, "plain", ts, v)).await;
    }
    // Everything is released after 2 s of idleness.
    let deadline = now_ms() + 30_000;
    loop {
        // The marked series holds a StaleNaN, which export's reader cannot parse.
        let n: usize = export(&vm, &format!("{{__name__=\"{name}\",job=\"plain\"}}"))
            .await
            .iter()
            .map(|e| e.samples.len())
            .sum();
        if n >= 22 {
            // The marked egress runs the same schedule; give it a moment.
            tokio::time::sleep(Duration::from_secs(3)).await;
            break;
        }
        assert!(now_ms() < deadline, "{n} samples in VictoriaMetrics");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Every 10 s across the hole (t0+100 s to t0+200 s): the bare series,
    // and rate() over 60 s for comparison.
    let (from, to) = (t0 + 60_000, t0 + 260_000);
    let series = |job: &str| format!("{name}{{job=\"{job}\"}}");
    let plain = query_range(&vm, &series("plain"), from, to).await;
    let marked = query_range(&vm, &series("marked"), from, to).await;
    let rate = |job: &str| format!("rate({}[60s])", series(job));
    let plain_rate = query_range(&vm, &rate("plain"), from, to).await;
    let marked_rate = query_range(&vm, &rate("marked"), from, to).await;
    let report = format!(
        "bare without marker: {plain:?}\nbare with marker: {marked:?}\n\
         rate() without marker: {plain_rate:?}\nrate() with marker: {marked_rate:?}"
    );
    eprintln!("{report}");
    // The marker is at t0+110 s (last sample + one interval).
    let in_hole = |r: &[(i64, f64)]| {
        r.iter()
            .filter(|(t, _)| *t >= t0 + 110_000 && *t < t0 + 200_000)
            .count()
    };
    assert!(
        in_hole(&plain) > 0,
        "without the marker the last value is repeated into the hole\n{report}"
    );
    assert_eq!(
        in_hole(&marked),
        0,
        "with the marker the series is absent in the hole\n{report}"
    );
    let before = |r: &[(i64, f64)]| -> Vec<(i64, f64)> {
        r.iter()
            .filter(|(t, _)| *t <= t0 + 100_000)
            .copied()
            .collect()
    };
    assert_eq!(before(&plain), before(&marked), "the same up to the hole");
    assert!(!before(&plain).is_empty(), "{report}");
}
