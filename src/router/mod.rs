//! The router role: ingress topic → relabel → stream_task_id → task topics.
//!
//! Guarantee: consume-transform-produce runs in Kafka transactions. Output
//! records, dead-lettered records and the input offsets ("next offset to
//! read") commit together, so a router killed at any moment neither loses
//! nor duplicates a series in the task topics (read with
//! `isolation.level=read_committed`). Order: one ingress partition is
//! processed in order, and a series always goes to the same output
//! partition, so its samples keep their order.

pub mod aggregation;
pub mod config;
mod drain;
pub mod metadata;
pub mod metrics;
pub mod route;
pub mod task_id;
mod worker;

#[cfg(test)]
mod proptests;

pub use config::RouterConfig;
pub use worker::{Router, RouterError};

/// What hot reload (`src/reload.rs`) may replace in a running router: the
/// compiled routes and the limits records are validated with. The worker
/// takes a new one between transactions, so a transaction never mixes old
/// and new rules.
pub struct Rules {
    pub routes: std::sync::Arc<Vec<route::Route>>,
    pub limits: crate::remote_write::Limits,
}
