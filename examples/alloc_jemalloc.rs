//! The `streamroute` binary with the jemalloc allocator, for comparing
//! allocators side by side: `BENCH_ALLOCATORS=1 scripts/bench-vs-vmagent.sh`.

use std::process::ExitCode;

use clap::Parser;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    streamroute::app::main(streamroute::cli::Cli::parse())
}
