//! `leasehold`: one binary for operators, with subcommands in the style of the
//! infrastructure tools they already use. Parses arguments, then calls into the crates.

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// `leasehold --version`: the release, and the protocols it speaks, which say whether two
/// releases can run side by side during an upgrade (docs/operations.md, "Upgrades").
static LONG_VERSION: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    use leasehold_federation::transport::Alpn;
    format!(
        "{}\nsite to site: {}; node to gateway: {}; envelope: wire version {}",
        env!("CARGO_PKG_VERSION"),
        Alpn::Site.spoken(),
        Alpn::Node.spoken(),
        leasehold_federation::wire::WIRE_VERSION,
    )
});

#[derive(Debug, Parser)]
#[command(
    name = "leasehold",
    version,
    long_version = LONG_VERSION.as_str(),
    about = "Servers for every account, at every site, never by two at once."
)]
struct Cli {
    /// How log lines look on stderr: `text` for people, `json` (one object per line) for
    /// log collectors. The level comes from LEASEHOLD_LOG (default `info`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check per-site config files.
    Config(cli::config::ConfigArgs),
    /// Create the federation's CA and issue site, node and admin certificates.
    Certs(cli::certs::CertsArgs),
    /// Run a site gateway.
    Gateway(cli::gateway::GatewayArgs),
    /// Run the node agent of one server.
    Node(cli::node::NodeArgs),
    /// Run many simulated servers in one process.
    Fleet(cli::fleet::FleetArgs),
    /// Run the demo workload: a small HTTP service that reports its own load.
    Workload(cli::workload::WorkloadArgs),
    /// Measure the decision core.
    Bench(cli::bench::BenchArgs),
    /// Run the demo on this machine: the three sites of configs/, real node agents and workloads.
    Demo(cli::demo::DemoArgs),
    /// Run a seeded fault campaign on a federation of real processes and check invariants.
    Chaos(cli::chaos::ChaosArgs),
    /// Simulate a whole federation on a virtual clock under faults drawn from a seed.
    Sim(cli::sim::SimArgs),
    /// Show a site at a glance: accounts and their SLA, servers by state, latest decisions.
    Status(cli::status::StatusArgs),
    /// Print a gateway's audit log, each decision with its reason; --follow to tail it.
    Audit(cli::audit::AuditArgs),
    /// Make, remove and list the tokens of a site's admin address.
    Token(cli::token::TokenArgs),
    /// Take a server out of use for maintenance, and give it back.
    Server(cli::server::ServerArgs),
    /// Back up a gateway's journal, check a backup, restore one, compact a journal.
    Journal(cli::journal::JournalArgs),
    /// Replay a demand trace through a site's decisions; compare with the bounds, or two configs.
    Replay(cli::replay::ReplayArgs),
    /// Make demand traces for `leasehold replay`.
    Trace(cli::replay::TraceArgs),
}

/// Exit status of a process a closed pipe ended, as a shell reports SIGPIPE (128 + 13).
const CLOSED_PIPE: i32 = 141;

/// `leasehold status | head` closes the pipe before the last line: end quietly, as other
/// command-line tools do, rather than with a panic's message and backtrace. Only the
/// standard library's failure to print to stdout or stderr is meant; any other panic
/// reports as before.
fn quiet_on_closed_pipe() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("failed printing to std") && message.contains("Broken pipe") {
            std::process::exit(CLOSED_PIPE);
        }
        report(info);
    }));
}

fn main() -> ExitCode {
    quiet_on_closed_pipe();
    let cli = Cli::parse();
    // A fleet runs thousands of the agent's `Server` actors and links: their lines for each
    // pointer, workload and dial would drown its progress, and it counts what they would say
    // (D-50).
    let default_filter = match cli.command {
        Command::Fleet(_) => {
            "info,leasehold_node::actors::server=warn,leasehold_node::actors::link=error"
        }
        _ => "info",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("LEASEHOLD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    // Colours for a person at a terminal; none in a file or a journal.
    let colours = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colours)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
    let outcome = match cli.command {
        Command::Config(args) => cli::config::run(args),
        Command::Certs(args) => cli::certs::run(args),
        Command::Gateway(args) => cli::gateway::run(args),
        Command::Node(args) => cli::node::run(args),
        Command::Fleet(args) => cli::fleet::run(args),
        Command::Workload(args) => cli::workload::run(args),
        Command::Bench(args) => cli::bench::run(args),
        Command::Demo(args) => cli::demo::run(args),
        Command::Chaos(args) => cli::chaos::run(args),
        Command::Sim(args) => cli::sim::run_sim(args),
        Command::Status(args) => cli::status::run(args),
        Command::Audit(args) => cli::audit::run(args),
        Command::Token(args) => cli::token::run(args),
        Command::Server(args) => cli::server::run(args),
        Command::Journal(args) => cli::journal::run(args),
        Command::Replay(args) => cli::replay::run(args),
        Command::Trace(args) => cli::replay::run_trace(args),
    };
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {}", chain_text(&error));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes, each joined with ": ", but without a cause whose words the
/// message already carries: many of our errors say their source in their own words and
/// also name it as their source, which would print it twice.
fn chain_text(error: &anyhow::Error) -> String {
    let mut text = error.to_string();
    for cause in error.chain().skip(1) {
        let words = cause.to_string();
        if !text.contains(&words) {
            text.push_str(": ");
            text.push_str(&words);
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::chain_text;

    /// An error that says its source in its message and also names it as its source.
    #[derive(Debug)]
    struct SaysItsSource {
        source: std::io::Error,
    }

    impl std::fmt::Display for SaysItsSource {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "cannot listen on 127.0.0.1:7000: {}", self.source)
        }
    }

    impl std::error::Error for SaysItsSource {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.source)
        }
    }

    #[test]
    fn a_cause_is_printed_once_even_when_the_message_already_says_it() {
        let said = anyhow::Error::new(SaysItsSource {
            source: std::io::Error::other("Address already in use"),
        });
        assert_eq!(
            chain_text(&said),
            "cannot listen on 127.0.0.1:7000: Address already in use"
        );
        let unsaid = anyhow::Error::new(std::io::Error::other("Address already in use"))
            .context("cannot listen for the admin API");
        assert_eq!(
            chain_text(&unsaid),
            "cannot listen for the admin API: Address already in use"
        );
    }
}
