//! `leasehold demo`: the three-site federation of configs/ on this machine.
//!
//! Until the gateway and node agent exist (issues #3 and #4), the demo says what it will
//! run and checks the example federation with the same loader the gateways will use, so
//! the README's first command is true from the first commit.

use std::path::PathBuf;
use std::process::ExitCode;

use leasehold_site_gateway::config;

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// The folder with site-a.toml, site-b.toml and site-c.toml.
    #[arg(long, default_value = "configs")]
    configs: PathBuf,
}

pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let files: Vec<PathBuf> = ["site-a.toml", "site-b.toml", "site-c.toml"]
        .iter()
        .map(|name| args.configs.join(name))
        .collect();
    println!(
        "leasehold demo: the three-site federation of {}",
        args.configs.display()
    );
    println!();
    println!("When the gateway and node agent are built, this demo will:");
    println!("  1. create a federation CA and certificates for every site and server;");
    println!("  2. start one gateway per site and one node agent per server, as processes;");
    println!("  3. run a small HTTP workload per server for the account it is assigned;");
    println!("  4. drive a changing request load, so servers move between accounts and");
    println!("     site-a borrows from site-b or site-c when it runs short;");
    println!("  5. show a live table of servers, accounts and loans, and write a report.");
    println!();
    println!("Checking the federation's config files now:");
    match config::load_federation(&files) {
        Ok(sites) => {
            for site in &sites {
                println!("  ok  {}", site.summary());
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("the example configs are refused; fix them, nothing was started");
            Ok(ExitCode::from(78))
        }
    }
}
