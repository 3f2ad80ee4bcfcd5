//! The router role: ingress topic → relabel → stream_task_id → task topics.

pub mod task_id;
