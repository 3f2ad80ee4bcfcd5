//! Kafka client configuration shared by every role.
//!
//! Each role builds its librdkafka configuration here: the user's cluster
//! settings and extra properties first, then the properties the project
//! sets itself, one line each with the reason. A user property that would
//! override one of ours is refused at start-up (see [`OWNED_PROPERTIES`]).

pub mod polled;
pub mod producer;
pub mod record;
pub mod stats;

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};

use crate::problem::{Problem, Problems};

/// Cluster and client settings shared by every role.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Comma-separated `host:port` list of brokers to bootstrap from.
    pub bootstrap_servers: String,
    /// Prefix of the client.id each role reports to the brokers.
    pub client_id: String,
    /// How long admin requests and metadata lookups may take.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Extra librdkafka properties passed to every client, for TLS/SASL and
    /// tuning, e.g. `"security.protocol" = "SASL_SSL"`. Properties the
    /// project sets itself are refused.
    pub properties: BTreeMap<String, String>,
    /// Extra librdkafka properties for the clients of one role only, over
    /// `properties`: `[kafka.role_properties.gateway]` with
    /// `"compression.type" = "lz4"` changes the gateway's producer alone.
    /// Keys are the roles of [`ROLES`].
    pub role_properties: BTreeMap<String, BTreeMap<String, String>>,
}

/// The roles whose clients `kafka.role_properties` can tune: the gateway's
/// producer, `streamroute produce`'s producer, the router's consumer and
/// transactional producer, the egress consumers and dead-letter producer,
/// the admin client of `streamroute topics`, the consumer of `streamroute check`.
pub const ROLES: &[&str] = &["gateway", "produce", "router", "egress", "admin", "check"];

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            bootstrap_servers: "127.0.0.1:9092".into(),
            client_id: "streamroute".into(),
            request_timeout: Duration::from_secs(30),
            properties: BTreeMap::new(),
            role_properties: BTreeMap::new(),
        }
    }
}

/// Properties the project sets itself. Letting a user override them would
/// break a guarantee (durability, ordering, exactly-once, offset handling).
pub const OWNED_PROPERTIES: &[&str] = &[
    "bootstrap.servers",
    "client.id",
    "group.id",
    "group.instance.id",
    "transactional.id",
    "enable.idempotence",
    "acks",
    "request.required.acks",
    "max.in.flight.requests.per.connection",
    "message.timeout.ms",
    "message.max.bytes",
    "isolation.level",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "auto.offset.reset",
];

impl KafkaConfig {
    /// Problems, keys relative to `kafka.`.
    pub fn problems(&self) -> Vec<Problem> {
        let mut out = Problems::default();
        out.check(
            !self.bootstrap_servers.trim().is_empty(),
            "bootstrap_servers",
            "must name at least one broker",
        );
        for server in self
            .bootstrap_servers
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let port_ok = server
                .rsplit_once(':')
                .is_some_and(|(_, p)| p.parse::<u16>().is_ok());
            out.check(
                port_ok,
                "bootstrap_servers",
                format!("'{server}' is not host:port"),
            );
        }
        out.check(
            !self.client_id.trim().is_empty(),
            "client_id",
            "must not be empty",
        );
        out.check(
            !self.request_timeout.is_zero(),
            "request_timeout",
            "must be greater than zero",
        );
        check_properties(&mut out, "properties", &self.properties);
        for (role, properties) in &self.role_properties {
            if !ROLES.contains(&role.as_str()) {
                out.push(
                    format!("role_properties.{role}"),
                    format!("is not a role; one of {}", ROLES.join(", ")),
                );
                continue;
            }
            check_properties(&mut out, &format!("role_properties.{role}"), properties);
        }
        out.into_vec()
    }

    /// A librdkafka configuration with the cluster, the user's extra
    /// properties and a client.id of `<client_id>-<role>`.
    pub fn client_config(&self, role: &str) -> ClientConfig {
        let mut config = ClientConfig::new();
        let for_role = self.role_properties.get(role).into_iter().flatten();
        for (key, value) in self.properties.iter().chain(for_role) {
            config.set(key, value);
        }
        config
            .set("bootstrap.servers", &self.bootstrap_servers)
            .set("client.id", format!("{}-{role}", self.client_id));
        config
    }
}

/// `timeout` rounded up to whole milliseconds, for a consumer's `poll`.
/// librdkafka waits in whole milliseconds: rdkafka hands it the timeout
/// rounded down and then polls again, without waiting, until the rest has
/// passed, so a `poll(73.4 ms)` spins for its last 0.4 ms. The router polls
/// until its commit deadline, a fraction of a millisecond away each time:
/// rounded up, the wait ends past it and nothing spins (an idle router
/// spent about 1% of a core there).
pub fn whole_millis(timeout: Duration) -> Duration {
    let millis = timeout.as_nanos().div_ceil(1_000_000);
    Duration::from_millis(u64::try_from(millis).unwrap_or(u64::MAX))
}

/// CPU time (utime + stime, in clock ticks) in a `/proc/…/stat` line.
#[cfg(test)]
pub(crate) fn stat_ticks(stat: &str) -> u64 {
    // Fields after the `(comm)`: state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split(' ').collect();
    fields[12].parse::<u64>().unwrap() + fields[13].parse::<u64>().unwrap()
}

/// Refuses owned properties and those librdkafka does not take, each
/// under `<table>.<key>`.
fn check_properties(out: &mut Problems, table: &str, properties: &BTreeMap<String, String>) {
    for (key, value) in properties {
        if OWNED_PROPERTIES.contains(&key.as_str()) {
            out.push(
                format!("{table}.{key}"),
                "is set by streamroute itself and may not be overridden",
            );
        } else if let Err(e) = check_property(key, value) {
            out.push(format!("{table}.{key}"), e.to_string());
        }
    }
}

/// Asks librdkafka whether it knows `key` and takes `value` for it, without
/// creating a client, so that a typo fails at start-up with its key named
/// instead of when a role first builds its client.
fn check_property(key: &str, value: &str) -> Result<(), PropertyError> {
    let mut config = ClientConfig::new();
    config.set(key, value);
    match config.create_native_config() {
        Ok(_) => Ok(()),
        Err(rdkafka::error::KafkaError::ClientConfig(_, message, _, _)) => {
            Err(PropertyError::Refused(message))
        }
        Err(e) => Err(PropertyError::Kafka(e)),
    }
}

/// Why librdkafka does not take a `kafka.properties` entry.
#[derive(Debug, thiserror::Error)]
pub enum PropertyError {
    /// librdkafka refused the key or its value; its own message.
    #[error("{0}")]
    Refused(String),
    /// Any other librdkafka error.
    #[error(transparent)]
    Kafka(rdkafka::error::KafkaError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_millis_rounds_up() {
        for (nanos, millis) in [
            (0, 0),
            (1, 1),
            (999_999, 1),
            (1_000_000, 1),
            (73_400_000, 74),
        ] {
            assert_eq!(
                whole_millis(Duration::from_nanos(nanos)),
                Duration::from_millis(millis)
            );
        }
    }

    /// A consumer polled with fractional timeouts, as the router polls up
    /// to its commit deadline: rounded up, the polls cost no CPU; rounded
    /// down by rdkafka, 200 polls of 9.5 ms spin about 0.5 ms each (7 ticks
    /// of 10 ms when measured).
    #[test]
    fn polls_rounded_up_do_not_spin() {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let mock = rdkafka::mocking::MockCluster::new(1).unwrap();
        mock.create_topic("t", 1, 1).unwrap();
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", mock.bootstrap_servers())
            .set("group.id", "g")
            .create()
            .unwrap();
        consumer.subscribe(&["t"]).unwrap();
        let ticks = || stat_ticks(&std::fs::read_to_string("/proc/thread-self/stat").unwrap());
        // Join the group first: the ticks below are the idle polls only.
        let until = std::time::Instant::now() + Duration::from_secs(3);
        while std::time::Instant::now() < until {
            consumer.poll(Duration::from_millis(100));
        }
        let before = ticks();
        for _ in 0..200 {
            assert!(consumer
                .poll(whole_millis(Duration::from_micros(9_500)))
                .is_none());
        }
        let spent = ticks() - before;
        assert!(spent <= 3, "200 idle polls took {spent} ticks");
    }

    #[test]
    fn unknown_or_invalid_librdkafka_properties_are_refused_at_start_up() {
        let mut config = KafkaConfig::default();
        config.properties.insert("linger.msx".into(), "5".into());
        config
            .properties
            .insert("compression.type".into(), "brotli".into());
        config
            .properties
            .insert("security.protocol".into(), "SASL_SSL".into());
        let problems = config.problems();
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            ["properties.compression.type", "properties.linger.msx"],
            "{problems:?}"
        );
        assert!(problems[1].reason.contains("linger.msx"), "{problems:?}");
    }

    #[test]
    fn owned_properties_are_refused_with_their_key() {
        let mut config = KafkaConfig::default();
        config.properties.insert("acks".into(), "1".into());
        config
            .properties
            .insert("security.protocol".into(), "SSL".into());
        let problems = config.problems();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].key, "properties.acks");
    }

    #[test]
    fn role_properties_reach_that_role_only_and_are_checked_like_properties() {
        let mut config = KafkaConfig::default();
        config
            .properties
            .insert("compression.type".into(), "zstd".into());
        let gateway = BTreeMap::from([("compression.type".to_string(), "lz4".to_string())]);
        config.role_properties.insert("gateway".into(), gateway);
        assert!(config.problems().is_empty(), "{:?}", config.problems());
        let get = |role| {
            config
                .client_config(role)
                .get("compression.type")
                .map(String::from)
        };
        assert_eq!(get("gateway").as_deref(), Some("lz4"));
        assert_eq!(get("router").as_deref(), Some("zstd"));

        let mut bad = config.clone();
        let owned = BTreeMap::from([("acks".to_string(), "1".to_string())]);
        bad.role_properties.insert("router".into(), owned);
        let typo = BTreeMap::from([("linger.msx".to_string(), "5".to_string())]);
        bad.role_properties.insert("egress".into(), typo);
        bad.role_properties.insert("gatway".into(), BTreeMap::new());
        let problems = bad.problems();
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "role_properties.egress.linger.msx",
                "role_properties.gatway",
                "role_properties.router.acks"
            ],
            "{problems:?}"
        );
        assert!(
            problems[1].reason.contains("one of gateway"),
            "{problems:?}"
        );
    }

    #[test]
    fn bad_bootstrap_server_is_named() {
        let config = KafkaConfig {
            bootstrap_servers: "localhost".into(),
            ..KafkaConfig::default()
        };
        assert!(config.problems()[0]
            .reason
            .contains("'localhost' is not host:port"));
    }

    #[test]
    fn user_properties_reach_the_client_but_ours_win() {
        let mut config = KafkaConfig::default();
        config
            .properties
            .insert("socket.keepalive.enable".into(), "true".into());
        let client = config.client_config("gateway");
        assert_eq!(client.get("socket.keepalive.enable"), Some("true"));
        assert_eq!(client.get("client.id"), Some("streamroute-gateway"));
    }
}
