//! `leasehold certs ...`: create the federation's CA and issue site and node certificates.
//!
//! Prints the paths it wrote, never key material: terminal scrollback and CI logs outlive
//! the keys' file permissions.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use leasehold_federation::ids::{ServerId, SiteId};
use leasehold_federation::transport::certs;
use leasehold_federation::transport::identity::PeerName;

#[derive(Debug, clap::Args)]
pub struct CertsArgs {
    #[command(subcommand)]
    pub command: CertsCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum CertsCommand {
    /// Create the federation CA (DIR/ca.crt, DIR/ca.key). Do this once per federation.
    Init {
        /// Directory that holds the CA and every certificate it issues.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Replace an existing CA. Every certificate it issued stops being trusted.
        #[arg(long)]
        force: bool,
    },
    /// Start a CA rotation: a new CA signs from now on, and ca.crt trusts the new and the
    /// old until `retire-ca` (docs/certificates.md, "Rotating the CA").
    RotateCa {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
    /// Finish a CA rotation: ca.crt trusts only the new CA. Refused while a certificate in
    /// DIR is still signed by the old one.
    RetireCa {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
    /// Issue a site certificate (DIR/sites/NAME.*), with --node a node certificate
    /// (DIR/nodes/ID.*), or with --admin the HTTPS certificate of the site's admin address
    /// (DIR/admin/NAME.*), signed by the CA in DIR.
    Issue {
        /// Directory made by `leasehold certs init`.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The site, e.g. `site-a`.
        #[arg(long, value_name = "NAME")]
        site: SiteId,
        /// Issue for the node agent on server ID, at site NAME.
        #[arg(long, value_name = "ID", conflicts_with = "admin")]
        node: Option<ServerId>,
        /// Issue the certificate of the site's admin address (set [admin] tls_cert and
        /// tls_key to its files).
        #[arg(long)]
        admin: bool,
        /// With --admin: a DNS name or IP address clients use to reach the admin address;
        /// give one --host per name.
        #[arg(long, value_name = "NAME", requires = "admin")]
        host: Vec<String>,
        /// Replace an existing certificate and key: to renew one, issue it again with
        /// --force, then SIGHUP the gateway or agent that presents it (docs/certificates.md).
        #[arg(long)]
        force: bool,
        /// How long the certificate is valid.
        #[arg(long, value_name = "DAYS", default_value_t = 365,
              value_parser = clap::value_parser!(u32).range(1..=3650))]
        days: u32,
    },
}

pub fn run(args: CertsArgs) -> anyhow::Result<ExitCode> {
    let written = match args.command {
        CertsCommand::Init { dir, force } => certs::init_ca(&dir, force)
            .with_context(|| format!("creating the federation CA in {}", dir.display()))?,
        CertsCommand::RotateCa { dir } => {
            let written = certs::rotate_ca(&dir)
                .with_context(|| format!("rotating the CA in {}", dir.display()))?;
            println!(
                "next: copy ca.crt (both CAs) to every site and node and reload them (SIGHUP), re-issue every certificate with --force, then `leasehold certs retire-ca --dir {}`",
                dir.display()
            );
            written
        }
        CertsCommand::RetireCa { dir } => {
            let written = certs::retire_ca(&dir)
                .with_context(|| format!("retiring the old CA in {}", dir.display()))?;
            println!("next: copy ca.crt (the new CA only) to every site and node and reload them");
            written
        }
        CertsCommand::Issue {
            dir,
            site,
            node: _,
            admin: true,
            host,
            force,
            days,
        } => certs::issue_admin(&dir, &site, &host, days, force)
            .with_context(|| format!("issuing the admin certificate of {site}"))?,
        CertsCommand::Issue {
            dir,
            site,
            node,
            admin: false,
            force,
            days,
            ..
        } => {
            let name = match node {
                Some(server) => PeerName::Node { site, server },
                None => PeerName::Site(site),
            };
            certs::issue_for_days(&dir, &name, days, force)
                .with_context(|| format!("issuing a certificate for {name}"))?
        }
    };
    for path in &written {
        println!("wrote {}{}", path.display(), describe(path));
    }
    Ok(ExitCode::SUCCESS)
}

/// Marks key files, so the operator knows which files must stay private.
fn describe(path: &Path) -> &'static str {
    if path.extension().is_some_and(|ext| ext == "key") {
        " (mode 0600)"
    } else {
        ""
    }
}
