//! A real Prometheus (Debian package) remote-writes to the gateway; a
//! router reads what it wrote. Both read Prometheus' requests with the
//! zero-copy reader, as the reader counter shows.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{free_port, http_get, read_topic, write_file};
use crate::gateway::{decode_record, start_gateway};

struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_remote_writes_its_own_series_into_the_ingress_topic() {
    let setup = crate::router::setup(1, 1, 4, "").await;
    let topic = setup.ingress.clone();
    let gateway = start_gateway(&topic, &[]).await;
    let router = crate::router::start_router(&setup).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = write_file(
        dir.path(),
        "prometheus.yml",
        &format!(
            "global:\n  scrape_interval: 1s\n  external_labels:\n    test_run: \"{topic}\"\n\
             scrape_configs:\n  - job_name: self\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n\
             remote_write:\n  - url: http://{}/api/v1/write\n    queue_config:\n      batch_send_deadline: 1s\n      max_shards: 1\n",
            gateway.addr
        ),
    );
    let _prometheus = Prometheus(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("prometheus.log")).expect("log"))
            .spawn()
            .expect("prometheus is installed (Debian package prometheus)"),
    );

    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let found = read_topic(&topic).iter().any(|m| {
            let (_, req) = decode_record(m);
            req.timeseries.iter().any(|ts| {
                let label = |n: &str| {
                    ts.labels
                        .iter()
                        .find(|l| l.name == n)
                        .map(|l| l.value.as_str())
                };
                label("__name__") == Some("up")
                    && label("job") == Some("self")
                    && label("test_run") == Some(topic.as_str())
                    && ts.samples.iter().any(|s| s.value == 1.0)
            })
        });
        if found {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no up{{job=\"self\"}} from prometheus in the ingress topic after 120 s\nprometheus log:\n{}\ngateway log:\n{}",
            std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default(),
            gateway.log()
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    // Prometheus' requests take the zero-copy reader in both roles; only
    // its metadata-only requests (every minute) take prost's.
    let deadline = Instant::now() + Duration::from_secs(30);
    for (role, process) in [("gateway", &gateway), ("router", &router)] {
        loop {
            let metrics = http_get(&format!("http://{}/metrics", process.addr))
                .await
                .expect("metrics")
                .body;
            let read = |reader: &str| {
                let start = format!(
                    "streamroute_remote_write_requests_read_total{{role=\"{role}\",reader=\"{reader}\"}}"
                );
                metrics
                    .lines()
                    .find(|l| l.starts_with(&start))
                    .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                    .unwrap_or(0.0)
            };
            let (fast, prost) = (read("fast"), read("prost"));
            if fast > 0.0 && fast > prost {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{role}: {fast} requests through the fast reader, {prost} through prost:\n{metrics}"
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}
