//! Egress positions when the disk misbehaves, against the live broker,
//! vmagent and VictoriaMetrics: a state folder deleted while egress runs
//! (recreated at once) and while it is down (resumes from the offsets
//! committed to Kafka), a full disk (not ready,
//! counted, recovers by itself once space returns) and an interrupted sled
//! snapshot left on disk (removed, start works). Every test counts each
//! sample at the receiver: every one exactly once.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rdkafka::producer::FutureProducer;

use crate::common::{http_get, show, streamroute, Process};
use crate::egress::{
    metric_value, produce_task, recent_ms, request, setup, setup_in, start_egress, vm_samples,
    vmagent, wait_in_vm, Setup,
};
use crate::router::producer;

/// Series per record; records per partition and phase.
const SERIES: usize = 50;
const RECORDS: usize = 6;

/// Writes phase `phase` (RECORDS records of SERIES series per partition,
/// ids distinct across phases) and adds its samples to `want`.
async fn phase(
    producer: &FutureProducer,
    setup: &Setup,
    name: &str,
    ts: i64,
    phase: usize,
    want: &mut BTreeSet<(String, i64)>,
) {
    for k in 0..RECORDS {
        for p in 0..2 {
            let first = ((phase * RECORDS + k) * 2 + p) * SERIES;
            produce_task(
                producer,
                &setup.tasks,
                p as i32,
                &request(name, first, SERIES, ts),
            )
            .await;
            want.extend((first..first + SERIES).map(|i| (i.to_string(), ts)));
        }
    }
}

/// Waits a little for stragglers (a replay would arrive after the newest
/// samples' requests), then asserts VictoriaMetrics holds `want`, each once.
async fn assert_exactly_once(name: &str, want: &BTreeSet<(String, i64)>, egress: &Process) {
    wait_in_vm(name, want, Duration::from_secs(30), egress).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let got: BTreeMap<(String, i64), usize> = vm_samples(name).await;
    let keys: BTreeSet<_> = got.keys().cloned().collect();
    assert_eq!(keys, *want, "exactly the samples written");
    let duplicates: usize = got.values().map(|n| n - 1).sum();
    assert_eq!(
        duplicates,
        0,
        "{duplicates} duplicate samples in VictoriaMetrics:\n{}",
        egress.log()
    );
}

async fn metrics_of(egress: &Process) -> String {
    http_get(&format!("http://{}/metrics", egress.addr))
        .await
        .expect("metrics")
        .body
}

async fn ready_status(egress: &Process) -> (u16, String) {
    let r = http_get(&format!("http://{}/-/ready", egress.addr))
        .await
        .expect("ready");
    (r.status, r.body)
}

async fn lost_state_dir_resumes_from_the_kafka_committed_offsets(start_from: &str) {
    let extra = format!(
        "start_from = \"{start_from}\"\nmax_samples_per_send = 100\ncommit_interval = \"200ms\"\n"
    );
    let setup = setup(2, &vmagent(), &extra).await;
    let name = format!(
        "sr_it_lost_state_{start_from}_{}",
        uuid::Uuid::new_v4().simple()
    );
    let (producer, ts) = (producer(), recent_ms());
    let mut want = BTreeSet::new();
    // Started before anything is written, so `latest` misses nothing.
    let mut egress = start_egress(&setup).await;
    phase(&producer, &setup, &name, ts, 0, &mut want).await;
    wait_in_vm(&name, &want, Duration::from_secs(30), &egress).await;

    // The state folder disappears while egress runs (a lost disk): egress
    // notices, recreates it with the positions in memory, and goes on.
    std::fs::remove_dir_all(&setup.state).expect("delete the state folder");
    phase(&producer, &setup, &name, ts, 1, &mut want).await;
    wait_in_vm(&name, &want, Duration::from_secs(30), &egress).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !setup.state.join("db").exists() {
        assert!(
            Instant::now() < deadline,
            "the state folder was not recreated:\n{}",
            egress.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        egress.log().contains("deleted while egress runs"),
        "{}",
        egress.log()
    );
    let metrics = metrics_of(&egress).await;
    assert!(
        metric_value(
            &metrics,
            "streamroute_egress_state_errors_total{op=\"lost\"}"
        ) >= 1.0,
        "{metrics}"
    );
    assert!(egress.terminate().success(), "{}", egress.log());

    // Lost again while egress is down (the disk replaced): sled has nothing.
    std::fs::remove_dir_all(&setup.state).expect("delete the state folder");

    // Written while egress is down: a restart at `latest` would skip it,
    // a restart at `earliest` would replay phases 0 and 1.
    phase(&producer, &setup, &name, ts, 2, &mut want).await;
    let egress = start_egress(&setup).await;
    assert_exactly_once(&name, &want, &egress).await;
    assert!(
        egress
            .log()
            .contains("resuming from the offset committed to kafka"),
        "{}",
        egress.log()
    );
    let metrics = metrics_of(&egress).await;
    assert_eq!(
        metric_value(&metrics, "streamroute_egress_resumed_from_kafka_total{"),
        2.0,
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_state_dir_is_recreated_mid_run_and_resumes_from_kafka_with_start_from_earliest_replaying_nothing(
) {
    lost_state_dir_resumes_from_the_kafka_committed_offsets("earliest").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_state_dir_is_recreated_mid_run_and_resumes_from_kafka_with_start_from_latest_skipping_nothing(
) {
    lost_state_dir_resumes_from_the_kafka_committed_offsets("latest").await;
}

/// A small tmpfs mounted for one test; unmounted when dropped, even when
/// the test fails.
struct Tmpfs {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("mnt");
        std::fs::create_dir(&path).expect("mount point");
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .output()
            .expect("mount");
        assert!(
            output.status.success(),
            "mount tmpfs (the test needs root): {}",
            show(&output)
        );
        Tmpfs { path, _dir: dir }
    }

    /// Writes a file until the filesystem is full; returns its path.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.path.join("filler");
        let mut file = std::fs::File::create(&path).expect("filler");
        let chunk = vec![0u8; 4096];
        while file.write_all(&chunk).is_ok() {}
        let _ = file.sync_all();
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            // Still busy (a process of a failed test): detach it now, freed when released.
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

async fn wait_ready_status(egress: &Process, want: u16, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let (status, body) = ready_status(egress).await;
        if status == want {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "/-/ready did not answer {want} within {within:?} (last {status} {body}):\n{}",
            egress.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_makes_egress_not_ready_and_counted_holds_positions_and_recovers_by_itself() {
    let disk = Tmpfs::mount("4m");
    let state = disk.path.join("state");
    let setup = setup_in(2, &vmagent(), "max_samples_per_send = 50\n", Some(&state)).await;
    let name = format!("sr_it_disk_full_{}", uuid::Uuid::new_v4().simple());
    let (producer, ts) = (producer(), recent_ms());
    let mut want = BTreeSet::new();
    let mut egress = start_egress(&setup).await;
    phase(&producer, &setup, &name, ts, 0, &mut want).await;
    wait_in_vm(&name, &want, Duration::from_secs(30), &egress).await;

    let filler = disk.fill();
    // Records keep coming while the disk is full.
    for n in 1..4 {
        phase(&producer, &setup, &name, ts, n, &mut want).await;
    }
    let body = wait_ready_status(&egress, 503, Duration::from_secs(30)).await;
    assert!(body.contains("egress"), "{body}");
    let metrics = metrics_of(&egress).await;
    assert!(
        metric_value(&metrics, "streamroute_egress_state_errors_total{") >= 1.0,
        "{metrics}"
    );
    assert!(
        egress.log().contains("egress state failed"),
        "{}",
        egress.log()
    );
    // The partitions wait: nothing more is sent while positions cannot be saved.
    let sent = |m: &str| metric_value(m, "streamroute_egress_samples_total{");
    let before = sent(&metrics);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        sent(&metrics_of(&egress).await),
        before,
        "egress went on sending while its positions could not be saved"
    );
    assert!(before < want.len() as f64, "everything was sent although positions could not be saved (or the disk filled too late to prove anything)");

    // Space returns: no restart, no manual step.
    std::fs::remove_file(&filler).expect("free space");
    wait_ready_status(&egress, 200, Duration::from_secs(30)).await;
    assert_exactly_once(&name, &want, &egress).await;

    // A later start works (no corrupt snapshot left behind) and resumes from sled.
    assert!(egress.terminate().success(), "{}", egress.log());
    phase(&producer, &setup, &name, ts, 4, &mut want).await;
    let egress = start_egress(&setup).await;
    assert_exactly_once(&name, &want, &egress).await;
    assert!(
        !egress.log().contains("committed to kafka"),
        "sled kept its positions:\n{}",
        egress.log()
    );
}

fn leftover(state: &Path) -> PathBuf {
    // What a full disk leaves during sled's snapshot at open: it sorts
    // after every complete snapshot, so sled would read it as the newest.
    let path = state.join("snap.FFFFFFFFFFFFFFFF.generating");
    std::fs::write(&path, b"").expect("leftover snapshot");
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn a_leftover_empty_snapshot_is_removed_and_start_and_inspect_work() {
    let setup = setup(2, &vmagent(), "max_samples_per_send = 100\n").await;
    let name = format!("sr_it_snapshot_{}", uuid::Uuid::new_v4().simple());
    let (producer, ts) = (producer(), recent_ms());
    let mut want = BTreeSet::new();
    phase(&producer, &setup, &name, ts, 0, &mut want).await;
    let mut egress = start_egress(&setup).await;
    wait_in_vm(&name, &want, Duration::from_secs(30), &egress).await;
    assert!(egress.terminate().success(), "{}", egress.log());

    let file = leftover(&setup.state);
    let output = streamroute(
        &[
            "inspect",
            "offsets",
            "--state",
            setup.state.to_str().expect("utf-8"),
        ],
        &[],
    );
    assert!(output.status.success(), "{}", show(&output));
    let text = String::from_utf8_lossy(&output.stdout);
    for p in 0..2 {
        assert!(
            text.contains(&format!("{}\t{p}\t{RECORDS}", setup.tasks)),
            "{text}"
        );
    }
    assert!(!file.exists(), "inspect removed the leftover");

    let file = leftover(&setup.state);
    phase(&producer, &setup, &name, ts, 1, &mut want).await;
    let egress = start_egress(&setup).await;
    assert_exactly_once(&name, &want, &egress).await;
    assert!(!file.exists());
    assert!(
        egress
            .log()
            .contains("removed an interrupted sled snapshot"),
        "{}",
        egress.log()
    );
    assert!(
        !egress.log().contains("committed to kafka"),
        "resumed from sled, not from Kafka:\n{}",
        egress.log()
    );
}
