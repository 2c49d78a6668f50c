//! The `turnpike` binary: parses the command line and configuration, then runs the
//! requested planes (all of them by default) or a one-off task.

#![forbid(unsafe_code)]

mod cli;
mod config;
mod declarative;
mod platform;

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use crate::cli::{Cli, Command, ConfigCommand};
use crate::config::{Config, Env};

/// mimalloc rather than the system allocator: the gateway allocates small, short-lived
/// buffers on every request, and glibc's malloc/free showed as ~10% of the proxy's CPU
/// in the benchmark profile (bench/README.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("turnpike: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let env = Env::from_process()?;
    let config = Config::load(cli.config.as_deref(), &env)?;
    let command = cli.command_or_default();
    config.check_listeners(command.planes())?;
    config.log.install().map_err(|e| anyhow::anyhow!("log: {e}"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(async move {
        match command {
            Command::Serve | Command::Gateway | Command::Admin | Command::Portal => {
                platform::serve(&config, command.planes()).await
            }
            Command::Migrate => {
                platform::open_store(&config).await?;
                println!("migrations applied");
                Ok(())
            }
            Command::Config(ConfigCommand::Export { output }) => declarative::export(&config, output.as_deref()).await,
            Command::Config(ConfigCommand::Import { file, dry_run }) => {
                declarative::import(&config, &file, dry_run).await
            }
        }
    })
}
