//! Commands that are not roles: each module implements one subcommand,
//! with its arguments and its error.

pub mod check;
pub mod inspect;
pub mod produce;
pub mod relabel;
pub mod topics;
