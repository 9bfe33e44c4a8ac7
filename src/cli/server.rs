//! `leasehold server drain|undrain ID`: take a server out of use for maintenance and give it
//! back, through the gateway's admin API with a token of role `write` (docs/operations.md,
//! "Maintenance").

use std::process::ExitCode;

use anyhow::Context as _;
use serde_json::{Value, json};

use super::admin_client::{AdminArgs, Gateway};

#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    #[command(subcommand)]
    pub command: ServerCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum ServerCommand {
    /// Take server ID out of use: it drains once its account has its minimum without it
    /// (or at once with --force), then stays free until undrained.
    Drain {
        /// The server, e.g. `a1`.
        id: String,
        /// Why, for the audit log.
        #[arg(long, default_value = "maintenance")]
        reason: String,
        /// Drain now, even if that leaves its account below its minimum.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Give server ID back: it is free for any account again.
    Undrain {
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

pub fn run(args: ServerArgs) -> anyhow::Result<ExitCode> {
    let (gateway, path, body) = match &args.command {
        ServerCommand::Drain {
            id,
            reason,
            force,
            admin,
        } => (
            Gateway::new(admin)?,
            format!("/v1/servers/{id}/drain"),
            json!({"reason": reason, "force": force}),
        ),
        ServerCommand::Undrain { id, admin } => (
            Gateway::new(admin)?,
            format!("/v1/servers/{id}/undrain"),
            json!({}),
        ),
    };
    let server = gateway
        .post(&path, &body)
        .with_context(|| format!("asking {} for {path}", gateway.url()))?;
    println!("{}", describe(&server));
    Ok(ExitCode::SUCCESS)
}

/// One line: the server, its state, and what its maintenance waits for.
fn describe(server: &Value) -> String {
    let text = |value: &Value| value.as_str().unwrap_or("?").to_owned();
    let mut line = format!("{}: {}", text(&server["id"]), text(&server["state"]));
    if let Some(account) = server["account"].as_str() {
        line.push_str(&format!(" ({account})"));
    }
    match server.get("maintenance") {
        Some(maintenance) => {
            line.push_str(&format!(
                "; in maintenance, asked by {}: {}",
                text(&maintenance["by"]),
                text(&maintenance["reason"])
            ));
            if let Some(waiting) = maintenance["waiting"].as_str() {
                line.push_str(&format!("; {waiting}"));
            }
        }
        None => line.push_str("; in use"),
    }
    line
}
