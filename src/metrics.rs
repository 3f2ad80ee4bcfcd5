//! Every metric streamroute exports, declared once with its description.
//! Names follow `streamroute_<role>_<thing>_<unit>`; counters end in
//! `_total`; labels have bounded cardinality.

use metrics::{describe_counter, describe_gauge, Unit};

/// Process start time, for uptime.
pub const PROCESS_START: &str = "streamroute_process_start_time_seconds";
/// Whether each role is ready (1) or not (0).
pub const ROLE_READY: &str = "streamroute_role_ready";
/// Times a role failed and was started again inside the process.
pub const ROLE_RESTARTS: &str = "streamroute_role_restarts_total";
/// Always 1, labels version and revision (git, at build time).
pub const BUILD_INFO: &str = "streamroute_build_info";

/// Remote-write requests read, by `role` (gateway, router) and `reader`:
/// `fast` (the zero-copy 1.0 reader) or `prost` (2.0, metadata, and what
/// the fast reader declines).
pub const REQUESTS_READ: &str = "streamroute_remote_write_requests_read_total";

/// The version in Cargo.toml.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git revision this was built from (build.rs), or "unknown".
pub const REVISION: &str = env!("SR_BUILD_REVISION");

/// Registers the descriptions of every metric.
pub fn describe() {
    describe_gauge!(
        PROCESS_START,
        Unit::Seconds,
        "unix time the process started"
    );
    describe_gauge!(
        ROLE_READY,
        "1 when the role (label role) is ready to serve, else 0"
    );
    describe_counter!(
        ROLE_RESTARTS,
        "times a role failed and was started again in this process"
    );
    describe_counter!(
        REQUESTS_READ,
        "remote-write requests read, by role and reader (fast: the zero-copy 1.0 reader; prost: 2.0, metadata and what the fast reader declines)"
    );
    describe_gauge!(
        BUILD_INFO,
        "always 1; labels version and revision (the git revision it was built from)"
    );
    metrics::gauge!(BUILD_INFO, "version" => VERSION, "revision" => REVISION).set(1.0);
    crate::kafka::stats::describe();
    crate::gateway::metrics::describe();
    crate::router::metrics::describe();
    crate::egress::metrics::describe();
}
