//! A node agent of a site with several gateways (`leasehold node run --gateway A --gateway
//! B`), one active and the others standby or dead: it dials them all at once and registers
//! with the one that accepts, in whatever order they are given (docs/node.md, "Several
//! gateways"). The gateways are stand-ins that speak the management channel over real QUIC:
//! a standby refuses every registration, naming the active gateway, as a standby gateway
//! does; the active one accepts.

use std::collections::BTreeSet;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use leasehold_federation::ids::{ServerId, SiteId};
use leasehold_federation::transport::Alpn;
use leasehold_federation::transport::certs::load_site_identity;
use leasehold_federation::transport::connection::{Connection, Inbox};
use leasehold_federation::transport::endpoint::{Endpoint, Limits};
use leasehold_federation::transport::identity::PeerPolicy;
use leasehold_federation::wire::common::{Refusal, RefusalCause};
use leasehold_federation::wire::node::Registration;
use leasehold_federation::wire::{Inbound, InboundRequest};
use serde_json::Value;
use tempfile::TempDir;

const BINARY: &str = env!("CARGO_BIN_EXE_leasehold");
/// What the agent tells a gateway it does not keep (node/src/actors/link.rs).
const CLOSED_FOR_ANOTHER: &str = "registered with another gateway of the site";
/// Generous: the machine is shared; nothing here judges how fast.
const WITHIN: Duration = Duration::from_secs(30);

fn site_a() -> SiteId {
    SiteId::parse("site-a").unwrap()
}

fn leasehold(args: &[&str]) {
    let output = Command::new(BINARY).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "leasehold {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Certificates for site-a's gateways and its node a1.
fn certificates(dir: &Path) -> PathBuf {
    let certs = dir.join("certs");
    let d = certs.to_str().unwrap();
    leasehold(&["certs", "init", "--dir", d]);
    leasehold(&["certs", "issue", "--dir", d, "--site", "site-a"]);
    leasehold(&[
        "certs", "issue", "--dir", d, "--site", "site-a", "--node", "a1",
    ]);
    certs
}

/// A UDP port with nothing listening on it: a gateway that died.
fn dead_gateway() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Role {
    Active,
    Standby,
}

/// A connection a stand-in accepted, and whether the node registered on it.
struct Seen {
    connection: Connection,
    registered: bool,
}

/// One of site-a's gateways, played by the test on its management channel.
struct StandIn {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Registrations refused (a standby's).
    refused: Arc<AtomicUsize>,
    endpoint: Arc<Endpoint>,
}

impl StandIn {
    fn start(certs: &Path, role: Role) -> StandIn {
        StandIn::start_holding(certs, role, None)
    }

    /// An active gateway that answers a registration only once `standby` has refused one
    /// (or after 10 s): so the agent always hears the standby's refusal first, whatever the
    /// order of the handshakes.
    fn start_after(certs: &Path, standby: &StandIn) -> StandIn {
        StandIn::start_holding(certs, Role::Active, Some(standby.refused.clone()))
    }

    fn start_holding(certs: &Path, role: Role, hold: Option<Arc<AtomicUsize>>) -> StandIn {
        let identity = load_site_identity(certs, &site_a()).unwrap();
        let policy = PeerPolicy::Nodes {
            site: site_a(),
            servers: BTreeSet::from([ServerId::parse("a1").unwrap()]),
        };
        let endpoint = Arc::new(
            Endpoint::listen(
                "127.0.0.1:0".parse().unwrap(),
                &identity,
                Alpn::Node,
                policy,
                Limits::management(),
            )
            .unwrap(),
        );
        let seen = Arc::new(Mutex::new(Vec::new()));
        let refused = Arc::new(AtomicUsize::new(0));
        let (listener, record, refusals) = (endpoint.clone(), seen.clone(), refused.clone());
        tokio::spawn(async move {
            while let Some(handshake) = listener.accept().await {
                let Ok((connection, inbox)) = handshake.finish().await else {
                    continue;
                };
                let at = {
                    let mut seen = record.lock().unwrap();
                    seen.push(Seen {
                        connection: connection.clone(),
                        registered: false,
                    });
                    seen.len() - 1
                };
                let answering = Answering {
                    role,
                    seen: record.clone(),
                    at,
                    refused: refusals.clone(),
                    hold: hold.clone(),
                };
                tokio::spawn(serve(inbox, answering));
            }
        });
        StandIn {
            addr: endpoint.local_addr().unwrap(),
            seen,
            refused,
            endpoint,
        }
    }

    /// Connections the node registered on and has not closed.
    fn registered_open(&self) -> usize {
        let seen = self.seen.lock().unwrap();
        seen.iter()
            .filter(|seen| seen.registered && seen.connection.close_reason().is_none())
            .count()
    }

    /// Why each connection closed (`None`: still open); the node's reasons as it sent them.
    fn close_reasons(&self) -> Vec<Option<String>> {
        let seen = self.seen.lock().unwrap();
        seen.iter()
            .map(|seen| {
                seen.connection.close_reason().map(|why| match why {
                    quinn::ConnectionError::ApplicationClosed(close) => {
                        String::from_utf8_lossy(&close.reason).into_owned()
                    }
                    other => other.to_string(),
                })
            })
            .collect()
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.endpoint.close("the test is over");
    }
}

/// How a stand-in answers on one connection.
struct Answering {
    role: Role,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// This connection's place in `seen`.
    at: usize,
    refused: Arc<AtomicUsize>,
    /// Accept only once this count (a standby's refusals) is above zero.
    hold: Option<Arc<AtomicUsize>>,
}

async fn serve(mut inbox: Inbox, answering: Answering) {
    // Pulses and anything else the node sends are of no interest here.
    while let Some(Ok(message)) = inbox.next().await {
        let Inbound::Request(InboundRequest::RegisterServer(_, reply)) = message else {
            continue;
        };
        let answer = match answering.role {
            Role::Active => {
                if let Some(hold) = &answering.hold {
                    let limit = Instant::now() + Duration::from_secs(10);
                    while hold.load(Ordering::SeqCst) == 0 && Instant::now() < limit {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
                answering.seen.lock().unwrap()[answering.at].registered = true;
                Registration::Accepted {
                    site: site_a(),
                    heartbeat_interval_ms: 100,
                    lease_ttl_ms: 2000,
                    renew_interval_ms: 500,
                    service_addr: "127.0.0.1:9".into(),
                    generation: None,
                }
            }
            Role::Standby => {
                answering.refused.fetch_add(1, Ordering::SeqCst);
                Registration::Refused(Refusal {
                    cause: RefusalCause::NotAllowed,
                    detail: "standby gateway gw-2 of site-a; the active gateway is gw-1".into(),
                })
            }
        };
        let _ = reply.send(&answer).await;
    }
}

/// `leasehold node run` with one `--gateway` for each of `gateways`, in that order; killed
/// when dropped.
struct Agent {
    child: Child,
    log: PathBuf,
}

impl Agent {
    fn start(dir: &Path, certs: &Path, gateways: &[SocketAddr]) -> Agent {
        let log = dir.join("agent.log");
        let output = std::fs::File::create(&log).unwrap();
        let mut command = Command::new(BINARY);
        command.args(["--log-format", "json", "node", "run", "--id", "a1"]);
        for gateway in gateways {
            command.arg("--gateway").arg(gateway.to_string());
        }
        let child = command
            .arg("--certs")
            .arg(certs)
            .arg("--work")
            .arg(dir.join("work"))
            .env("LEASEHOLD_LOG", "info,leasehold_node=debug")
            .stdout(output.try_clone().unwrap())
            .stderr(output)
            .spawn()
            .unwrap();
        Agent { child, log }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The agent's log lines whose message is `message`.
    fn lines(&self, message: &str) -> Vec<Value> {
        self.output()
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|line| line["message"] == message)
            .collect()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `probe` until it holds; on timeout panics with `last()`.
async fn wait_until(what: &str, probe: impl Fn() -> bool, last: impl Fn() -> String) {
    let deadline = Instant::now() + WITHIN;
    while !probe() {
        assert!(
            Instant::now() < deadline,
            "waited {WITHIN:?} for {what}; {}",
            last()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts an agent given `gateways` in that order, and checks that it registers with the
/// active one, `active`: one open registered connection there, the `registered` line
/// naming it, and (when `standbys` are given) each standby's refusal logged at info level
/// with its detail and its connection closed.
async fn registers_with_the_active(
    dir: &Path,
    certs: &Path,
    gateways: &[SocketAddr],
    active: &StandIn,
    standbys: &[&StandIn],
) {
    let agent = Agent::start(dir, certs, gateways);
    wait_until(
        "the agent to register with the active gateway",
        || active.registered_open() == 1 && !agent.lines("registered").is_empty(),
        || agent.output(),
    )
    .await;
    let registered = agent.lines("registered");
    assert_eq!(registered.len(), 1, "{}", agent.output());
    assert_eq!(
        registered[0]["gateway"],
        active.addr.to_string(),
        "{}",
        agent.output()
    );
    for standby in standbys {
        assert!(standby.refused.load(Ordering::SeqCst) > 0);
        wait_until(
            "the standby's connections to be closed",
            || {
                let reasons = standby.close_reasons();
                !reasons.is_empty() && reasons.iter().all(Option::is_some)
            },
            || format!("{:?}\n{}", standby.close_reasons(), agent.output()),
        )
        .await;
        let refused: Vec<Value> = agent
            .lines("the gateway refused registration")
            .into_iter()
            .filter(|line| line["gateway"] == standby.addr.to_string())
            .collect();
        assert!(!refused.is_empty(), "{}", agent.output());
        for line in &refused {
            assert_eq!(line["level"], "INFO", "{line}");
            let refusal = line["refusal"].as_str().unwrap_or_default();
            assert!(
                refusal.contains("NotAllowed") && refusal.contains("the active gateway is gw-1"),
                "{line}"
            );
        }
    }
    // The connection it took is the one it keeps.
    assert_eq!(active.registered_open(), 1, "{}", agent.output());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_registers_with_the_active_gateway_whichever_comes_first() {
    let dir = TempDir::new().unwrap();
    let certs = certificates(dir.path());

    // The standby first.
    let standby = StandIn::start(&certs, Role::Standby);
    let active = StandIn::start_after(&certs, &standby);
    let first = dir.path().join("standby-first");
    std::fs::create_dir(&first).unwrap();
    registers_with_the_active(
        &first,
        &certs,
        &[standby.addr, active.addr],
        &active,
        &[&standby],
    )
    .await;

    // The active one first (new stand-ins, a new agent).
    let standby = StandIn::start(&certs, Role::Standby);
    let active = StandIn::start_after(&certs, &standby);
    let second = dir.path().join("active-first");
    std::fs::create_dir(&second).unwrap();
    registers_with_the_active(
        &second,
        &certs,
        &[active.addr, standby.addr],
        &active,
        &[&standby],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_registers_with_the_active_gateway_while_another_does_not_answer() {
    let dir = TempDir::new().unwrap();
    let certs = certificates(dir.path());
    let active = StandIn::start(&certs, Role::Active);
    let dead = dead_gateway();
    let first = dir.path().join("dead-first");
    std::fs::create_dir(&first).unwrap();
    registers_with_the_active(&first, &certs, &[dead, active.addr], &active, &[]).await;

    let active = StandIn::start(&certs, Role::Active);
    let second = dir.path().join("dead-second");
    std::fs::create_dir(&second).unwrap();
    registers_with_the_active(&second, &certs, &[active.addr, dead], &active, &[]).await;
}

/// Two gateways of one site that both accept (which a site's election should never let
/// happen): the agent keeps one registration and closes the other connection with a
/// reason, even one accepted after the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_keeps_one_registration_when_two_gateways_accept() {
    let dir = TempDir::new().unwrap();
    let certs = certificates(dir.path());
    let one = StandIn::start(&certs, Role::Active);
    let two = StandIn::start(&certs, Role::Active);
    let agent = Agent::start(dir.path(), &certs, &[one.addr, two.addr]);
    let (kept, other) = {
        let settled = || {
            let registered = agent.lines("registered");
            let kept = registered.first()?["gateway"].as_str()?.to_owned();
            let (kept, other) = if kept == one.addr.to_string() {
                (&one, &two)
            } else {
                (&two, &one)
            };
            let reasons = other.close_reasons();
            let closed = !reasons.is_empty() && reasons.iter().all(Option::is_some);
            (kept.registered_open() == 1 && closed).then_some((kept, other))
        };
        wait_until(
            "one registration kept and the other gateway's connection closed",
            || settled().is_some(),
            || {
                format!(
                    "{:?} {:?}\n{}",
                    one.close_reasons(),
                    two.close_reasons(),
                    agent.output()
                )
            },
        )
        .await;
        settled().unwrap()
    };
    assert_eq!(agent.lines("registered").len(), 1, "{}", agent.output());
    assert_eq!(kept.registered_open(), 1);
    assert_eq!(other.registered_open(), 0);
    for reason in other.close_reasons() {
        assert_eq!(
            reason.as_deref(),
            Some(CLOSED_FOR_ANOTHER),
            "{}",
            agent.output()
        );
    }
}

#[test]
fn gateways_of_both_families_or_one_given_twice_are_refused_at_start() {
    let dir = TempDir::new().unwrap();
    for (gateways, error) in [
        (
            &["127.0.0.1:7301", "[::1]:7302"][..],
            "--gateway 127.0.0.1:7301 is an IPv4 address and --gateway [::1]:7302 an IPv6 one",
        ),
        (
            &["127.0.0.1:7301", "127.0.0.2:7301", "127.0.0.1:7301"],
            "--gateway 127.0.0.1:7301 is given twice",
        ),
    ] {
        let mut command = Command::new(BINARY);
        command.args(["node", "run", "--id", "a1", "--certs"]);
        command.arg(dir.path().join("certs"));
        command.arg("--work").arg(dir.path().join("work"));
        for gateway in gateways {
            command.args(["--gateway", gateway]);
        }
        let output = command.output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(error), "{stderr}");
    }
}
