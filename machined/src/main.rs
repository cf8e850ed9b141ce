//! machined: the Cairn node daemon. See the library for what it does.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let options = machined::cli::Options::parse();
    match machined::system::runtime::run(options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("machined: {e:#}");
            ExitCode::FAILURE
        }
    }
}
