//! Integration tests against real components: an Apache Kafka broker
//! (`KAFKA_BOOTSTRAP`, default 127.0.0.1:9092, started by scripts/test.sh)
//! and, where needed, VictoriaMetrics/vmagent and Prometheus. Every test
//! uses its own random topic and group names.

mod aggregation;
mod aggregation_routing;
mod check_command;
mod common;
mod config_errors;
mod dashboard;
mod egress;
mod egress_gaps;
mod egress_in_flight;
mod egress_state;
mod egress_windows;
mod egress_windows_load;
mod egress_windows_vm;
mod gateway;
mod gateway_guarantees;
mod gateway_hostile;
mod gateway_outage;
mod gateway_prometheus;
mod gateway_tls;
mod kafka_roundtrip;
mod kafka_security;
mod kubernetes;
mod metadata;
mod operability;
mod outage;
mod profiling;
mod record_encoding;
mod relabel_cli;
mod reload;
mod remote_write_rc4;
mod router;
mod scaleout;
mod series_ids;
mod spec;
mod topics_apply;
mod utf8_names;
mod vm_modern;
