//! streamroute: a Kafka-native stream processor for Prometheus remote-write
//! data. This file only lists the modules; `app.rs` wires the roles together.

pub mod app;
pub mod cli;
pub mod commands;
pub mod config;
pub mod egress;
pub mod gateway;
pub mod http;
pub mod kafka;
pub mod live;
pub mod metrics;
pub mod problem;
pub mod produce;
pub mod profiling;
pub mod relabel;
pub mod reload;
pub mod remote_write;
pub mod router;
pub mod shared;
pub mod state;
pub mod telemetry;
pub mod tls;
pub mod topics;
