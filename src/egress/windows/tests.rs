//! Unit tests of the windows: ordering, late policies, gaps, expiry and
//! the position bound. Expected values are worked out by hand from the
//! settings (30 s interval, gap_factor 2).

use super::*;

const S: i64 = 1_000;

fn settings(on_late: OnLate, on_gap: OnGap) -> Settings {
    Settings {
        delay: 60 * S,
        on_late,
        gap_factor: 2.0,
        default_interval: 30 * S,
        on_gap,
        expire_after: 600 * S,
    }
}

fn labels() -> Arc<[u8]> {
    Arc::from(&b"\x0a\x00"[..])
}

/// Feeds (offset, hash, ts, value) one at a time, releasing after each.
fn run(w: &mut Windows, input: &[(i64, u64, i64, f64)]) -> Emit {
    let mut out = Emit::default();
    for &(offset, hash, ts, value) in input {
        w.ingest(offset, hash, labels, [Point { ts, value }], &mut out);
        w.release(&mut out);
    }
    out
}

fn points(list: &[SeriesOut], hash: u64) -> Vec<(i64, f64)> {
    list.iter()
        .filter(|s| s.hash == hash)
        .flat_map(|s| s.points.iter().map(|p| (p.ts, p.value)))
        .collect()
}

#[test]
fn samples_shuffled_within_the_delay_leave_in_order() {
    let mut w = Windows::new(settings(OnLate::Drop, OnGap::None));
    let mut out = run(
        &mut w,
        &[
            (0, 1, 30 * S, 2.0),
            (1, 1, 0, 1.0),
            (2, 1, 90 * S, 4.0),
            (3, 1, 60 * S, 3.0),
        ],
    );
    // Watermark 90 s - 60 s = 30 s: 0 and 30 s left, 60 and 90 s are held.
    assert_eq!(points(&out.send, 1), [(0, 1.0), (30 * S, 2.0)]);
    assert_eq!(w.held_samples(), 2);
    assert_eq!(w.holds_from(), Some(2), "offset 2 holds the 90 s sample");
    w.release_all(&mut out);
    assert_eq!(
        points(&out.send, 1),
        [(0, 1.0), (30 * S, 2.0), (60 * S, 3.0), (90 * S, 4.0)]
    );
    assert_eq!(w.holds_from(), None);
}

#[test]
fn a_sample_at_or_before_what_was_sent_is_late_under_each_policy() {
    for policy in [OnLate::Drop, OnLate::Send, OnLate::Topic] {
        let mut w = Windows::new(settings(policy, OnGap::None));
        // 200 s pushes the watermark to 140 s: 100 s is sent; then 100 s
        // again (a duplicate) and 50 s are late.
        let out = run(
            &mut w,
            &[
                (0, 1, 100 * S, 1.0),
                (1, 2, 200 * S, 1.0),
                (2, 1, 100 * S, 9.0),
                (3, 1, 50 * S, 8.0),
            ],
        );
        assert_eq!(w.take_stats().late, 2, "{policy:?}");
        let late = [(100 * S, 9.0), (50 * S, 8.0)];
        let (sent, topic) = (points(&out.send, 1), points(&out.late, 1));
        match policy {
            OnLate::Drop => assert_eq!((sent, topic), (vec![(100 * S, 1.0)], vec![])),
            OnLate::Send => assert_eq!(sent, [(100 * S, 1.0), late[0], late[1]]),
            OnLate::Topic => assert_eq!((sent, topic), (vec![(100 * S, 1.0)], late.to_vec())),
        }
    }
}

#[test]
fn a_sample_behind_the_watermark_but_newer_than_sent_is_not_late() {
    let mut w = Windows::new(settings(OnLate::Drop, OnGap::None));
    let out = run(
        &mut w,
        &[
            (0, 1, 10 * S, 1.0),
            (1, 2, 500 * S, 1.0),
            (2, 1, 40 * S, 2.0),
        ],
    );
    assert_eq!(points(&out.send, 1), [(10 * S, 1.0), (40 * S, 2.0)]);
    assert_eq!(w.take_stats().late, 0);
}

#[test]
fn a_stale_marker_follows_the_last_sample_by_one_interval() {
    let mut w = Windows::new(settings(OnLate::Drop, OnGap::StaleMarker));
    // Series 1 at 0, 30, 60 s, then quiet; series 2 moves the watermark.
    let mut input = vec![(0, 1, 0, 1.0), (1, 1, 30 * S, 2.0), (2, 1, 60 * S, 3.0)];
    input.extend((0..8).map(|i| (3 + i, 2, (60 + 30 * i) * S, 1.0)));
    let out = run(&mut w, &input);
    let got = points(&out.send, 1);
    assert_eq!(got.len(), 4, "{got:?}");
    assert_eq!(got[3].0, 90 * S, "60 s + one 30 s interval");
    assert_eq!(got[3].1.to_bits(), 0x7ff0000000000002);
    let stats = w.take_stats();
    assert_eq!(
        (stats.stale_markers, stats.gaps),
        (1, 0),
        "the gap is not closed yet"
    );
    // It resumes: the gap is recorded, no second marker.
    let mut out = run(&mut w, &[(20, 1, 240 * S, 9.0), (21, 2, 260 * S, 1.0)]);
    w.release_all(&mut out);
    assert_eq!(points(&out.send, 1), [(240 * S, 9.0)]);
    let changes = w.take_changes();
    assert_eq!(changes.gaps.len(), 1);
    assert_eq!(
        (
            changes.gaps[0].start,
            changes.gaps[0].end,
            changes.gaps[0].missing
        ),
        (60 * S, 240 * S, 5)
    );
}

#[test]
fn a_gap_within_the_delay_is_interpolated_and_a_reset_is_not() {
    let mut w = Windows::new(settings(OnLate::Drop, OnGap::Interpolate));
    // 0 s → 90 s is a gap of two missing samples (30 and 60 s) that closes
    // while 0 s is still held (watermark -60 s).
    let mut out = run(&mut w, &[(0, 1, 0, 10.0), (1, 1, 90 * S, 40.0)]);
    w.release_all(&mut out);
    assert_eq!(
        points(&out.send, 1),
        [(0, 10.0), (30 * S, 20.0), (60 * S, 30.0), (90 * S, 40.0)]
    );
    let stats = w.take_stats();
    assert_eq!((stats.gaps, stats.synthesized), (1, 2));
    let gaps = w.take_changes().gaps;
    assert_eq!((gaps[0].missing, gaps[0].synthesized), (2, 2));
    // A reset across a hole: no gap, nothing filled.
    let mut out = run(&mut w, &[(2, 1, 240 * S, 1.0)]);
    w.release_all(&mut out);
    assert_eq!(points(&out.send, 1), [(240 * S, 1.0)]);
    assert_eq!(w.take_stats().gaps, 0);
}

#[test]
fn a_gap_longer_than_the_delay_is_recorded_but_not_filled() {
    let mut w = Windows::new(settings(OnLate::Drop, OnGap::Interpolate));
    let mut input = vec![(0, 1, 0, 10.0)];
    input.extend((0..6).map(|i| (1 + i, 2, 30 * i * S, 1.0)));
    input.push((9, 1, 180 * S, 70.0));
    let mut out = run(&mut w, &input);
    w.release_all(&mut out);
    assert_eq!(points(&out.send, 1), [(0, 10.0), (180 * S, 70.0)]);
    let stats = w.take_stats();
    assert_eq!((stats.gaps, stats.synthesized), (1, 0));
}

#[test]
fn quiet_series_expire_and_their_deletion_is_a_change() {
    let mut w = Windows::new(settings(OnLate::Drop, OnGap::None));
    let mut out = run(&mut w, &[(0, 1, 0, 1.0), (1, 2, 1_000 * S, 1.0)]);
    w.release_all(&mut out);
    w.take_changes();
    assert_eq!(w.expire(), 1, "series 1 is 1000 s behind, limit 600 s");
    assert!(w.series(1).is_none());
    let changes = w.take_changes();
    assert_eq!(changes.series, [(1, None)]);
}

#[test]
fn restored_windows_continue_where_they_stopped() {
    let mut w = Windows::new(settings(OnLate::Drop, OnGap::None));
    let mut out = run(&mut w, &[(0, 1, 0, 1.0), (1, 1, 100 * S, 2.0)]);
    let changes = w.take_changes();
    assert_eq!(changes.labels.len(), 1, "the new series' labels, once");
    let stored: Vec<(u64, Series)> = changes
        .series
        .into_iter()
        .map(|(h, b)| {
            let s = Series::decode(&b.expect("kept"), labels()).expect("decodes");
            (h, s)
        })
        .collect();
    let mut w2 = Windows::restore(w.settings, w.watermark(), stored);
    assert_eq!(w2.holds_from(), Some(1));
    let mut out2 = Emit::default();
    w2.ingest(
        2,
        1,
        labels,
        [Point {
            ts: 30 * S,
            value: 1.5,
        }],
        &mut out2,
    );
    w2.release_all(&mut out2);
    out.send.extend(out2.send);
    assert_eq!(
        points(&out.send, 1),
        [(0, 1.0), (30 * S, 1.5), (100 * S, 2.0)]
    );
}

#[test]
fn a_short_gap_of_a_fast_series_is_filled_while_another_series_lags() {
    // The vmagent test's shape: 2 s scrape, 8 s delay, ticks 33 then 41
    // (35, 37, 39 missing), another series arriving up to 6.5 s late.
    let mut w = Windows::new(Settings {
        delay: 8 * S,
        default_interval: 2 * S,
        ..settings(OnLate::Drop, OnGap::Interpolate)
    });
    let mut input = Vec::new();
    let mut offset = 0;
    for t in (1..=61).step_by(2) {
        if !(35..=39).contains(&t) {
            input.push((offset, 1, t * S, t as f64));
            offset += 1;
        }
        let lagged = t - 5;
        if lagged > 0 {
            input.push((offset, 2, lagged * S, lagged as f64));
            offset += 1;
        }
    }
    let out = run(&mut w, &input);
    let got: Vec<i64> = points(&out.send, 1).iter().map(|p| p.0 / S).collect();
    let want: Vec<i64> = (1..=51).step_by(2).collect();
    assert_eq!(&got[..want.len()], &want[..], "35, 37, 39 filled");
}

#[test]
fn fills_leave_as_the_watermark_passes_them_not_with_the_closing_sample() {
    // 2 s scrape, 8 s delay: 33 s, then 41 s closes a gap (35, 37, 39 s
    // missing). 43 s moves the watermark to 35 s: the 35 s fill leaves,
    // 41 s itself only once 49 s arrives.
    let mut w = Windows::new(Settings {
        delay: 8 * S,
        default_interval: 2 * S,
        ..settings(OnLate::Drop, OnGap::Interpolate)
    });
    let mut input: Vec<(i64, u64, i64, f64)> = (1..=33)
        .step_by(2)
        .map(|t| (t, 1, t * S, t as f64))
        .collect();
    input.push((41, 1, 41 * S, 41.0));
    let out = run(&mut w, &input);
    assert_eq!(points(&out.send, 1).last(), Some(&(33 * S, 33.0)));
    assert_eq!(w.held_samples(), 4, "three fills and 41 s");
    assert_eq!(w.holds_from(), Some(41), "fills are held under offset 41");
    let out = run(&mut w, &[(43, 1, 43 * S, 43.0)]);
    assert_eq!(points(&out.send, 1), [(35 * S, 35.0)]);
    let stats = w.take_stats();
    assert_eq!(
        (stats.synthesized, stats.gaps),
        (1, 0),
        "the gap closes at 41 s"
    );
    let out = run(&mut w, &[(45, 1, 45 * S, 45.0), (47, 1, 47 * S, 47.0)]);
    assert_eq!(points(&out.send, 1), [(37 * S, 37.0), (39 * S, 39.0)]);
    // A real sample inside the gap after its fills began to leave is late.
    let out = run(&mut w, &[(48, 1, 38 * S, 38.5), (49, 1, 49 * S, 49.0)]);
    assert_eq!(points(&out.send, 1), [(41 * S, 41.0)]);
    let stats = w.take_stats();
    assert_eq!((stats.late, stats.gaps, stats.synthesized), (1, 1, 2));
    let gaps = w.take_changes().gaps;
    assert_eq!(
        (
            gaps[0].start,
            gaps[0].end,
            gaps[0].missing,
            gaps[0].synthesized
        ),
        (33 * S, 41 * S, 3, 3)
    );
}

#[test]
fn a_sample_arriving_inside_a_held_fill_redraws_both_sides() {
    // 0 s and 150 s (four 30 s fills) held; then 90 s arrives: the fills
    // are redrawn on 0 → 90 s (30, 60 s) and 90 → 150 s (no gap: 2 intervals).
    let mut w = Windows::new(Settings {
        delay: 200 * S,
        ..settings(OnLate::Drop, OnGap::Interpolate)
    });
    let mut out = run(
        &mut w,
        &[(0, 1, 0, 0.0), (1, 1, 150 * S, 150.0), (2, 1, 90 * S, 30.0)],
    );
    w.release_all(&mut out);
    assert_eq!(
        points(&out.send, 1),
        [
            (0, 0.0),
            (30 * S, 10.0),
            (60 * S, 20.0),
            (90 * S, 30.0),
            (150 * S, 150.0)
        ]
    );
    assert_eq!(w.held_samples(), 0);
    assert_eq!(w.holds_from(), None);
    assert_eq!(w.take_stats().synthesized, 2);
}

/// A round of more series than one release may take leaves over the next
/// calls (each bounded, so one store's changes are), every sample once and
/// each series in order; the position bound follows what is still held.
#[test]
fn a_big_round_leaves_in_bounded_releases() {
    let n = RELEASE_MIN as u64 * 3;
    let mut w = Windows::new(settings(OnLate::Drop, OnGap::None));
    let mut out = Emit::default();
    for hash in 0..n {
        w.ingest(0, hash, labels, [Point { ts: 0, value: 1.0 }], &mut out);
    }
    w.release(&mut out);
    assert_eq!(out.samples(), 0, "held");
    // One more record, past the delay: everything of round 0 is due.
    w.ingest(
        1,
        0,
        labels,
        [Point {
            ts: 61 * S,
            value: 2.0,
        }],
        &mut out,
    );
    w.release(&mut out);
    assert_eq!(out.samples(), RELEASE_MIN, "one budget");
    assert!(w.backlog());
    assert_eq!(w.holds_from(), Some(0), "round 0 is still partly held");
    let mut calls = 1;
    while w.backlog() {
        w.release(&mut out);
        calls += 1;
    }
    assert_eq!(calls, 3);
    assert_eq!(out.samples() as u64, n, "every sample of round 0 once");
    assert_eq!(w.holds_from(), Some(1));
    assert_eq!(w.take_changes().series.len() as u64, n);
    // Twice what was taken in, when that is more than the minimum.
    let mut out = Emit::default();
    for hash in 0..n {
        w.ingest(
            2,
            hash,
            labels,
            [Point {
                ts: 200 * S,
                value: 3.0,
            }],
            &mut out,
        );
    }
    w.release(&mut out);
    assert_eq!(out.samples(), 1, "the 61 s sample: the 200 s ones are held");
    assert!(!w.backlog());
    let mut out = Emit::default();
    for hash in 0..n {
        w.ingest(
            3,
            hash,
            labels,
            [Point {
                ts: 300 * S,
                value: 4.0,
            }],
            &mut out,
        );
    }
    w.release(&mut out);
    assert_eq!(out.samples() as u64, n, "2 x n may leave after n taken in");
}
