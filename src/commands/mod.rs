//! Commands that are not roles: each module implements one subcommand.

pub mod check;
