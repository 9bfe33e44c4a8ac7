//! `leasehold`: one binary for operators, with subcommands in the style of the
//! infrastructure tools they already use. Parses arguments, then calls into the crates.

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "leasehold",
    version,
    about = "Servers for every account, at every site, never by two at once."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check per-site config files.
    Config(cli::config::ConfigArgs),
    /// Create the federation's CA and issue site and node certificates.
    Certs(cli::certs::CertsArgs),
    /// Run the three-site demo on this machine with the configs in configs/.
    Demo(cli::demo::DemoArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LEASEHOLD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Config(args) => cli::config::run(args),
        Command::Certs(args) => cli::certs::run(args),
        Command::Demo(args) => cli::demo::run(args),
    };
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
