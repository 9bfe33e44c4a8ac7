//! A real etcd cluster on loopback (Debian's `etcd-server`), for the standby gateways'
//! tests: one member or three, each its own process and data directory, members killed and
//! started again as the faults ask.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;

use super::process::ProcessGuard;
use super::site::PortPicker;

/// Whether etcd can run here; the reason and the fix when it cannot.
pub fn etcd_available() -> Result<(), String> {
    match std::process::Command::new("etcd").arg("--version").output() {
        Ok(output) if output.status.success() => Ok(()),
        Ok(output) => Err(format!(
            "`etcd --version` failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )),
        Err(error) => Err(format!(
            "etcd is not installed ({error}): apt-get install etcd-server"
        )),
    }
}

pub struct EtcdMember {
    pub name: String,
    pub client_url: String,
    client: SocketAddr,
    args: Vec<String>,
    log: PathBuf,
    guard: Option<ProcessGuard>,
}

/// A cluster of members on loopback; dropped, every member is killed.
pub struct EtcdCluster {
    pub members: Vec<EtcdMember>,
    /// The clients' TLS (https client URLs), if any.
    tls: Option<EtcdTls>,
}

/// PEM files for client URLs over TLS that ask clients for a certificate.
#[derive(Clone, Debug)]
pub struct EtcdTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl EtcdCluster {
    /// Starts `size` members in `dir` and waits until the cluster has a leader.
    pub fn start(dir: &Path, size: usize) -> Result<EtcdCluster, String> {
        EtcdCluster::start_with(dir, size, None)
    }

    /// [`EtcdCluster::start`], with client URLs over TLS when `tls` is given: the server
    /// certificate and key given, clients' certificates checked against the CA.
    pub fn start_with(
        dir: &Path,
        size: usize,
        tls: Option<EtcdTls>,
    ) -> Result<EtcdCluster, String> {
        let scheme = if tls.is_some() { "https" } else { "http" };
        std::fs::create_dir_all(dir)
            .map_err(|error| format!("cannot create {}: {error}", dir.display()))?;
        let mut picker = PortPicker::default();
        let mut ports = Vec::new();
        for _ in 0..size {
            ports.push((picker.pick()?, picker.pick()?));
        }
        let initial = ports
            .iter()
            .enumerate()
            .map(|(ix, (_, peer))| format!("m{ix}=http://127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let token = format!(
            "leasehold-test-{}-{}",
            std::process::id(),
            ports.first().map_or(0, |(client, _)| *client)
        );
        let members = ports
            .iter()
            .enumerate()
            .map(|(ix, (client, peer))| {
                let name = format!("m{ix}");
                let client_url = format!("{scheme}://127.0.0.1:{client}");
                let peer_url = format!("http://127.0.0.1:{peer}");
                let args = [
                    "--name",
                    &name,
                    "--data-dir",
                    &dir.join(&name).display().to_string(),
                    "--listen-client-urls",
                    &client_url,
                    "--advertise-client-urls",
                    &client_url,
                    "--listen-peer-urls",
                    &peer_url,
                    "--initial-advertise-peer-urls",
                    &peer_url,
                    "--initial-cluster",
                    &initial,
                    "--initial-cluster-token",
                    &token,
                    "--initial-cluster-state",
                    "new",
                    // History is compacted as docs/ha.md asks of an operator's cluster.
                    "--auto-compaction-mode",
                    "periodic",
                    "--auto-compaction-retention",
                    "1h",
                    "--logger",
                    "zap",
                ]
                .map(str::to_owned)
                .to_vec();
                let mut args = args;
                if let Some(tls) = &tls {
                    for (flag, path) in [
                        ("--cert-file", &tls.cert),
                        ("--key-file", &tls.key),
                        ("--trusted-ca-file", &tls.ca),
                    ] {
                        args.push(flag.to_owned());
                        args.push(path.display().to_string());
                    }
                    args.push("--client-cert-auth".to_owned());
                }
                EtcdMember {
                    log: dir.join(format!("{name}.log")),
                    name,
                    client_url,
                    client: SocketAddr::from(([127, 0, 0, 1], *client)),
                    args,
                    guard: None,
                }
            })
            .collect();
        // The ports are the members' from here on.
        drop(picker);
        let mut cluster = EtcdCluster { members, tls };
        for ix in 0..size {
            cluster.start_member(ix)?;
        }
        cluster.wait_healthy(Duration::from_secs(60))?;
        Ok(cluster)
    }

    /// The client URLs of every member.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|member| member.client_url.clone())
            .collect()
    }

    /// Starts member `ix` (again), on its data directory.
    pub fn start_member(&mut self, ix: usize) -> Result<(), String> {
        let member = &mut self.members[ix];
        let guard = ProcessGuard::spawn(
            &format!("etcd-{}", member.name),
            Path::new("etcd"),
            &member.args,
            &member.log,
        )?;
        member.guard = Some(guard);
        Ok(())
    }

    /// kill -9 of member `ix`.
    pub fn kill_member(&mut self, ix: usize) -> Result<(), String> {
        let member = &mut self.members[ix];
        match member.guard.take() {
            Some(mut guard) => {
                guard.signal(Signal::SIGKILL)?;
                super::wait_for("the etcd member to exit", Duration::from_secs(10), || {
                    if guard.exited() {
                        Ok(())
                    } else {
                        Err("running".to_owned())
                    }
                })
            }
            None => Err(format!("etcd member {} is not running", member.name)),
        }
    }

    /// Waits until every running member reports the cluster healthy (it has a leader and
    /// a quorum). Over TLS the harness has no client to ask `/health` with; there each
    /// member's log says when it serves clients, which it does only once the cluster has a
    /// leader.
    pub fn wait_healthy(&mut self, timeout: Duration) -> Result<(), String> {
        let tls = self.tls.is_some();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(2)))
            .http_status_as_error(false)
            .build()
            .into();
        let members = &mut self.members;
        super::wait_for("etcd to report itself healthy", timeout, || {
            for member in members.iter_mut() {
                let Some(guard) = member.guard.as_mut() else {
                    continue;
                };
                if guard.exited() {
                    return Err(format!(
                        "etcd member {} exited: {}",
                        member.name,
                        tail(&guard.output())
                    ));
                }
                if tls {
                    if !guard.output().contains("serving client traffic securely") {
                        return Err(format!("{} not serving yet", member.name));
                    }
                    continue;
                }
                let body = agent
                    .get(format!("http://{}/health", member.client))
                    .call()
                    .map_err(|error| format!("{}: {error}", member.name))?
                    .body_mut()
                    .read_to_string()
                    .map_err(|error| format!("{}: {error}", member.name))?;
                if !body.contains("\"health\":\"true\"") {
                    return Err(format!("{}: {body}", member.name));
                }
            }
            Ok(())
        })
    }

    /// The last lines of member `ix`'s log, for failure messages.
    pub fn log_tail(&self, ix: usize) -> String {
        tail(&std::fs::read_to_string(&self.members[ix].log).unwrap_or_default())
    }
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
