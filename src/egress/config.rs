//! Egress settings: which task-topic partitions this worker owns, where
//! each one is sent, batching, retries and the request's headers.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

use crate::problem::{Problem, Problems};

mod partitions;
pub use partitions::{PartitionSet, Partitions, PartitionsError, Target};

/// The egress role: task-topic partitions out to remote-write receivers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EgressConfig {
    /// Address of `/metrics` and the health endpoints of `streamroute egress`.
    pub listen: SocketAddr,
    /// The task topic to read.
    pub topic: String,
    /// Partitions this worker owns: `"all"`, a range `"0-3"`, one `"5"`, or a list `[0, 2]`.
    pub partitions: Partitions,
    /// Receiver per partition: a URL template where `{partition}` is
    /// replaced by the partition number, or a list of URLs indexed by
    /// partition; `http://` or `https://`.
    pub target: Target,
    /// PEM file of the CA certificate(s) that https receivers' certificates
    /// must chain to, instead of the system's roots (a private CA).
    pub tls_ca_file: Option<PathBuf>,
    /// Folder of the sled database holding the positions ("next offset to read").
    pub state_dir: PathBuf,
    /// How long a position may stay in memory before sled writes it to
    /// disk (at most 1m); `0s`, the default, flushes after every request:
    /// a crash resends at most one request per partition, for an fsync per
    /// request (measured in README.md).
    #[serde(with = "humantime_serde")]
    pub state_flush_every: Duration,
    /// Where a partition starts when neither sled nor the Kafka consumer
    /// group (`group_id`) holds a position for it: `earliest` or `latest`.
    pub start_from: StartFrom,
    /// Kafka consumer group the positions are also committed to (after
    /// they are on disk in sled, never ahead of it), so a lost `state_dir`
    /// resumes where it was instead of at `start_from`. Never joined: the
    /// partitions are assigned by `partitions`. Unset:
    /// `streamroute-egress.<topic>`. Give two egress deployments reading the
    /// same topic to different receivers different group ids.
    pub group_id: Option<String>,
    /// How often positions on disk are committed to Kafka (`group_id`);
    /// also committed at shutdown.
    #[serde(with = "humantime_serde")]
    pub commit_interval: Duration,
    /// A request is sent at this many samples (float and histogram)...
    pub max_samples_per_send: usize,
    /// ...or at this many bytes of uncompressed protobuf...
    pub max_bytes_per_send: usize,
    /// ...or this long after its first record arrived (default 50 ms: every
    /// millisecond here delays samples that stream aggregation downstream
    /// puts into windows by arrival time).
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// Requests in flight per partition at once (default 1). Above 1, each
    /// partition's series are spread over this many lanes by a hash of
    /// their labels, as Prometheus spreads them over its remote-write
    /// shards: a lane sends one request at a time, so every series' samples
    /// still arrive in order, and the stored position moves only past
    /// records every lane has delivered. Needs `windows.delay = "0s"`.
    pub max_in_flight: usize,
    /// How long one request may take before it counts as failed and is retried.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// First wait before retrying a failed request; doubles on each failure.
    #[serde(with = "humantime_serde")]
    pub retry_initial_backoff: Duration,
    /// Longest wait between retries (a receiver's Retry-After, in seconds
    /// or as an HTTP date, is honoured even when longer, up to 10 minutes).
    #[serde(with = "humantime_serde")]
    pub retry_max_backoff: Duration,
    /// Body encoding: `snappy`, or `zstd` (falls back to snappy by itself
    /// when the receiver refuses it).
    pub encoding: SendEncoding,
    /// HTTP basic authentication for the receiver.
    pub basic_auth: Option<BasicAuth>,
    /// Bearer token for the receiver (`Authorization: Bearer …`).
    pub bearer_token: Option<String>,
    /// Extra request headers, e.g. `{ "X-Env" = "prod" }`.
    pub headers: BTreeMap<String, String>,
    /// When set, the tenant carried from ingress (the record's `tenant`
    /// header) is sent in this header, e.g. `X-Scope-OrgID`; a request then
    /// never mixes tenants.
    pub forward_tenant_header: Option<String>,
    /// Delay and gap windows (`[egress.windows]`); off unless `delay` > 0s.
    pub windows: super::windows::WindowsConfig,
}

/// HTTP basic authentication.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
}

/// Where a partition without a stored position starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartFrom {
    /// The oldest retained record.
    Earliest,
    /// Only records written after the worker started.
    Latest,
}

/// Body encoding of the requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SendEncoding {
    /// Prometheus remote write 1.0.
    Snappy,
    /// The VictoriaMetrics variant.
    Zstd,
}

impl Default for EgressConfig {
    fn default() -> Self {
        EgressConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9203)),
            topic: "streamroute.tasks.default".into(),
            partitions: Partitions::Text("all".into()),
            target: Target::Template("http://127.0.0.1:8429/api/v1/write".into()),
            tls_ca_file: None,
            state_dir: PathBuf::from(".run/egress-state"),
            state_flush_every: Duration::ZERO,
            start_from: StartFrom::Earliest,
            group_id: None,
            commit_interval: Duration::from_secs(1),
            max_samples_per_send: 5_000,
            max_bytes_per_send: 4 << 20,
            flush_interval: Duration::from_millis(50),
            max_in_flight: 1,
            request_timeout: Duration::from_secs(30),
            retry_initial_backoff: Duration::from_millis(250),
            retry_max_backoff: Duration::from_secs(30),
            encoding: SendEncoding::Snappy,
            basic_auth: None,
            bearer_token: None,
            headers: BTreeMap::new(),
            forward_tenant_header: None,
            windows: super::windows::WindowsConfig::default(),
        }
    }
}

/// Longest `state_flush_every`: beyond it a crash resends too much.
const MAX_STATE_FLUSH: Duration = Duration::from_secs(60);
/// Longest linger, timeout or commit interval that is not a typo.
const MAX_INTERVAL: Duration = Duration::from_secs(600);
/// Longest wait between retries.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// Most samples in one request (vmagent's own limits are far below).
const MAX_SAMPLES_PER_SEND: usize = 10_000_000;
/// Most uncompressed bytes in one request.
const MAX_BYTES_PER_SEND: usize = 256 << 20;
/// Most requests in flight per partition.
const MAX_IN_FLIGHT: usize = 64;

impl EgressConfig {
    /// The Kafka consumer group of the positions.
    pub fn group_id(&self) -> String {
        self.group_id
            .clone()
            .unwrap_or_else(|| format!("streamroute-egress.{}", self.topic))
    }

    /// Problems, keys relative to `egress.`.
    pub fn problems(&self) -> Vec<Problem> {
        let mut out = Problems::default();
        if let Err(e) = crate::topics::check_topic_name(&self.topic) {
            out.push("topic", e.to_string());
        }
        let partitions = self.partitions.parse();
        if let Err(e) = &partitions {
            out.push("partitions", e.to_string());
        }
        out.check(
            !self.state_dir.as_os_str().is_empty(),
            "state_dir",
            "must not be empty",
        );
        out.check(
            !self.state_dir.is_file(),
            "state_dir",
            "is a file; name a folder",
        );
        let positive = "must be greater than zero";
        let at_most =
            |max: Duration| format!("must be at most {}", humantime::format_duration(max));
        out.check(
            self.max_samples_per_send > 0,
            "max_samples_per_send",
            positive,
        );
        out.check(
            self.max_samples_per_send <= MAX_SAMPLES_PER_SEND,
            "max_samples_per_send",
            format!("must be at most {MAX_SAMPLES_PER_SEND}"),
        );
        out.check(self.max_bytes_per_send > 0, "max_bytes_per_send", positive);
        out.check(
            self.max_bytes_per_send <= MAX_BYTES_PER_SEND,
            "max_bytes_per_send",
            format!("must be at most {MAX_BYTES_PER_SEND}"),
        );
        out.check(
            (1..=MAX_IN_FLIGHT).contains(&self.max_in_flight),
            "max_in_flight",
            format!("must be 1 to {MAX_IN_FLIGHT}"),
        );
        out.check(
            self.max_in_flight == 1 || !self.windows.enabled(),
            "max_in_flight",
            "must be 1 while windows.delay is above 0s (the windows release a partition's samples in one order)",
        );
        for (key, value) in [
            ("flush_interval", self.flush_interval),
            ("request_timeout", self.request_timeout),
            ("retry_initial_backoff", self.retry_initial_backoff),
            ("commit_interval", self.commit_interval),
        ] {
            out.check(!value.is_zero(), key, positive);
            out.check(value <= MAX_INTERVAL, key, at_most(MAX_INTERVAL));
        }
        out.check(
            self.state_flush_every <= MAX_STATE_FLUSH,
            "state_flush_every",
            at_most(MAX_STATE_FLUSH),
        );
        out.check(
            self.retry_max_backoff >= self.retry_initial_backoff,
            "retry_max_backoff",
            "must be at least retry_initial_backoff",
        );
        out.check(
            self.retry_max_backoff <= MAX_BACKOFF,
            "retry_max_backoff",
            at_most(MAX_BACKOFF),
        );
        if let Some(group) = &self.group_id {
            let ok = !group.trim().is_empty()
                && group.len() <= 255
                && !group.chars().any(char::is_control);
            out.check(
                ok,
                "group_id",
                "must be 1 to 255 characters, none of them control characters",
            );
        }
        out.check(
            !(self.basic_auth.is_some() && self.bearer_token.is_some()),
            "bearer_token",
            "set either basic_auth or bearer_token, not both",
        );
        for url in self.target.examples() {
            let ok = url.parse::<hyper::Uri>().is_ok_and(|u| {
                matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some()
            });
            out.check(
                ok,
                "target",
                format!("{url:?} is not an http:// or https:// URL"),
            );
        }
        if let Some(path) = &self.tls_ca_file {
            if let Err(e) = load_ca_file(path) {
                out.push("tls_ca_file", e.to_string());
            }
        }
        if let (Target::List(list), Ok(PartitionSet::Some(set))) = (&self.target, &partitions) {
            if let Some(p) = set.iter().find(|p| **p as usize >= list.len()) {
                out.check(
                    false,
                    "target",
                    format!("lists {} URL(s) but partition {p} is owned", list.len()),
                );
            }
        }
        for (name, value) in &self.headers {
            let ok = hyper::header::HeaderName::try_from(name.as_str()).is_ok()
                && hyper::header::HeaderValue::try_from(value.as_str()).is_ok();
            out.check(ok, format!("headers.{name}"), "is not a valid HTTP header");
        }
        if let Some(name) = &self.forward_tenant_header {
            out.check(
                hyper::header::HeaderName::try_from(name.as_str()).is_ok(),
                "forward_tenant_header",
                "is not a valid header name",
            );
        }
        out.extend_within("windows", self.windows.problems());
        out.into_vec()
    }
}

/// Why `egress.tls_ca_file` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CaFileError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not PEM.
    #[error("{} is not valid PEM: {source}", path.display())]
    Pem {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    /// The file holds no certificate.
    #[error("{} holds no certificate (expected a PEM \"BEGIN CERTIFICATE\" block)", .0.display())]
    Empty(PathBuf),
}

/// The CA certificates in a PEM file; at least one.
pub fn load_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, CaFileError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| match e {
            rustls_pki_types::pem::Error::Io(source) => CaFileError::Read {
                path: path.to_path_buf(),
                source,
            },
            source => CaFileError::Pem {
                path: path.to_path_buf(),
                source,
            },
        })?;
    if certs.is_empty() {
        return Err(CaFileError::Empty(path.to_path_buf()));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<PartitionSet, PartitionsError> {
        Partitions::Text(text.into()).parse()
    }

    #[test]
    fn partition_errors_say_what_is_wrong() {
        assert_eq!(
            parse("3-1").unwrap_err().to_string(),
            r#"range "3-1" is empty"#
        );
        assert_eq!(
            parse("1-y").unwrap_err(),
            PartitionsError::NotANumber("y".into())
        );
        assert_eq!(
            parse("0, x").unwrap_err().to_string(),
            r#""x" is not a partition number"#
        );
        assert_eq!(
            Partitions::One(-1).parse().unwrap_err().to_string(),
            "partition -1 is negative"
        );
        assert_eq!(
            Partitions::List(vec![]).parse().unwrap_err().to_string(),
            r#"names no partition; use "all", a range like "0-3" or a list"#
        );
    }

    #[test]
    fn partitions_parse_all_ranges_and_lists() {
        assert_eq!(parse("all"), Ok(PartitionSet::All));
        assert_eq!(parse("0-3"), Ok(PartitionSet::Some([0, 1, 2, 3].into())));
        assert_eq!(parse("5"), Ok(PartitionSet::Some([5].into())));
        assert_eq!(parse("0-1, 4"), Ok(PartitionSet::Some([0, 1, 4].into())));
        assert_eq!(
            Partitions::List(vec![2, 0, 2]).parse(),
            Ok(PartitionSet::Some([0, 2].into()))
        );
        assert!(parse("3-1").is_err());
        assert!(parse("x").is_err());
        assert_eq!(
            Partitions::One(3).parse(),
            Ok(PartitionSet::Some([3].into()))
        );
        assert!(Partitions::One(-1).parse().is_err());
        assert!(Partitions::List(vec![]).parse().is_err());
        assert!(Partitions::List(vec![-1]).parse().is_err());
    }

    #[test]
    fn targets_resolve_per_partition() {
        let t = Target::Template("http://vmagent-{partition}:8429/api/v1/write".into());
        assert_eq!(
            t.url(3).as_deref(),
            Some("http://vmagent-3:8429/api/v1/write")
        );
        let l = Target::List(vec!["http://a/".into(), "http://b/".into()]);
        assert_eq!(l.url(1).as_deref(), Some("http://b/"));
        assert_eq!(l.url(2), None);
    }

    #[test]
    fn problems_name_their_keys() {
        let config = EgressConfig {
            partitions: Partitions::Text("0-2".into()),
            target: Target::List(vec!["http://a/".into()]),
            retry_max_backoff: Duration::from_millis(1),
            ..EgressConfig::default()
        };
        let keys: Vec<String> = config.problems().into_iter().map(|p| p.key).collect();
        assert_eq!(keys, ["retry_max_backoff", "target"]);
    }

    #[test]
    fn max_in_flight_is_1_to_64_and_1_with_the_windows() {
        let keys = |max_in_flight, delay| {
            let mut config = EgressConfig {
                max_in_flight,
                ..EgressConfig::default()
            };
            config.windows.delay = Duration::from_secs(delay);
            let keys: Vec<String> = config.problems().into_iter().map(|p| p.key).collect();
            keys
        };
        assert!(keys(1, 0).is_empty());
        assert!(keys(64, 0).is_empty());
        assert!(keys(1, 5).is_empty());
        assert_eq!(keys(0, 0), ["max_in_flight"]);
        assert_eq!(keys(65, 0), ["max_in_flight"]);
        assert_eq!(keys(4, 5), ["max_in_flight"]);
    }

    #[test]
    fn zero_and_absurd_durations_and_limits_are_refused_with_their_keys() {
        let config = EgressConfig {
            flush_interval: Duration::ZERO,
            request_timeout: Duration::from_secs(86_400),
            commit_interval: Duration::ZERO,
            state_flush_every: Duration::from_secs(3600),
            retry_max_backoff: Duration::from_secs(86_400 * 7),
            max_samples_per_send: usize::MAX,
            max_bytes_per_send: 0,
            group_id: Some(" ".into()),
            ..EgressConfig::default()
        };
        let keys: Vec<String> = config.problems().into_iter().map(|p| p.key).collect();
        assert_eq!(
            keys,
            [
                "max_samples_per_send",
                "max_bytes_per_send",
                "flush_interval",
                "request_timeout",
                "commit_interval",
                "state_flush_every",
                "retry_max_backoff",
                "group_id"
            ]
        );
        assert!(
            EgressConfig::default().problems().is_empty(),
            "{:?}",
            EgressConfig::default().problems()
        );
        let zero_flush = EgressConfig {
            state_flush_every: Duration::ZERO,
            ..EgressConfig::default()
        };
        assert!(
            zero_flush.problems().is_empty(),
            "0s flushes after every request"
        );
    }

    #[test]
    fn the_group_id_defaults_to_one_per_topic() {
        let config = EgressConfig {
            topic: "streamroute.tasks.a".into(),
            ..EgressConfig::default()
        };
        assert_eq!(config.group_id(), "streamroute-egress.streamroute.tasks.a");
        assert_eq!(
            EgressConfig {
                group_id: Some("g".into()),
                ..config
            }
            .group_id(),
            "g"
        );
    }

    #[test]
    fn https_targets_are_accepted_and_the_ca_file_must_hold_a_certificate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let https = Target::Template("https://vmagent-{partition}:8429/api/v1/write".into());
        let mut config = EgressConfig {
            target: https.clone(),
            ..EgressConfig::default()
        };
        assert!(config.target.uses_https());
        assert!(!EgressConfig::default().target.uses_https());
        assert!(config.problems().is_empty(), "{:?}", config.problems());

        let keys = |c: &EgressConfig| {
            c.problems()
                .into_iter()
                .map(|p| format!("{}: {}", p.key, p.reason))
                .collect::<Vec<_>>()
        };
        let absent = dir.path().join("absent.pem");
        config.tls_ca_file = Some(absent.clone());
        assert_eq!(keys(&config).len(), 1);
        assert!(
            keys(&config)[0].starts_with(&format!("tls_ca_file: cannot read {}", absent.display())),
            "{:?}",
            keys(&config)
        );

        let generated =
            rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("certificate");
        let key_only = dir.path().join("key.pem");
        std::fs::write(&key_only, generated.signing_key.serialize_pem()).expect("write");
        config.tls_ca_file = Some(key_only);
        assert!(
            keys(&config)[0].starts_with("tls_ca_file: ")
                && keys(&config)[0].contains("holds no certificate"),
            "{:?}",
            keys(&config)
        );

        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, generated.cert.pem()).expect("write");
        config.tls_ca_file = Some(ca.clone());
        assert!(config.problems().is_empty(), "{:?}", config.problems());
        assert_eq!(load_ca_file(&ca).expect("loads").len(), 1);

        config.target = Target::Template("ftp://x/".into());
        assert_eq!(keys(&config).len(), 1);
        assert!(keys(&config)[0].starts_with("target: "));
    }
}
