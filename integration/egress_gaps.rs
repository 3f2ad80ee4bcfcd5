//! Seeing the gaps: `GET /api/v1/gaps` on the running egress role and
//! `streamroute inspect gaps --state DIR` on its stopped state folder, with
//! `match` and `since`. The expected gaps follow from the timestamps sent
//! (a gap from the last sample before to the first after, the samples of
//! the 10 s interval in between missing), never from the code.

use streamroute::remote_write::proto::v1::{Label, Sample, TimeSeries, WriteRequest};

use crate::common::{http_get, show, streamroute, unique};
use crate::egress::{produce_task, recent_ms, setup, start_egress};
use crate::egress_windows::capture;
use crate::router::producer;

fn sample(name: &str, id: &str, job: &str, ts: i64) -> WriteRequest {
    WriteRequest {
        timeseries: vec![TimeSeries {
            labels: vec![
                Label::new("__name__", name),
                Label::new("id", id),
                Label::new("job", job),
            ],
            samples: vec![Sample {
                value: 1.0,
                timestamp: ts,
            }],
            ..Default::default()
        }],
        metadata: vec![],
    }
}

async fn gaps(addr: std::net::SocketAddr, query: &str) -> serde_json::Value {
    let r = http_get(&format!("http://{addr}/api/v1/gaps?{query}"))
        .await
        .expect("gaps");
    assert_eq!(r.status, 200, "{}", r.body);
    serde_json::from_str(&r.body).expect("json")
}

#[tokio::test(flavor = "multi_thread")]
async fn gaps_are_listed_with_their_series_by_the_api_and_inspect() {
    let (addr, arrived) = capture().await;
    let setup = setup(
        1,
        &format!("http://{addr}/api/v1/write"),
        "max_samples_per_send = 50\n[egress.windows]\ndelay = \"1s\"\n\
         default_interval = \"10s\"\ngap_factor = 2.0\n",
    )
    .await;
    let mut egress = start_egress(&setup).await;
    let (name, t) = (unique("sr_gaps"), recent_ms());
    let producer = producer();
    // a (job x): 0, 10 s, then 50 s: 20, 30 and 40 s missing.
    // b (job y): 0, 10 s, then 60 s: 20 to 50 s missing.
    // c (job z) at 100 s moves the watermark past both.
    for (id, job, ts) in [
        ("a", "x", t),
        ("b", "y", t),
        ("a", "x", t + 10_000),
        ("b", "y", t + 10_000),
        ("a", "x", t + 50_000),
        ("b", "y", t + 60_000),
        ("c", "z", t + 100_000),
    ] {
        produce_task(&producer, &setup.tasks, 0, &sample(&name, id, job, ts)).await;
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let all = gaps(egress.addr, "since=1h").await;
        if all["data"].as_array().map_or(0, Vec::len) >= 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{all}\n{:?}\n{}",
            arrived.lock().expect("lock"),
            egress.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let x = gaps(egress.addr, "match%5B%5D=%7Bjob%3D%22x%22%7D&since=1h").await;
    let rows = x["data"].as_array().expect("data");
    assert_eq!(rows.len(), 1, "only job x: {x}");
    let row = &rows[0];
    assert_eq!(row["series"]["id"], "a");
    assert_eq!(row["series"]["job"], "x");
    assert_eq!(row["series"]["__name__"], name.as_str());
    assert_eq!(
        (&row["start_ms"], &row["end_ms"], &row["missing"]),
        (
            &serde_json::json!(t + 10_000),
            &serde_json::json!(t + 50_000),
            &serde_json::json!(3)
        ),
        "{row}"
    );
    assert_eq!(row["topic"], setup.tasks.as_str());
    // The samples were stamped about ten minutes ago: none ended in the last minute.
    let recent = gaps(egress.addr, "since=1m").await;
    assert_eq!(recent["data"], serde_json::json!([]), "{recent}");
    let bad = http_get(&format!("http://{}/api/v1/gaps?match={{job=", egress.addr))
        .await
        .expect("bad");
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(bad.body.contains("match: "), "{}", bad.body);

    egress.terminate();
    let state = setup.state.to_str().expect("utf-8");
    let out = streamroute(
        &[
            "inspect",
            "gaps",
            "--state",
            state,
            "--match",
            "{job=\"y\"}",
            "--since",
            "1h",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "a header and job y's gap: {}", show(&out));
    let cols: Vec<&str> = lines[1].split('\t').collect();
    assert_eq!(cols[2], "4", "20, 30, 40 and 50 s missing: {}", lines[1]);
    assert_eq!(cols[6], format!("{name}{{id=\"b\",job=\"y\"}}"));
    let out = streamroute(
        &["inspect", "gaps", "--state", state, "--match", "{job="],
        &[],
    );
    assert!(!out.status.success(), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("match: "),
        "{}",
        show(&out)
    );
}
