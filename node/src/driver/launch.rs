//! How a pointer becomes a command line: directories, environment and `{placeholders}`.
//! Pure, so the rules are tested without starting anything.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use leasehold_federation::ids::ServerId;
use leasehold_federation::placeholders::expand;
use leasehold_federation::wire::common::InitPointer;

/// What the agent knows that a pointer does not.
#[derive(Debug, Clone)]
pub struct LaunchContext {
    /// The agent's absolute work dir.
    pub work: PathBuf,
    pub server: ServerId,
    /// The agent's own executable, for `{leasehold}` and for the guard.
    pub agent_exe: PathBuf,
    /// From the gateway's `Registration`.
    pub service_addr: String,
}

/// Everything needed to start one workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchPlan {
    pub program: String,
    pub args: Vec<String>,
    /// Set on top of the agent's environment.
    pub env: BTreeMap<String, String>,
    pub data_dir: PathBuf,
    pub scratch_dir: PathBuf,
    pub health_url: Option<String>,
    /// The metrics URL and the metric whose values are summed for load.
    pub metrics: Option<(String, String)>,
}

/// `<work>/scratch/<account>`: the account's throwaway space, cleared when the server
/// moves to another account.
pub fn scratch_dir(work: &Path, account: &str) -> PathBuf {
    work.join("scratch").join(account)
}

pub fn plan(pointer: &InitPointer, context: &LaunchContext) -> LaunchPlan {
    let software = &pointer.software;
    // A relative data dir lives under the work dir; `join` keeps an absolute one as is.
    let data_dir = context.work.join(&pointer.data.dir);
    let scratch_dir = scratch_dir(&context.work, pointer.account.as_str());
    let value = |name: &str| match name {
        "leasehold" => Some(context.agent_exe.display().to_string()),
        "service_addr" => Some(context.service_addr.clone()),
        "data_dir" => Some(data_dir.display().to_string()),
        "account" => Some(pointer.account.to_string()),
        "epoch" => Some(pointer.epoch.value().to_string()),
        "server" => Some(context.server.to_string()),
        _ => None,
    };
    let mut env: BTreeMap<String, String> = software
        .env
        .iter()
        .map(|(key, template)| (key.clone(), expand(template, value)))
        .collect();
    // Secrets as given, without placeholders: a value is never rewritten, and the config
    // check keeps their names apart from `env` and from LEASEHOLD_*.
    for (key, value) in pointer.secrets.reveal() {
        env.insert(key.clone(), value.clone());
    }
    for (key, fixed) in [
        ("LEASEHOLD_ACCOUNT", pointer.account.to_string()),
        ("LEASEHOLD_EPOCH", pointer.epoch.value().to_string()),
        ("LEASEHOLD_SERVER", context.server.to_string()),
        ("LEASEHOLD_DATA", data_dir.display().to_string()),
        ("LEASEHOLD_SCRATCH", scratch_dir.display().to_string()),
    ] {
        env.insert(key.to_owned(), fixed);
    }
    let url = |path: &str| format!("http://{}{path}", context.service_addr);
    LaunchPlan {
        program: expand(&software.command, value),
        args: software.args.iter().map(|a| expand(a, value)).collect(),
        env,
        data_dir: data_dir.clone(),
        scratch_dir,
        health_url: software.health_path.as_deref().map(url),
        metrics: software
            .metrics_path
            .as_deref()
            .zip(software.load_metric.as_deref())
            .map(|(path, metric)| (url(path), metric.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use leasehold_federation::ids::{AccountId, Epoch};
    use leasehold_federation::wire::common::{DataRef, Software};

    use super::*;

    #[test]
    fn placeholders_env_and_directories() {
        let pointer = InitPointer {
            account: AccountId::parse("shop").unwrap(),
            software: Software {
                label: "v1".into(),
                command: "{leasehold}".into(),
                args: vec![
                    "--listen".into(),
                    "{service_addr}".into(),
                    "{data_dir}/x".into(),
                ],
                env: BTreeMap::from([(
                    "GREETING".into(),
                    "hi {account} e{epoch} on {server}".into(),
                )]),
                health_path: Some("/health".into()),
                metrics_path: Some("/metrics".into()),
                load_metric: Some("load".into()),
                stop_timeout_ms: 100,
            },
            data: DataRef {
                dir: "data/shop".into(),
            },
            epoch: Epoch::from_journal(7),
            secrets: leasehold_federation::wire::common::Secrets::new(BTreeMap::from([(
                "DB_PASSWORD".into(),
                "{account} stays as written".into(),
            )])),
        };
        let context = LaunchContext {
            work: PathBuf::from("/w"),
            server: ServerId::parse("a1").unwrap(),
            agent_exe: PathBuf::from("/bin/leasehold"),
            service_addr: "127.0.0.1:9".into(),
        };
        let plan = plan(&pointer, &context);
        assert_eq!(plan.program, "/bin/leasehold");
        assert_eq!(plan.args, vec!["--listen", "127.0.0.1:9", "/w/data/shop/x"]);
        assert_eq!(plan.env["GREETING"], "hi shop e7 on a1");
        assert_eq!(plan.env["DB_PASSWORD"], "{account} stays as written");
        assert_eq!(plan.env["LEASEHOLD_EPOCH"], "7");
        assert_eq!(plan.env["LEASEHOLD_SCRATCH"], "/w/scratch/shop");
        assert_eq!(plan.data_dir, PathBuf::from("/w/data/shop"));
        assert_eq!(
            plan.health_url.as_deref(),
            Some("http://127.0.0.1:9/health")
        );
        assert_eq!(
            plan.metrics,
            Some(("http://127.0.0.1:9/metrics".into(), "load".into()))
        );
    }
}
