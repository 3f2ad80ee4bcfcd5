//! Properties of the windows over random streams: order per series, no
//! loss or duplication, and interpolation that keeps counters monotone and
//! their increase intact.

use proptest::prelude::*;

use super::*;

const DELAY: i64 = 20_000;

fn settings(on_late: OnLate, on_gap: OnGap) -> Settings {
    Settings {
        delay: DELAY,
        on_late,
        gap_factor: 1.5,
        default_interval: 5_000,
        on_gap,
        expire_after: 3_600_000,
    }
}

/// Series of strictly increasing timestamps (steps of 1..15 s) and
/// strictly increasing counter values (a fill is told from a real sample
/// by both), each sample with an arrival jitter.
fn streams(jitter: i64) -> impl Strategy<Value = Vec<Vec<(i64, f64, i64)>>> {
    prop::collection::vec(
        prop::collection::vec((1i64..15_000, 0.5f64..100.0, 0..jitter), 1..40),
        1..5,
    )
    .prop_map(|series| {
        series
            .into_iter()
            .map(|steps| {
                let (mut ts, mut v) = (1_000_000i64, 0.0);
                steps
                    .into_iter()
                    .map(|(dt, dv, j)| {
                        ts += dt;
                        v += dv;
                        (ts, v, j)
                    })
                    .collect()
            })
            .collect()
    })
}

/// Feeds every sample in arrival order (timestamp + jitter), one record
/// each, then releases everything; returns what left per series.
fn run(w: &mut Windows, series: &[Vec<(i64, f64, i64)>]) -> Vec<Vec<Point>> {
    let mut arrivals: Vec<(i64, usize, Point)> = series
        .iter()
        .enumerate()
        .flat_map(|(i, s)| {
            s.iter()
                .map(move |&(ts, value, j)| (ts + j, i, Point { ts, value }))
        })
        .collect();
    arrivals.sort_by_key(|(at, i, p)| (*at, *i, p.ts));
    let mut out = Emit::default();
    for (offset, (_, i, p)) in arrivals.into_iter().enumerate() {
        w.ingest(
            offset as i64,
            i as u64,
            || Arc::from(&[][..]),
            [p],
            &mut out,
        );
        w.release(&mut out);
    }
    w.release_all(&mut out);
    let mut per = vec![Vec::new(); series.len()];
    for s in out.send {
        per[s.hash as usize].extend(s.points);
    }
    per
}

proptest! {
    #[test]
    fn each_series_leaves_in_timestamp_order(series in streams(2 * DELAY)) {
        let mut w = Windows::new(settings(OnLate::Drop, OnGap::None));
        for out in run(&mut w, &series) {
            prop_assert!(out.windows(2).all(|p| p[0].ts < p[1].ts), "{out:?}");
        }
    }

    #[test]
    fn within_the_delay_nothing_is_late_and_all_leaves_in_order(series in streams(DELAY)) {
        let mut w = Windows::new(settings(OnLate::Drop, OnGap::None));
        let out = run(&mut w, &series);
        prop_assert_eq!(w.take_stats().late, 0);
        for (input, out) in series.iter().zip(out) {
            let want: Vec<i64> = input.iter().map(|s| s.0).collect();
            let got: Vec<i64> = out.iter().map(|p| p.ts).collect();
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn with_on_late_send_nothing_is_lost_or_duplicated(series in streams(3 * DELAY)) {
        let mut w = Windows::new(settings(OnLate::Send, OnGap::None));
        let out = run(&mut w, &series);
        prop_assert_eq!(w.held_samples(), 0);
        for (input, out) in series.iter().zip(out) {
            let mut want: Vec<(i64, u64)> = input.iter().map(|s| (s.0, s.1.to_bits())).collect();
            let mut got: Vec<(i64, u64)> = out.iter().map(|p| (p.ts, p.value.to_bits())).collect();
            want.sort_unstable();
            got.sort_unstable();
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn interpolation_keeps_counters_monotone_and_their_increase(series in streams(DELAY)) {
        let mut w = Windows::new(settings(OnLate::Drop, OnGap::Interpolate));
        let out = run(&mut w, &series);
        let (mut synthesized, mut late) = (0, 0);
        for (input, out) in series.iter().zip(out) {
            let real: Vec<(i64, u64)> = input.iter().map(|s| (s.0, s.1.to_bits())).collect();
            let is_real = |p: &Point| real.contains(&(p.ts, p.value.to_bits()));
            let at: Vec<usize> = out.iter().enumerate().filter(|(_, p)| is_real(p)).map(|(i, _)| i).collect();
            // A real sample is dropped as late only when it arrived inside a
            // gap whose fills had begun to leave: a fill left before it and
            // the next real sample out is after it.
            for &(r, _) in real.iter().filter(|r| !out.iter().any(|p| (p.ts, p.value.to_bits()) == **r)) {
                let fill_at_or_before = out.iter().rev().find(|p| p.ts <= r).is_some_and(|p| !is_real(p));
                let real_after = out.iter().any(|p| p.ts > r && is_real(p));
                prop_assert!(fill_at_or_before && real_after, "{r} lost: {out:?}");
                late += 1;
            }
            prop_assert!(out.windows(2).all(|p| p[0].ts < p[1].ts), "{out:?}");
            synthesized += out.len() - at.len();
            for pair in at.windows(2) {
                let (a, b) = (out[pair[0]], out[pair[1]]);
                let filled = &out[pair[0]..=pair[1]];
                prop_assert!(filled.windows(2).all(|p| p[0].value <= p[1].value), "{filled:?}");
                let increases: f64 = filled.windows(2).map(|p| p[1].value - p[0].value).sum();
                prop_assert!((increases - (b.value - a.value)).abs() <= 1e-9 * b.value.max(1.0));
                for f in &filled[1..filled.len() - 1] {
                    let line = a.value + (b.value - a.value) * (f.ts - a.ts) as f64 / (b.ts - a.ts) as f64;
                    prop_assert!((f.value - line).abs() <= 1e-9 * b.value.max(1.0));
                }
            }
        }
        let stats = w.take_stats();
        prop_assert_eq!(stats.synthesized, synthesized as u64);
        prop_assert_eq!(stats.late, late);
    }
}
