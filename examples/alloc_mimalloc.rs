//! The `streamroute` binary with the mimalloc allocator, for comparing
//! allocators side by side: `BENCH_ALLOCATORS=1 scripts/bench-vs-vmagent.sh`.

use std::process::ExitCode;

use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    streamroute::app::main(streamroute::cli::Cli::parse())
}
