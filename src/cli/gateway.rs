//! `leasehold gateway run`: one site's gateway. A config that `config check` refuses is
//! refused here with the same messages and exit code 78.

use std::path::PathBuf;
use std::process::ExitCode;

use leasehold_site_gateway::gateway::{self, GatewayError, GatewayOptions};

#[derive(Debug, clap::Args)]
pub struct GatewayArgs {
    #[command(subcommand)]
    command: GatewayCommand,
}

#[derive(Debug, clap::Subcommand)]
enum GatewayCommand {
    /// Run the site gateway until SIGINT or SIGTERM.
    Run {
        /// The site's config file.
        #[arg(long)]
        config: PathBuf,
        /// The certificates folder (`leasehold certs`): ca.crt and sites/<site>.{crt,key}.
        #[arg(long)]
        certs: PathBuf,
        /// Where the journal lives [default: ./leasehold-state-<site>].
        #[arg(long)]
        state: Option<PathBuf>,
        /// Offer node agents only this version of the management protocol
        /// (leasehold-node/N), not every version this build speaks: to stand in for a
        /// gateway of the previous release (docs/wire.md, "Versioning").
        #[arg(long, value_name = "N", value_parser = super::node_protocol)]
        node_protocol: Option<u16>,
        /// Which of the site's gateways this is, where the config lists several
        /// (`[[site.gateway]]`, docs/ha.md): it listens on that gateway's addresses.
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
    },
}

pub fn run(args: GatewayArgs) -> anyhow::Result<ExitCode> {
    let GatewayCommand::Run {
        config,
        certs,
        state,
        node_protocol,
        name,
    } = args.command;
    match gateway::run(GatewayOptions {
        config,
        certs,
        state,
        node_protocol,
        name,
    }) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(GatewayError::Config(errors)) => {
            eprintln!("{errors}");
            eprintln!("config refused; fix the errors above, nothing was started");
            Ok(ExitCode::from(78))
        }
        Err(GatewayError::Gateway(error)) => {
            eprintln!("{error}");
            Ok(ExitCode::from(78))
        }
        Err(error) => Err(error.into()),
    }
}
