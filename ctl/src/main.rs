//! ctl: the Cairn operator CLI. See the library for what it does.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = ctl::cli::Cli::parse();
    match ctl::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
