//! `leasehold config check FILE...`: validates site files, alone or as one federation,
//! with the same loader the gateway starts from, and `leasehold config diff OLD NEW`: what
//! an edit would change. Both exit 78 (EX_CONFIG) on any error.

use std::path::PathBuf;
use std::process::ExitCode;

use leasehold_site_gateway::config;

/// EX_CONFIG from sysexits.h, as Vector's `validate` uses: scripts can tell a refused
/// config from a crash.
const EX_CONFIG: u8 = 78;

#[derive(Debug, clap::Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    command: ConfigCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ConfigCommand {
    /// Check site config files. Give every file of the federation to check the references
    /// between sites as well; exits 0 when valid, 78 when not.
    Check {
        /// Site config files (TOML), e.g. configs/site-a.toml configs/site-b.toml.
        #[arg(required = true, num_args = 1..)]
        files: Vec<PathBuf>,
        /// Resolve the DNS names of peers' addresses too, and compare what they resolve to
        /// with those sites' federation_addr; without it, names are checked for syntax only.
        #[arg(long)]
        resolve: bool,
    },
    /// Print what changing a running site's file from OLD to NEW would change (both are
    /// checked first); exits 0 with the list ("no changes" when equal), 78 if either is
    /// refused.
    Diff { old: PathBuf, new: PathBuf },
}

pub fn run(args: ConfigArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        ConfigCommand::Check { files, resolve } => Ok(check(&files, resolve)),
        ConfigCommand::Diff { old, new } => Ok(diff(&old, &new)),
    }
}

fn check(files: &[PathBuf], resolve: bool) -> ExitCode {
    match config::load_federation_warning(files) {
        Ok((sites, warnings)) => {
            for warning in &warnings {
                println!("warning: {warning}");
            }
            // The secrets files, as the gateway will read them at start.
            let unreadable: Vec<String> = sites
                .iter()
                .filter_map(|site| leasehold_site_gateway::secrets::load_own(site).err())
                .map(|errors| errors.to_string())
                .collect();
            if !unreadable.is_empty() {
                eprintln!("{}", unreadable.join("\n"));
                eprintln!("config refused; fix the errors above, nothing was changed");
                return ExitCode::from(EX_CONFIG);
            }
            if let Err(problems) = peer_names(&sites, resolve) {
                eprintln!("{}", problems.join("\n"));
                eprintln!("config refused; fix the errors above, nothing was changed");
                return ExitCode::from(EX_CONFIG);
            }
            for site in &sites {
                if files.len() == 1 {
                    println!(
                        "{} (cross-site references not checked: give all the federation's files to check them)",
                        site.summary()
                    );
                } else {
                    println!("{}", site.summary());
                }
            }
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("config refused; fix the errors above, nothing was changed");
            ExitCode::from(EX_CONFIG)
        }
    }
}

fn diff(old: &std::path::Path, new: &std::path::Path) -> ExitCode {
    // Both sides are checked alone (as the gateway loads its own file), so a refused file
    // is reported with its errors, never diffed.
    let (before, after) = (config::load_site(old), config::load_site(new));
    match (before, after) {
        (Ok(before), Ok(after)) => {
            print!("{}", config::diff::diff(&before, &after));
            ExitCode::SUCCESS
        }
        (before, after) => {
            for errors in [before.err(), after.err()].into_iter().flatten() {
                eprintln!("{errors}");
            }
            eprintln!("config refused; nothing was compared");
            ExitCode::from(EX_CONFIG)
        }
    }
}

/// Peers named by DNS: without `resolve`, says they were not resolved; with it, resolves
/// each (one that does not resolve is an error), and where the named site's file is among
/// `sites` and advertises no address, warns when none of the addresses is that site's
/// `federation_addr` (NAT, or a name that leads elsewhere).
fn peer_names(
    sites: &[leasehold_site_gateway::config::SiteConfig],
    resolve: bool,
) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    let mut unresolved = Vec::new();
    for site in sites {
        for peer in &site.peers {
            if peer.addr.name().is_none() {
                continue;
            }
            if !resolve {
                unresolved.push(format!(
                    "{} (peer {} of {})",
                    peer.addr, peer.name, site.site.name
                ));
                continue;
            }
            let found = match peer.addr.resolve_blocking() {
                Ok(found) => found,
                Err(error) => {
                    problems.push(format!(
                        "{}: peer `{}` of site `{}`: {error}",
                        site.path.display(),
                        peer.name,
                        site.site.name
                    ));
                    continue;
                }
            };
            let Some(theirs) = sites.iter().find(|other| other.site.name == peer.name) else {
                continue;
            };
            // An advertised address is compared as written, by the cross-site checks.
            if theirs.site.advertise_federation_addr.is_some() {
                continue;
            }
            let listen = theirs.site.federation_addr;
            let reaches = found.iter().any(|addr| {
                addr.port() == listen.port()
                    && (listen.ip().is_unspecified() || addr.ip() == listen.ip())
            });
            if !reaches {
                let shown: Vec<String> = found.iter().map(ToString::to_string).collect();
                println!(
                    "warning: {}: peer `{}` of site `{}` has addr {}, which resolves to {}, but that site's federation_addr is {listen}: fine behind NAT or port forwarding; say so with advertise_federation_addr in that site's [site], and this is checked",
                    site.path.display(),
                    peer.name,
                    site.site.name,
                    peer.addr,
                    shown.join(", ")
                );
            }
        }
    }
    if !unresolved.is_empty() {
        println!(
            "peer names not resolved (give --resolve to resolve them here): {}",
            unresolved.join(", ")
        );
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}
