//! Command-line interface of the `turnpike` binary: which planes to run, or which one-off task
//! (migrations, configuration export/import) to perform.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{CONFIG_FILE_ENV, Plane};

/// Turnpike API management platform: gateway, admin API and developer portal in one binary.
#[derive(Debug, Parser)]
#[command(name = "turnpike", version, about)]
pub struct Cli {
    /// TOML configuration file (see docs/configuration.md); environment variables override it.
    #[arg(long, short = 'c', global = true, value_name = "FILE", env = CONFIG_FILE_ENV)]
    pub config: Option<PathBuf>,

    /// What to do; runs everything in one process (`serve`) when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
}

impl Cli {
    /// The command to run; `serve` when none was given.
    pub fn command_or_default(&self) -> Command {
        self.command.clone().unwrap_or(Command::Serve)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Run the gateway, admin API and portal in one process (the default).
    Serve,
    /// Run only the gateway (data plane), for a cluster node.
    Gateway,
    /// Run only the admin API and admin console.
    Admin,
    /// Run only the developer portal.
    Portal,
    /// Apply pending database migrations, then exit.
    Migrate,
    /// Export or import the managed configuration (APIs, upstreams, plans…) as YAML.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum ConfigCommand {
    /// Write the managed configuration as YAML.
    Export {
        /// File to write instead of stdout.
        #[arg(long, short = 'o', value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Load managed configuration from a YAML file.
    Import {
        /// The YAML file, as written by `config export`.
        file: PathBuf,
        /// Validate and report what would change without writing anything.
        #[arg(long)]
        dry_run: bool,
    },
}

impl Command {
    /// The planes this command runs, whose listeners must not collide; one-off tasks run none.
    pub fn planes(&self) -> &'static [Plane] {
        match self {
            Self::Serve => &[Plane::Gateway, Plane::Admin, Plane::Portal],
            Self::Gateway => &[Plane::Gateway],
            Self::Admin => &[Plane::Admin],
            Self::Portal => &[Plane::Portal],
            Self::Migrate | Self::Config(_) => &[],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("turnpike").chain(args.iter().copied()))
            .unwrap_or_else(|err| panic!("{args:?}: {err}"))
    }

    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn no_command_means_serve() {
        let cli = parse(&[]);
        assert_eq!(cli.command, None);
        assert_eq!(cli.command_or_default(), Command::Serve);
        assert_eq!(parse(&["gateway"]).command_or_default(), Command::Gateway);
    }

    #[test]
    fn config_flag_is_global() {
        for args in
            [&["--config", "tp.toml", "admin"][..], &["admin", "--config", "tp.toml"], &["-c", "tp.toml", "admin"]]
        {
            let cli = parse(args);
            assert_eq!(cli.config, Some(PathBuf::from("tp.toml")), "{args:?}");
            assert_eq!(cli.command, Some(Command::Admin), "{args:?}");
        }
    }

    #[test]
    fn config_export_and_import() {
        assert_eq!(parse(&["config", "export"]).command, Some(Command::Config(ConfigCommand::Export { output: None })));
        assert_eq!(
            parse(&["config", "export", "--output", "out.yaml"]).command,
            Some(Command::Config(ConfigCommand::Export { output: Some("out.yaml".into()) }))
        );
        assert_eq!(
            parse(&["config", "import", "in.yaml", "--dry-run"]).command,
            Some(Command::Config(ConfigCommand::Import { file: "in.yaml".into(), dry_run: true }))
        );
        assert!(Cli::try_parse_from(["turnpike", "config", "import"]).is_err());
    }

    #[test]
    fn unknown_commands_are_rejected() {
        assert!(Cli::try_parse_from(["turnpike", "serv"]).is_err());
    }

    #[test]
    fn planes_per_command() {
        assert_eq!(Command::Serve.planes().len(), 3);
        assert_eq!(Command::Portal.planes(), &[Plane::Portal]);
        assert!(Command::Migrate.planes().is_empty());
    }
}
