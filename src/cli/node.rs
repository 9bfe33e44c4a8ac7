//! `leasehold node run`: the node agent of one server; and the hidden `leasehold node
//! guard`, the parent the agent puts between itself and every workload.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use leasehold_federation::addr::HostPort;
use leasehold_federation::ids::ServerId;
use leasehold_node::agent::{AgentOptions, run_agent};
use leasehold_node::boot_args::BootArgs;
use leasehold_node::driver::guard::run_guard;
use leasehold_node::event_log::Rotation;

#[derive(Debug, clap::Args)]
pub struct NodeArgs {
    #[command(subcommand)]
    pub command: NodeCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum NodeCommand {
    /// Run the agent: register with the site gateway, apply its pointers under leases,
    /// run the account's workload, keep the event log. Stops the workload on SIGTERM.
    Run {
        /// The site gateway's management address, HOST:PORT: an IP, or a DNS name resolved
        /// at every connect (from --boot-args on a machine). Give it once for each gateway
        /// of the site (one active, the others standby), in any order: the agent dials them
        /// all at once and registers with the one that accepts.
        #[arg(long, value_name = "HOST:PORT", required_unless_present = "boot_args")]
        gateway: Vec<HostPort>,
        /// This server's id; its certificate is DIR/nodes/ID.crt (from --boot-args on a
        /// machine).
        #[arg(long, value_name = "ID", required_unless_present = "boot_args")]
        id: Option<ServerId>,
        /// On a machine booted by the site's boot service: the kernel command line to
        /// read the server, gateway, epoch and boot token from (e.g. /proc/cmdline).
        #[arg(long, value_name = "FILE", conflicts_with_all = ["gateway", "id"])]
        boot_args: Option<PathBuf>,
        /// Directory made by `leasehold certs`.
        #[arg(long, value_name = "DIR")]
        certs: PathBuf,
        /// Event log, data and scratch dirs [default: ./leasehold-node-<ID>].
        #[arg(long, value_name = "DIR")]
        work: Option<PathBuf>,
        /// How long a new workload may take to pass its health check.
        #[arg(long, value_name = "MS", default_value_t = 10_000)]
        start_timeout_ms: u64,
        /// Serve the agent's Prometheus metrics at http://ADDR/metrics (plain HTTP: bind it
        /// to loopback or the management network).
        #[arg(long, value_name = "ADDR")]
        metrics_addr: Option<std::net::SocketAddr>,
        /// Rotate the event log once its file reaches this many bytes (docs/node.md,
        /// "Event log rotation").
        #[arg(long, value_name = "BYTES", default_value_t = Rotation::DEFAULT_MAX_BYTES,
              value_parser = clap::value_parser!(u64).range(1024..))]
        event_log_max_bytes: u64,
        /// Keep this many rotated event log files; older ones are removed.
        #[arg(long, value_name = "N", default_value_t = Rotation::DEFAULT_KEEP)]
        event_log_keep: usize,
        /// Speak only this version of the management protocol (leasehold-node/N), not
        /// every version this build speaks: to stand in for an agent of the previous
        /// release (docs/wire.md, "Versioning").
        #[arg(long, value_name = "N", value_parser = super::node_protocol)]
        node_protocol: Option<u16>,
    },
    /// Internal: run a workload that dies with its agent (started by the agent).
    #[command(hide = true)]
    Guard {
        #[arg(long, value_name = "PID")]
        agent_pid: u32,
        #[arg(long, value_name = "FILE")]
        pid_file: PathBuf,
        /// The workload's command and arguments.
        #[arg(last = true, required = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
}

pub fn run(args: NodeArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        NodeCommand::Run {
            gateway,
            id,
            boot_args,
            certs,
            work,
            start_timeout_ms,
            metrics_addr,
            event_log_max_bytes,
            event_log_keep,
            node_protocol,
        } => {
            let (gateways, id, boot) = match (boot_args, gateway, id) {
                (Some(path), _, _) => {
                    let args = BootArgs::read(&path)?;
                    (vec![args.gateway.into()], args.server, Some(args.claim))
                }
                (None, gateways, Some(id)) if !gateways.is_empty() => (gateways, id, None),
                _ => anyhow::bail!("give --gateway and --id, or --boot-args"),
            };
            let work = work.unwrap_or_else(|| PathBuf::from(format!("leasehold-node-{id}")));
            run_agent(AgentOptions {
                gateways,
                server: id,
                certs,
                work,
                start_timeout: Duration::from_millis(start_timeout_ms),
                boot,
                metrics_addr,
                event_log: Rotation {
                    max_bytes: event_log_max_bytes,
                    keep: event_log_keep,
                },
                node_protocol,
            })?;
            Ok(ExitCode::SUCCESS)
        }
        NodeCommand::Guard {
            agent_pid,
            pid_file,
            command,
        } => {
            let (program, rest) = command
                .split_first()
                .ok_or_else(|| anyhow::anyhow!("guard: no command given"))?;
            let code = run_guard(agent_pid, &pid_file, program, rest);
            Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
        }
    }
}
