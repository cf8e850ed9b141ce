//! `kernel-config`: check a kernel config against Cairn's needs; list module sets.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use cairn_api::arch::Arch;
use clap::{Parser, Subcommand};
use kernel_config::module_index::ModuleIndex;
use kernel_config::module_sets::{self, ModuleSet};
use kernel_config::{kconfig::KernelConfig, requirements};

/// What Cairn needs from a kernel.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a kernel config (`.config`, `/boot/config-*`); exit 1 when something is missing.
    Check {
        /// The kernel config file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// The architecture it is for.
        #[arg(long, default_value = "x86_64")]
        arch: Arch,
    },
    /// List a module set; with --modules-dir, the files to load, dependencies first.
    Modules {
        /// The set.
        #[arg(long, value_enum)]
        set: ModuleSet,
        /// The architecture.
        #[arg(long, default_value = "x86_64")]
        arch: Arch,
        /// A kernel's module tree (`lib/modules/<release>`).
        #[arg(long, value_name = "DIR")]
        modules_dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kernel-config: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Check { config, arch } => {
            let text = std::fs::read_to_string(&config)
                .with_context(|| format!("reading {}", config.display()))?;
            let unmet = requirements::check(&KernelConfig::parse(&text), arch);
            if unmet.is_empty() {
                println!("{}: meets all of Cairn's requirements for {arch}", config.display());
                return Ok(ExitCode::SUCCESS);
            }
            eprintln!("{}: {} requirement(s) not met for {arch}:", config.display(), unmet.len());
            for u in unmet {
                eprintln!("  {u}");
            }
            Ok(ExitCode::FAILURE)
        }
        Command::Modules { set, arch, modules_dir } => {
            let names = module_sets::names(set, arch);
            match modules_dir {
                None => names.iter().for_each(|n| println!("{n}")),
                Some(dir) => {
                    for module in ModuleIndex::scan(&dir)?.resolve(&names)? {
                        println!("{}", module.path.display());
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
