//! A real Prometheus (Debian package) remote-writes to the gateway.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{create_topic, free_port, read_topic, unique, write_file};
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
    let topic = unique("prometheus");
    create_topic(&topic, 1).await;
    let gateway = start_gateway(&topic, &[]).await;
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
}
