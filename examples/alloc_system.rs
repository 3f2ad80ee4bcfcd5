//! The `streamroute` binary with the system allocator, for comparing
//! allocators side by side: `BENCH_ALLOCATORS=1 scripts/bench-vs-vmagent.sh`.

use std::process::ExitCode;

use clap::Parser;

// The system's malloc (glibc): no #[global_allocator].

fn main() -> ExitCode {
    streamroute::app::main(streamroute::cli::Cli::parse())
}
