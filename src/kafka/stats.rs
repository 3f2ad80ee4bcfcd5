//! librdkafka's statistics (the JSON it emits every
//! `statistics.interval.ms`) as metrics, where the label sets stay bounded:
//! per client (a role name we choose), per broker node id, and per
//! topic-partition of the topics a client reads or writes.
//!
//! - `streamroute_kafka_broker_rtt_seconds{client,broker,quantile}`: request
//!   round-trip time over librdkafka's last window (0.5 is its mean, 0.99
//!   its p99), for brokers learned from metadata (bootstrap entries have
//!   node id -1 and are left out).
//! - `streamroute_kafka_broker_up{client,broker}`: 1 while the connection
//!   is in state UP.
//! - `streamroute_kafka_producer_queue_messages{client}` and
//!   `..._queue_bytes{client}`: records (bytes) waiting in the producer's
//!   queues, not yet acknowledged; a growing queue means the brokers do
//!   not keep up.
//! - `streamroute_kafka_consumer_fetch_lag_records{client,topic,partition}`:
//!   last stable offset minus the offset of the last record handed to the
//!   application (what the broker has that we have not read yet), for
//!   partitions the client consumes.

use rdkafka::statistics::Statistics;
use rdkafka::ClientContext;

/// Round-trip time per broker, labels client, broker, quantile.
pub const BROKER_RTT: &str = "streamroute_kafka_broker_rtt_seconds";
/// Broker connection state, labels client, broker.
pub const BROKER_UP: &str = "streamroute_kafka_broker_up";
/// Records in the producer queues, label client.
pub const PRODUCER_QUEUE_MESSAGES: &str = "streamroute_kafka_producer_queue_messages";
/// Bytes in the producer queues, label client.
pub const PRODUCER_QUEUE_BYTES: &str = "streamroute_kafka_producer_queue_bytes";
/// Records the broker has that the consumer has not read, labels client, topic, partition.
pub const CONSUMER_FETCH_LAG: &str = "streamroute_kafka_consumer_fetch_lag_records";

/// How often the clients that export statistics emit them, unless
/// `kafka.properties` sets `statistics.interval.ms`.
pub const DEFAULT_INTERVAL_MS: &str = "5000";

/// A client context that only exports statistics, labelled `client`.
#[derive(Debug, Clone)]
pub struct StatsContext {
    client: String,
}

impl StatsContext {
    /// A context for the client named `client` (a role, e.g. `gateway`).
    pub fn new(client: impl Into<String>) -> StatsContext {
        StatsContext {
            client: client.into(),
        }
    }
}

impl ClientContext for StatsContext {
    fn stats(&self, statistics: Statistics) {
        export(&self.client, &statistics);
    }
}

impl rdkafka::producer::ProducerContext for StatsContext {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

/// Sets `statistics.interval.ms` to [`DEFAULT_INTERVAL_MS`] unless the user set it.
pub fn enable(config: &mut rdkafka::ClientConfig) {
    if config.get("statistics.interval.ms").is_none() {
        config.set("statistics.interval.ms", DEFAULT_INTERVAL_MS);
    }
}

/// Registers the descriptions of these metrics.
pub fn describe() {
    use metrics::{describe_gauge, Unit};
    describe_gauge!(
        BROKER_RTT,
        Unit::Seconds,
        "librdkafka's request round-trip time per broker over its last statistics window (quantile 0.5 is the mean)"
    );
    describe_gauge!(
        BROKER_UP,
        "1 while the client's connection to the broker is up"
    );
    describe_gauge!(
        PRODUCER_QUEUE_MESSAGES,
        "records waiting in the producer's queues (not yet acknowledged)"
    );
    describe_gauge!(
        PRODUCER_QUEUE_BYTES,
        Unit::Bytes,
        "bytes waiting in the producer's queues (not yet acknowledged)"
    );
    describe_gauge!(
        CONSUMER_FETCH_LAG,
        "records the broker has (last stable offset) that the consumer has not handed to streamroute yet"
    );
}

/// Turns one statistics report into gauges.
pub fn export(client: &str, statistics: &Statistics) {
    for broker in statistics.brokers.values().filter(|b| b.nodeid >= 0) {
        let id = broker.nodeid.to_string();
        metrics::gauge!(BROKER_UP, "client" => client.to_string(), "broker" => id.clone())
            .set(f64::from(u8::from(broker.state == "UP")));
        // A window without samples (no request in the interval) reports 0.
        if let Some(rtt) = broker.rtt.as_ref().filter(|w| w.cnt > 0) {
            for (quantile, micros) in [("0.5", rtt.avg), ("0.99", rtt.p99)] {
                metrics::gauge!(BROKER_RTT, "client" => client.to_string(), "broker" => id.clone(), "quantile" => quantile)
                    .set(micros as f64 / 1e6);
            }
        }
    }
    if statistics.client_type == "producer" {
        metrics::gauge!(PRODUCER_QUEUE_MESSAGES, "client" => client.to_string())
            .set(statistics.msg_cnt as f64);
        metrics::gauge!(PRODUCER_QUEUE_BYTES, "client" => client.to_string())
            .set(statistics.msg_size as f64);
        return;
    }
    for (topic, stats) in &statistics.topics {
        for (partition, p) in &stats.partitions {
            // -1 is librdkafka's internal unassigned partition; offsets of
            // -1 (or below) are "not known yet".
            if *partition < 0 || p.fetch_state == "none" || p.ls_offset < 0 || p.app_offset < 0 {
                continue;
            }
            metrics::gauge!(CONSUMER_FETCH_LAG, "client" => client.to_string(), "topic" => topic.clone(), "partition" => partition.to_string())
                .set((p.ls_offset - p.app_offset).max(0) as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A report shaped as librdkafka documents it (STATISTICS.md), trimmed
    /// to the fields serde needs and the ones read here.
    fn report(kind: &str) -> Statistics {
        let json = serde_json::json!({
            "name": "c#1", "client_id": "c", "type": kind, "ts": 1, "time": 1, "age": 1,
            "replyq": 0, "msg_cnt": 7, "msg_size": 7000, "msg_max": 100000,
            "msg_size_max": 1048576, "simple_cnt": 0, "metadata_cache_cnt": 1,
            "tx": 0, "tx_bytes": 0, "rx": 0, "rx_bytes": 0, "txmsgs": 0,
            "txmsg_bytes": 0, "rxmsgs": 0, "rxmsg_bytes": 0,
            "brokers": {
                "127.0.0.1:9092/bootstrap": broker(-1, "UP", 0, 0, 0),
                "127.0.0.1:9092/1": broker(1, "UP", 3, 1500, 9000),
                "127.0.0.1:9093/2": broker(2, "DOWN", 0, 0, 0),
            },
            "topics": {"ingress": {"topic": "ingress", "age": 1, "metadata_age": 1,
                "batchsize": window(0, 0, 0), "batchcnt": window(0, 0, 0),
                "partitions": {
                    "0": partition(0, "active", 120, 100),
                    "1": partition(1, "none", 50, 10),
                    "-1": partition(-1, "active", 9, 1),
                }}},
        });
        serde_json::from_value(json).expect("a valid statistics report")
    }

    fn window(cnt: i64, avg: i64, p99: i64) -> serde_json::Value {
        serde_json::json!({"min": 0, "max": 0, "avg": avg, "sum": 0, "stddev": 0,
            "p50": 0, "p75": 0, "p90": 0, "p95": 0, "p99": p99, "p99_99": 0,
            "outofrange": 0, "hdrsize": 0, "cnt": cnt})
    }

    fn broker(nodeid: i32, state: &str, cnt: i64, avg: i64, p99: i64) -> serde_json::Value {
        serde_json::json!({"name": "b", "nodeid": nodeid, "nodename": "b", "source": "learned",
            "state": state, "stateage": 1, "outbuf_cnt": 0, "outbuf_msg_cnt": 0,
            "waitresp_cnt": 0, "waitresp_msg_cnt": 0, "tx": 0, "txbytes": 0,
            "txerrs": 0, "txretries": 0, "txidle": 0, "req_timeouts": 0, "rx": 0, "rxbytes": 0,
            "rxerrs": 0, "rxcorriderrs": 0, "rxpartial": 0, "rxidle": 0, "req": {}, "toppars": {}, "zbuf_grow": 0,
            "buf_grow": 0, "wakeups": 0, "connects": 0, "disconnects": 0,
            "int_latency": window(0, 0, 0), "outbuf_latency": window(0, 0, 0),
            "rtt": window(cnt, avg, p99), "throttle": window(0, 0, 0)})
    }

    fn partition(id: i32, fetch_state: &str, ls: i64, app: i64) -> serde_json::Value {
        serde_json::json!({"partition": id, "broker": 1, "leader": 1, "desired": true,
            "unknown": false, "msgq_cnt": 0, "msgq_bytes": 0, "xmit_msgq_cnt": 0,
            "xmit_msgq_bytes": 0, "fetchq_cnt": 0, "fetchq_size": 0,
            "fetch_state": fetch_state, "query_offset": 0, "next_offset": app,
            "app_offset": app, "stored_offset": 0, "committed_offset": 0,
            "eof_offset": 0, "lo_offset": 0, "hi_offset": ls, "ls_offset": ls,
            "consumer_lag": 0, "consumer_lag_stored": 0, "txmsgs": 0, "txbytes": 0,
            "rxmsgs": 0, "rxbytes": 0, "msgs": 0, "rx_ver_drops": 0,
            "msgs_inflight": 0, "next_ack_seq": 0, "next_err_seq": 0, "acked_msgid": 0})
    }

    fn rendered(kind: &str) -> String {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || export("t", &report(kind)));
        handle.render()
    }

    fn has(text: &str, line: &str) -> bool {
        text.lines().any(|l| l == line)
    }

    #[test]
    fn consumer_report_gives_rtt_broker_state_and_fetch_lag_per_assigned_partition() {
        let text = rendered("consumer");
        // 1500 µs mean and 9000 µs p99 for node 1; node 2 sent nothing.
        assert!(
            has(
                &text,
                r#"streamroute_kafka_broker_rtt_seconds{client="t",broker="1",quantile="0.5"} 0.0015"#
            ),
            "{text}"
        );
        assert!(
            has(
                &text,
                r#"streamroute_kafka_broker_rtt_seconds{client="t",broker="1",quantile="0.99"} 0.009"#
            ),
            "{text}"
        );
        assert!(!text.contains(r#"broker="2",quantile"#), "{text}");
        assert!(
            has(
                &text,
                r#"streamroute_kafka_broker_up{client="t",broker="1"} 1"#
            ),
            "{text}"
        );
        assert!(
            has(
                &text,
                r#"streamroute_kafka_broker_up{client="t",broker="2"} 0"#
            ),
            "{text}"
        );
        assert!(
            !text.contains(r#"broker="-1""#),
            "bootstrap entries are left out: {text}"
        );
        // 120 stable, 100 handed over: 20 behind; partition 1 is not fetched.
        assert!(
            has(
                &text,
                r#"streamroute_kafka_consumer_fetch_lag_records{client="t",topic="ingress",partition="0"} 20"#
            ),
            "{text}"
        );
        assert!(!text.contains(r#"partition="1""#), "{text}");
        assert!(!text.contains(r#"partition="-1""#), "{text}");
        assert!(!text.contains("producer_queue"), "{text}");
    }

    #[test]
    fn producer_report_gives_queue_depth_and_bytes() {
        let text = rendered("producer");
        assert!(
            has(
                &text,
                r#"streamroute_kafka_producer_queue_messages{client="t"} 7"#
            ),
            "{text}"
        );
        assert!(
            has(
                &text,
                r#"streamroute_kafka_producer_queue_bytes{client="t"} 7000"#
            ),
            "{text}"
        );
        assert!(!text.contains("fetch_lag"), "{text}");
    }
}
