//! The `streamroute` binary: parses arguments and hands over to `app`.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = streamroute::cli::Cli::parse();
    streamroute::app::main(cli)
}
