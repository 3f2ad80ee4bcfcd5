//! vmagent and VictoriaMetrics v1.151.0 (built by scripts/vm-modern.sh,
//! which scripts/test.sh runs) started by a test on free ports, each with
//! its own data folder, killed when dropped. Debian's 1.79 has no stream
//! aggregation, so the aggregation tests need these.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{free_port, http_get};

/// The version scripts/vm-modern.sh builds.
const VERSION: &str = "v1.151.0";

/// The binary named by `env` (default: where scripts/vm-modern.sh puts it),
/// checked to be `VERSION`.
fn modern_bin(env: &str, name: &str) -> PathBuf {
    let path = std::env::var_os(env).map_or_else(
        || {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(".cache/go/bin")
                .join(name)
        },
        PathBuf::from,
    );
    let version = Command::new(&path)
        .arg("-version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    match version {
        Ok(v) if v.ends_with(VERSION) => path,
        Ok(v) => panic!(
            "{env}: {} reports {v:?}, not {VERSION}; run scripts/vm-modern.sh build",
            path.display()
        ),
        Err(e) => panic!(
            "{env}: cannot run {} ({e}): {name} {VERSION} is missing; run \
             scripts/vm-modern.sh build (scripts/test.sh does) or set {env}",
            path.display()
        ),
    }
}

/// One running vmagent or victoria-metrics.
pub struct Daemon {
    child: Child,
    name: String,
    /// Its HTTP port on 127.0.0.1 (read it after [`Daemon::wait_healthy`],
    /// which may move it).
    pub port: u16,
    log: PathBuf,
    /// How it was started, to start it again on another port.
    bin: PathBuf,
    dir: PathBuf,
    args: Vec<String>,
}

/// How many times a daemon whose free port was taken by another process
/// before it bound it is started again on a new one.
const PORT_RETRIES: usize = 5;

impl Daemon {
    /// Starts `bin` with `args` plus `-httpListenAddr` on a free port, its
    /// output in `dir/<name>.log`. Call [`Daemon::wait_healthy`] next.
    fn spawn(bin: &Path, name: &str, dir: &Path, args: &[String]) -> Daemon {
        let port = free_port();
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).expect("log file");
        let child = Command::new(bin)
            .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log file"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        Daemon {
            child,
            name: name.to_string(),
            port,
            log,
            bin: bin.to_path_buf(),
            dir: dir.to_path_buf(),
            args: args.to_vec(),
        }
    }

    /// Waits until `/health` answers 200 from this daemon. Tests run in
    /// parallel, so another process may bind the free port first: the
    /// daemon then exits at once, and it is started again on a new port.
    pub async fn wait_healthy(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut retries = 0;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                if retries < PORT_RETRIES && self.log().contains("address already in use") {
                    retries += 1;
                    let (bin, name, dir, args) = (
                        self.bin.clone(),
                        self.name.clone(),
                        self.dir.clone(),
                        self.args.clone(),
                    );
                    *self = Daemon::spawn(&bin, &name, &dir, &args);
                    continue;
                }
                panic!("{} exited with {status}:\n{}", self.name, self.log());
            }
            if let Ok(r) = http_get(&format!("{}/health", self.url())).await {
                // A daemon that cannot bind exits within milliseconds:
                // still running a moment later, the answer was its own.
                tokio::time::sleep(Duration::from_millis(300)).await;
                if r.status == 200 && matches!(self.child.try_wait(), Ok(None)) {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{} not healthy within 30 s:\n{}",
                self.name,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Its remote-write URL.
    pub fn write_url(&self) -> String {
        format!("{}/api/v1/write", self.url())
    }

    /// Its output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A single-node VictoriaMetrics without deduplication (so two writers of
/// one series at one timestamp leave two samples) and without the query
/// latency offset (so fresh samples are visible at once).
pub fn victoria_metrics(dir: &Path, name: &str) -> Daemon {
    victoria_metrics_with(dir, name, &[])
}

/// [`victoria_metrics`] with more flags (`-promscrape.config=…`, say).
pub fn victoria_metrics_with(dir: &Path, name: &str, extra: &[String]) -> Daemon {
    let data = dir.join(format!("{name}-data"));
    let mut args = vec![
        format!("-storageDataPath={}", data.display()),
        "-retentionPeriod=100y".into(),
        "-dedup.minScrapeInterval=0".into(),
        "-search.latencyOffset=0s".into(),
        "-search.disableCache".into(),
    ];
    args.extend_from_slice(extra);
    Daemon::spawn(
        &modern_bin("VM_MODERN_BIN", "victoria-metrics"),
        name,
        dir,
        &args,
    )
}

/// A vmagent running the stream aggregation file `aggregation` (matched
/// input dropped, the default) and writing to `remote_write`.
pub fn vmagent(dir: &Path, name: &str, aggregation: &Path, remote_write: &str) -> Daemon {
    let data = dir.join(format!("{name}-queue"));
    Daemon::spawn(
        &modern_bin("VMAGENT_MODERN_BIN", "vmagent"),
        name,
        dir,
        &[
            format!("-streamAggr.config={}", aggregation.display()),
            format!("-remoteWrite.url={remote_write}"),
            format!("-remoteWrite.tmpDataPath={}", data.display()),
            "-remoteWrite.flushInterval=200ms".into(),
        ],
    )
}

/// One exported series: its labels and its samples in time order
/// (duplicates kept).
#[derive(Debug, Clone)]
pub struct Exported {
    pub labels: BTreeMap<String, String>,
    pub samples: Vec<(i64, f64)>,
}

/// Every series `selector` matches, raw, from `/api/v1/export`.
pub async fn export(vm: &Daemon, selector: &str) -> Vec<Exported> {
    let url = format!(
        "{}/api/v1/export?match%5B%5D={}",
        vm.url(),
        urlencode(selector)
    );
    let r = http_get(&url).await.expect("export");
    assert_eq!(r.status, 200, "export from {}: {}", vm.name, r.body);
    r.body
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("export json line");
            let labels = v["metric"]
                .as_object()
                .expect("metric")
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect();
            let values = v["values"].as_array().expect("values");
            let timestamps = v["timestamps"].as_array().expect("timestamps");
            let samples = timestamps
                .iter()
                .zip(values)
                .map(|(t, v)| (t.as_i64().expect("ts"), v.as_f64().expect("value")))
                .collect();
            Exported { labels, samples }
        })
        .collect()
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
