//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;

/// The broker the tests use.
pub fn bootstrap() -> String {
    std::env::var("KAFKA_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// A name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    format!("it.{prefix}.{}", uuid::Uuid::new_v4().simple())
}

/// The streamroute binary built for these tests.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_streamroute"))
}

/// Runs the binary with `args`, a clean environment as far as STREAMROUTE_*
/// goes, and the test broker.
pub fn streamroute(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(binary());
    for (key, _) in std::env::vars() {
        if key.starts_with("STREAMROUTE_") {
            command.env_remove(key);
        }
    }
    command
        .env("STREAMROUTE_KAFKA__BOOTSTRAP_SERVERS", bootstrap())
        .env("RUST_LOG", "warn");
    for (key, value) in env {
        command.env(key, value);
    }
    command
        .args(args)
        .output()
        .expect("the streamroute binary runs")
}

/// stdout and stderr of an output, for assertion messages.
pub fn show(output: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// An admin client on the test broker.
pub fn admin() -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create()
        .expect("admin client")
}

/// Creates a topic and waits until metadata shows it.
pub async fn create_topic(name: &str, partitions: i32) {
    create_topic_on(&bootstrap(), name, partitions).await
}

/// Creates a topic on the cluster at `bootstrap`.
pub async fn create_topic_on(bootstrap: &str, name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client");
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let results = admin
        .create_topics([&topic], &AdminOptions::new())
        .await
        .expect("create_topics");
    for r in results {
        r.expect("topic created");
    }
    for _ in 0..100 {
        if let Ok(md) = admin
            .inner()
            .fetch_metadata(Some(name), Duration::from_secs(5))
        {
            if md
                .topics()
                .first()
                .is_some_and(|t| t.error().is_none() && t.partitions().len() == partitions as usize)
            {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("topic {name} never showed {partitions} partitions");
}

/// Waits until metadata shows `partitions` partitions of `topic`.
pub async fn wait_for_partitions(topic: &str, partitions: usize) {
    let admin = admin();
    for _ in 0..100 {
        if let Ok(md) = admin
            .inner()
            .fetch_metadata(Some(topic), Duration::from_secs(5))
        {
            if md
                .topics()
                .first()
                .is_some_and(|t| t.error().is_none() && t.partitions().len() == partitions)
            {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("topic {topic} never showed {partitions} partitions");
}

/// Writes a file and returns its path.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write file");
    path
}

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A streamroute process started for one test; killed when dropped.
pub struct Process {
    child: std::process::Child,
    /// The address it serves HTTP on.
    pub addr: std::net::SocketAddr,
    /// The certificate it serves HTTPS with, when `env` configured TLS.
    tls_cert: Option<PathBuf>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Process {
    /// Starts `streamroute <args>` with `env`, its HTTP listener on a free
    /// port (`STREAMROUTE_<listen_key>`), and waits for `/-/ready` (over
    /// HTTPS when `env` sets a `…__TLS__CERT_FILE`).
    pub async fn start(args: &[&str], listen_env: &str, env: &[(&str, String)]) -> Process {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("streamroute.log");
        let addr: std::net::SocketAddr =
            format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let mut command = Command::new(binary());
        for (key, _) in std::env::vars() {
            if key.starts_with("STREAMROUTE_") {
                command.env_remove(key);
            }
        }
        command
            .env("STREAMROUTE_KAFKA__BOOTSTRAP_SERVERS", bootstrap())
            .env(listen_env, addr.to_string())
            .env("RUST_LOG", "info,librdkafka=warn")
            .stdout(std::fs::File::create(&log).expect("log file"))
            .stderr(
                std::fs::File::options()
                    .append(true)
                    .open(&log)
                    .expect("log file"),
            );
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command.args(args).spawn().expect("spawn streamroute");
        let tls_cert = env
            .iter()
            .find(|(key, _)| key.ends_with("__TLS__CERT_FILE"))
            .map(|(_, v)| PathBuf::from(v));
        let mut process = Process {
            child,
            addr,
            tls_cert,
            log,
            _dir: dir,
        };
        process.wait_ready(Duration::from_secs(30)).await;
        process
    }

    /// Waits until `/-/ready` answers 200.
    pub async fn wait_ready(&mut self, within: Duration) {
        let deadline = std::time::Instant::now() + within;
        loop {
            let ready = match &self.tls_cert {
                None => http_get(&format!("http://{}/-/ready", self.addr)).await,
                Some(cert) => https_get(self.addr, cert, "/-/ready").await,
            };
            if let Ok(r) = ready {
                if r.status == 200 {
                    return;
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "streamroute exited with {status} before it was ready:\n{}",
                    self.log()
                );
            }
            assert!(
                std::time::Instant::now() < deadline,
                "streamroute not ready within {within:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        self.child.wait().expect("wait for streamroute")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP response read whole.
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: hyper::HeaderMap,
    /// Body as text (lossy).
    pub body: String,
}

/// POSTs `body` with `headers`.
pub async fn http_post(
    url: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Result<HttpResponse, String> {
    let mut request = hyper::Request::post(url);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let request = request
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    send(request).await
}

/// GETs `url`.
pub async fn http_get(url: &str) -> Result<HttpResponse, String> {
    let request = hyper::Request::get(url)
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .map_err(|e| e.to_string())?;
    send(request).await
}

async fn send(
    request: hyper::Request<http_body_util::Full<bytes::Bytes>>,
) -> Result<HttpResponse, String> {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let response = tokio::time::timeout(Duration::from_secs(30), client.request(request))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
    read_response(response).await
}

/// GETs `path` over HTTPS from `addr`, trusting only the certificate in `cert`.
pub async fn https_get(
    addr: std::net::SocketAddr,
    cert: &Path,
    path: &str,
) -> Result<HttpResponse, String> {
    let request = hyper::Request::get(path)
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .map_err(|e| e.to_string())?;
    https_send(addr, cert, request).await
}

/// POSTs `body` with `headers` to `path` over HTTPS, trusting only `cert`.
pub async fn https_post(
    addr: std::net::SocketAddr,
    cert: &Path,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Result<HttpResponse, String> {
    let mut request = hyper::Request::post(path);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let request = request
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    https_send(addr, cert, request).await
}

/// One request on a fresh TLS connection (ALPN http/1.1), verifying the
/// server against `cert` alone.
async fn https_send(
    addr: std::net::SocketAddr,
    cert: &Path,
    request: hyper::Request<http_body_util::Full<bytes::Bytes>>,
) -> Result<HttpResponse, String> {
    use rustls_pki_types::pem::PemObject;
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    let der = rustls_pki_types::CertificateDer::from_pem_file(cert)
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    roots.add(der).map_err(|e| e.to_string())?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let name = rustls_pki_types::ServerName::from(addr.ip());
        let tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| format!("tls handshake: {e}"))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        read_response(response).await
    };
    tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .map_err(|_| "timed out".to_string())?
}

async fn read_response(
    response: hyper::Response<hyper::body::Incoming>,
) -> Result<HttpResponse, String> {
    use http_body_util::BodyExt;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok(HttpResponse {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// Reads every record of `topic` up to its current end (read_committed).
pub fn read_topic(topic: &str) -> Vec<rdkafka::message::OwnedMessage> {
    read_topic_on(&bootstrap(), topic)
}

/// Reads every record of `topic` on the cluster at `bootstrap`.
pub fn read_topic_on(bootstrap: &str, topic: &str) -> Vec<rdkafka::message::OwnedMessage> {
    read_to_end(bootstrap, topic, "read_committed")
}

/// Every record of `topic` up to its high watermark, read_uncommitted:
/// records of aborted transactions included.
pub fn read_uncommitted(topic: &str) -> Vec<rdkafka::message::OwnedMessage> {
    read_to_end(&bootstrap(), topic, "read_uncommitted")
}

/// Reads every partition of `topic` to its current end with `isolation`.
fn read_to_end(
    bootstrap: &str,
    topic: &str,
    isolation: &str,
) -> Vec<rdkafka::message::OwnedMessage> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Offset, TopicPartitionList};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .create()
        .expect("consumer");
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let partitions: Vec<i32> = md.topics()[0].partitions().iter().map(|p| p.id()).collect();
    let mut ends = std::collections::HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in &partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, *p, Duration::from_secs(10))
            .expect("watermarks");
        if high > low {
            ends.insert(*p, high);
            tpl.add_partition_offset(topic, *p, Offset::Offset(low))
                .expect("tpl");
        }
    }
    let mut out = Vec::new();
    if ends.is_empty() {
        return out;
    }
    consumer.assign(&tpl).expect("assign");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    // Done when every partition's position reached its end. Positions, not
    // record offsets: transaction markers take offsets but are no records.
    loop {
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            out.push(message.expect("consume").detach());
            continue;
        }
        let positions = consumer.position().expect("position");
        let done = ends.iter().all(|(p, end)| {
            positions
                .find_partition(topic, *p)
                .and_then(|e| e.offset().to_raw())
                .is_some_and(|pos| pos >= *end)
        });
        if done {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "could not read {topic} to its end"
        );
    }
    out
}

/// One private broker at a time: several JVMs starting together on a
/// 2-core machine made start-ups time out, and it keeps their ports apart.
static PRIVATE_KAFKA: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A private Kafka broker started with scripts/kafka-local.sh on free
/// ports, for tests that stop and restart it. Stopped when dropped; tests
/// using one run one after the other.
pub struct PrivateKafka {
    /// host:port of the broker.
    pub bootstrap: String,
    port: u16,
    /// `KAFKA_SECURITY` for the script: plaintext or sasl_ssl.
    security: &'static str,
    dir: tempfile::TempDir,
    _turn: std::sync::MutexGuard<'static, ()>,
}

impl PrivateKafka {
    /// Starts a broker with its own data directory.
    pub fn start() -> PrivateKafka {
        PrivateKafka::start_with("plaintext")
    }

    /// Starts a broker whose client listener is SASL_SSL (see
    /// scripts/kafka-local.sh for its users and certificates).
    pub fn start_sasl_ssl() -> PrivateKafka {
        PrivateKafka::start_with("sasl_ssl")
    }

    fn start_with(security: &'static str) -> PrivateKafka {
        // A test that failed while holding the lock must not fail the others.
        let turn = PRIVATE_KAFKA
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let dir = tempfile::tempdir().expect("tempdir");
        // Below the ephemeral range, so client sockets do not take the port
        // (or the controller's, port + 1) between this check and the start.
        let port = (0..1000)
            .map(|_| rand::random::<u16>() % 10_000 + 20_000)
            .find(|p| {
                std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok()
                    && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok()
            })
            .expect("two free ports between 20000 and 30000");
        let kafka = PrivateKafka {
            bootstrap: format!("127.0.0.1:{port}"),
            port,
            security,
            dir,
            _turn: turn,
        };
        kafka.script("start");
        kafka
    }

    /// Runs `scripts/kafka-local.sh <action>` for this broker.
    pub fn script(&self, action: &str) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/kafka-local.sh");
        let output = Command::new("bash")
            .arg(script)
            .arg(action)
            .env_remove("KAFKA_BOOTSTRAP")
            .env("KAFKA_PORT", self.port.to_string())
            .env("KAFKA_SECURITY", self.security)
            .env("SR_RUN_DIR", self.dir.path())
            .output()
            .expect("run kafka-local.sh");
        assert!(
            output.status.success(),
            "kafka-local.sh {action} failed:\n{}",
            show(&output)
        );
    }
}

impl PrivateKafka {
    /// The CA certificate a SASL_SSL broker's clients trust.
    pub fn ca_file(&self) -> PathBuf {
        self.dir
            .path()
            .join(format!("kafka-{}/tls/ca.pem", self.port))
    }
}

impl Drop for PrivateKafka {
    fn drop(&mut self) {
        self.script("stop");
    }
}

impl Process {
    /// Kills the process with SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The ingress partitions of a router's last assignment, from its log.
pub fn last_assignment(router: &Process) -> std::collections::BTreeSet<i32> {
    let log = router.log();
    let Some(line) = log
        .lines()
        .rev()
        .find(|l| l.contains("ingress partitions assigned"))
    else {
        return std::collections::BTreeSet::new();
    };
    // Strip the ANSI colours of the text log format.
    let mut plain = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            chars.by_ref().find(|c| *c == 'm');
        } else {
            plain.push(c);
        }
    }
    let ids = plain
        .rsplit_once('[')
        .and_then(|(_, rest)| rest.split_once(']'))
        .map_or("", |(ids, _)| ids);
    ids.split(',')
        .filter_map(|id| id.trim().parse().ok())
        .collect()
}
