//! Synthetic remote-write load shaped like what Prometheus sends, for
//! `streamroute produce --generate`, the benchmarks and the examples. The
//! command itself is `commands::produce`.
//!
//! May depend on: `remote_write` (the protobuf types) only.

pub mod generate;
