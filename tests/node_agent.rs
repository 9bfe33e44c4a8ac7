//! The node agent as real processes: `leasehold node run` against a test gateway that
//! speaks the management channel over real QUIC, running the real demo workload
//! (`leasehold workload`). Safety is judged from the agent's event log.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use leasehold_chaos_tests::harness::evidence::files_containing;
use leasehold_federation::ids::{AccountId, Epoch, ServerId, SiteId};
use leasehold_federation::transport::Alpn;
use leasehold_federation::transport::certs::load_site_identity;
use leasehold_federation::transport::connection::{Connection, Inbox};
use leasehold_federation::transport::endpoint::{Endpoint, Limits};
use leasehold_federation::transport::identity::PeerPolicy;
use leasehold_federation::wire::common::*;
use leasehold_federation::wire::node::*;
use leasehold_federation::wire::{Inbound, InboundOneWay, InboundRequest};
use leasehold_node::event_log::{
    Event, EventKind, StopReason, read_events, read_log, rotated_files,
};
use leasehold_node::evidence::check_server_log;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use tempfile::TempDir;

const TTL_MS: u64 = 1000;
const RENEW_MS: u64 = 250;
const STOP_TIMEOUT_MS: u64 = 2000;

fn leasehold(args: &[&str]) {
    let output = Command::new(env!("CARGO_BIN_EXE_leasehold"))
        .args(args)
        .output()
        .expect("run leasehold");
    assert!(
        output.status.success(),
        "leasehold {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn epoch(value: u64) -> Epoch {
    Epoch::from_journal(value)
}

fn a1() -> ServerId {
    ServerId::parse("a1").unwrap()
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Waits until `probe` returns something, polling; on timeout panics with what `last`
/// says was last seen.
async fn wait_for<T>(
    what: &str,
    within: Duration,
    mut probe: impl FnMut() -> Option<T>,
    last: impl Fn() -> String,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(found) = probe() {
            return found;
        }
        if Instant::now() > deadline {
            panic!("waited {within:?} for {what}; last seen: {}", last());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What the test gateway has seen.
#[derive(Default)]
struct Seen {
    registrations: Vec<RegisterServer>,
    pulses: Vec<Pulse>,
    joined: Vec<WorkloadJoined>,
    failed: Vec<WorkloadFailed>,
    stopped: Vec<WorkloadStopped>,
    connection: Option<Connection>,
    /// Pulses whose renewals the gateway chose not to answer (the node hears nothing).
    unanswered: Vec<Pulse>,
}

/// site-a's management listener, played by the test.
struct Gateway {
    addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
    answer_renewals: Arc<AtomicBool>,
    /// The lease TTL it grants (`TTL_MS` unless a test says otherwise).
    ttl_ms: Arc<AtomicU64>,
    /// The generation it stamps on acceptances, commands and renewals, as the active
    /// gateway of a site of standbys does; 0: none, as a site of one gateway.
    generation: Arc<AtomicU64>,
    _endpoint: Arc<Endpoint>,
}

impl Gateway {
    fn start(certs: &Path, service_addr: SocketAddr) -> Gateway {
        let identity = load_site_identity(certs, &SiteId::parse("site-a").unwrap()).unwrap();
        let policy = PeerPolicy::Nodes {
            site: SiteId::parse("site-a").unwrap(),
            servers: BTreeSet::from([a1()]),
        };
        let endpoint = Arc::new(
            Endpoint::listen(
                "127.0.0.1:0".parse().unwrap(),
                &identity,
                Alpn::Node,
                policy,
                Limits::default(),
            )
            .unwrap(),
        );
        let seen = Arc::new(Mutex::new(Seen::default()));
        let answer_renewals = Arc::new(AtomicBool::new(true));
        let ttl_ms = Arc::new(AtomicU64::new(TTL_MS));
        let generation = Arc::new(AtomicU64::new(0));
        let (listener, state, answering, ttl, stamp) = (
            endpoint.clone(),
            seen.clone(),
            answer_renewals.clone(),
            ttl_ms.clone(),
            generation.clone(),
        );
        tokio::spawn(async move {
            while let Some(handshake) = listener.accept().await {
                let (connection, inbox) = handshake.finish().await.unwrap();
                state.lock().unwrap().connection = Some(connection.clone());
                tokio::spawn(serve(
                    connection,
                    inbox,
                    state.clone(),
                    answering.clone(),
                    (ttl.clone(), stamp.clone()),
                    service_addr.to_string(),
                ));
            }
        });
        Gateway {
            addr: endpoint.local_addr().unwrap(),
            seen,
            answer_renewals,
            ttl_ms,
            generation,
            _endpoint: endpoint,
        }
    }

    fn connection(&self) -> Connection {
        self.seen
            .lock()
            .unwrap()
            .connection
            .clone()
            .expect("connected")
    }

    /// The generation it stamps now, if any.
    fn stamp(&self) -> Option<u64> {
        stamp_of(&self.generation)
    }

    async fn apply(&self, server: ServerId, pointer: InitPointer) -> PointerApplication {
        self.apply_as(self.stamp(), server, pointer).await
    }

    /// [`Gateway::apply`] stamped with `generation`, whatever the gateway's own is.
    async fn apply_as(
        &self,
        generation: Option<u64>,
        server: ServerId,
        pointer: InitPointer,
    ) -> PointerApplication {
        let request = ApplyPointer {
            server,
            pointer,
            generation,
        };
        self.connection().request(&request).await.unwrap()
    }

    async fn stop(&self, at: Epoch, drain_ms: u64) -> StopOutcome {
        self.stop_as(self.stamp(), at, drain_ms).await
    }

    async fn stop_as(&self, generation: Option<u64>, at: Epoch, drain_ms: u64) -> StopOutcome {
        let request = StopWorkload {
            server: a1(),
            epoch: at,
            drain_ms,
            reason: "test".into(),
            generation,
        };
        self.connection().request(&request).await.unwrap()
    }

    async fn wait_registrations(&self, count: usize) -> RegisterServer {
        let seen = &self.seen;
        wait_for(
            "a registration",
            Duration::from_secs(20),
            || seen.lock().unwrap().registrations.get(count - 1).cloned(),
            || format!("{} registrations", seen.lock().unwrap().registrations.len()),
        )
        .await
    }

    async fn wait_stopped_report(&self, at: Epoch, cause: StopCause) {
        let seen = &self.seen;
        wait_for(
            &format!("WorkloadStopped for {at} with {cause:?}"),
            Duration::from_secs(10),
            || {
                let seen = seen.lock().unwrap();
                seen.stopped
                    .iter()
                    .any(|s| s.epoch == at && s.cause == cause)
                    .then_some(())
            },
            || format!("{:?}", seen.lock().unwrap().stopped),
        )
        .await
    }

    async fn wait_joined(&self, at: Epoch) -> WorkloadJoined {
        let seen = &self.seen;
        wait_for(
            &format!("WorkloadJoined for {at}"),
            Duration::from_secs(20),
            || {
                let seen = seen.lock().unwrap();
                seen.joined.iter().find(|j| j.epoch == at).cloned()
            },
            || {
                let seen = seen.lock().unwrap();
                format!("joined {:?}, failed {:?}", seen.joined, seen.failed)
            },
        )
        .await
    }
}

fn stamp_of(generation: &AtomicU64) -> Option<u64> {
    Some(generation.load(Ordering::SeqCst)).filter(|g| *g > 0)
}

async fn serve(
    connection: Connection,
    mut inbox: Inbox,
    seen: Arc<Mutex<Seen>>,
    answer_renewals: Arc<AtomicBool>,
    (ttl_ms, generation): (Arc<AtomicU64>, Arc<AtomicU64>),
    service_addr: String,
) {
    while let Some(Ok(message)) = inbox.next().await {
        match message {
            Inbound::Request(InboundRequest::RegisterServer(request, reply)) => {
                seen.lock().unwrap().registrations.push(request);
                let accepted = Registration::Accepted {
                    site: SiteId::parse("site-a").unwrap(),
                    heartbeat_interval_ms: 100,
                    lease_ttl_ms: ttl_ms.load(Ordering::SeqCst),
                    renew_interval_ms: RENEW_MS,
                    service_addr: service_addr.clone(),
                    generation: stamp_of(&generation),
                };
                reply.send(&accepted).await.unwrap();
            }
            Inbound::OneWay(InboundOneWay::Pulse(pulse)) => {
                if let Some(epoch) = pulse.renew {
                    if answer_renewals.load(Ordering::SeqCst) {
                        let answer = PulseAnswer {
                            seq: pulse.seq,
                            renewal: LeaseRenewal::Renewed {
                                epoch,
                                ttl_ms: ttl_ms.load(Ordering::SeqCst),
                            },
                            generation: stamp_of(&generation),
                        };
                        let _ = connection.send_datagram(&answer);
                    } else {
                        seen.lock().unwrap().unanswered.push(pulse.clone());
                    }
                }
                seen.lock().unwrap().pulses.push(pulse)
            }
            Inbound::OneWay(InboundOneWay::WorkloadJoined(m)) => {
                seen.lock().unwrap().joined.push(m)
            }
            Inbound::OneWay(InboundOneWay::WorkloadFailed(m)) => {
                seen.lock().unwrap().failed.push(m)
            }
            Inbound::OneWay(InboundOneWay::WorkloadStopped(m)) => {
                seen.lock().unwrap().stopped.push(m)
            }
            other => panic!("unexpected from the node: {other:?}"),
        }
    }
}

/// A running `leasehold node run`, killed with every workload it started when dropped.
struct Agent {
    child: Child,
    work: PathBuf,
    output: PathBuf,
}

impl Agent {
    fn start(gateway: SocketAddr, certs: &Path, work: &Path) -> Agent {
        Agent::start_with(gateway, certs, work, &[])
    }

    fn start_with(gateway: SocketAddr, certs: &Path, work: &Path, extra: &[&str]) -> Agent {
        Agent::start_binary(
            Path::new(env!("CARGO_BIN_EXE_leasehold")),
            gateway,
            certs,
            work,
            extra,
        )
    }

    /// [`Agent::start_with`] from another copy of the binary.
    fn start_binary(
        binary: &Path,
        gateway: SocketAddr,
        certs: &Path,
        work: &Path,
        extra: &[&str],
    ) -> Agent {
        let output = work.with_extension(format!("agent-{}.log", std::process::id()));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&output)
            .unwrap();
        let child = Command::new(binary)
            .args([
                "node",
                "run",
                "--gateway",
                // By name: the agent resolves it at every connect (docs/node.md).
                &format!("localhost:{}", gateway.port()),
                "--id",
                "a1",
            ])
            .arg("--certs")
            .arg(certs)
            .arg("--work")
            .arg(work)
            .args(extra)
            .env("LEASEHOLD_LOG", "info,leasehold_node=debug")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        Agent {
            child,
            work: work.to_owned(),
            output,
        }
    }

    /// Every event of its log, across rotated files.
    fn events(&self) -> Vec<Event> {
        read_log(&self.work).unwrap()
    }

    fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.output).unwrap_or_default()
    }

    /// Waits for an event that `matches`, returning it.
    async fn wait_event(&self, what: &str, matches: impl Fn(&EventKind) -> bool) -> Event {
        wait_for(
            what,
            Duration::from_secs(20),
            || self.events().into_iter().find(|e| matches(&e.kind)),
            || format!("{:#?}\nagent output:\n{}", self.events(), self.output()),
        )
        .await
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The guards should have done this; a test must not leak processes regardless.
        for event in read_events(&self.work.join("events.jsonl")).unwrap_or_default() {
            if let EventKind::WorkloadStarted { pgid, .. } = event.kind {
                let _ = killpg(Pid::from_raw(pgid as i32), Signal::SIGKILL);
            }
        }
    }
}

/// A process that exists and is not a zombie.
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let (_, rest) = stat.rsplit_once(')')?;
            rest.split_whitespace().next().map(|state| state != "Z")
        })
        .unwrap_or(false)
}

fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

/// One test's world: certificates, a gateway, an agent, a service port.
struct World {
    _dir: TempDir,
    certs: PathBuf,
    work: PathBuf,
    service: SocketAddr,
    gateway: Gateway,
    agent: Agent,
}

impl World {
    async fn start() -> World {
        let dir = TempDir::new().unwrap();
        let certs = dir.path().join("certs");
        let d = certs.to_str().unwrap();
        leasehold(&["certs", "init", "--dir", d]);
        leasehold(&["certs", "issue", "--dir", d, "--site", "site-a"]);
        leasehold(&[
            "certs", "issue", "--dir", d, "--site", "site-a", "--node", "a1",
        ]);
        let service = free_port();
        let gateway = Gateway::start(&certs, service);
        let work = dir.path().join("work");
        let agent = Agent::start(gateway.addr, &certs, &work);
        World {
            _dir: dir,
            certs,
            work,
            service,
            gateway,
            agent,
        }
    }

    fn pointer(&self, account: &str, value: u64) -> InitPointer {
        let args = [
            "workload",
            "--listen",
            "{service_addr}",
            "--data",
            "{data_dir}",
            "--account",
            "{account}",
            "--cost-us",
            "200",
        ];
        InitPointer {
            account: AccountId::parse(account).unwrap(),
            software: Software {
                label: "demo-1".into(),
                command: "{leasehold}".into(),
                args: args.iter().map(|a| a.to_string()).collect(),
                env: BTreeMap::from([("GREETING".into(), "hello from {account}".into())]),
                health_path: Some("/health".into()),
                metrics_path: Some("/metrics".into()),
                load_metric: Some("leasehold_workload_load".into()),
                stop_timeout_ms: STOP_TIMEOUT_MS,
            },
            data: DataRef {
                dir: format!("data/{account}"),
            },
            epoch: epoch(value),
            secrets: Secrets::new(BTreeMap::from([(
                "DB_PASSWORD".into(),
                format!("secret of {account}"),
            )])),
        }
    }

    /// Applies `account` at `value` and waits until it has joined; returns its pid.
    async fn run(&self, account: &str, value: u64) -> u32 {
        let outcome = self.gateway.apply(a1(), self.pointer(account, value)).await;
        assert_eq!(
            outcome,
            PointerApplication::Accepted {
                epoch: epoch(value)
            }
        );
        self.gateway.wait_joined(epoch(value)).await;
        self.pid_of(epoch(value))
    }

    fn pid_of(&self, at: Epoch) -> u32 {
        self.agent
            .events()
            .iter()
            .find_map(|e| match e.kind {
                EventKind::WorkloadStarted { epoch, pid, .. } if epoch == at => Some(pid),
                _ => None,
            })
            .expect("workload_started")
    }

    fn assert_no_violation(&self) {
        // Shown when a test fails (and with --nocapture): the record the verdict is from.
        eprintln!(
            "{}",
            std::fs::read_to_string(self.work.join("events.jsonl")).unwrap_or_default()
        );
        let events = self.agent.events();
        let slack = Duration::from_millis(STOP_TIMEOUT_MS + 500);
        let violations = check_server_log(&events, slack);
        assert!(violations.is_empty(), "{violations:#?}\n{events:#?}");
    }
}

fn stopped_event(at: Epoch) -> impl Fn(&EventKind) -> bool {
    move |kind| matches!(kind, EventKind::WorkloadStopped { epoch, .. } if *epoch == at)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_runs_the_workload_and_heartbeats_health_and_load() {
    let world = World::start().await;
    let registration = world.gateway.wait_registrations(1).await;
    assert_eq!(registration.server, a1());
    assert_eq!(registration.highest_epoch, Epoch::NONE);
    assert_eq!(registration.running, None);

    let pid = world.run("shop", 1).await;
    let page = http_get(world.service, "/").unwrap_or_default();
    assert!(page.contains("account: shop"), "{page}");
    assert!(page.contains("hello from shop"), "{page}");
    assert!(page.contains("epoch: 1"), "{page}");
    // The secret is in the workload's environment, as the kernel holds it, and in none of
    // the agent's files.
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    assert!(
        environ
            .split('\0')
            .any(|pair| pair == "DB_PASSWORD=secret of shop"),
        "{environ}"
    );
    assert_eq!(
        files_containing(&world.work, "secret of shop"),
        Vec::<String>::new()
    );

    let seen = &world.gateway.seen;
    wait_for(
        "a healthy pulse with a load",
        Duration::from_secs(10),
        || {
            let seen = seen.lock().unwrap();
            seen.pulses
                .iter()
                .rev()
                .find(|b| b.health == Health::Healthy && b.load.is_some())
                .cloned()
        },
        || format!("{:?}", seen.lock().unwrap().pulses.last()),
    )
    .await;
    // The renewals of the lease ride on pulses, numbered in order.
    {
        let seen = seen.lock().unwrap();
        assert!(seen.pulses.iter().any(|p| p.renew == Some(epoch(1))));
        assert!(seen.pulses.windows(2).all(|w| w[0].seq < w[1].seq));
    }

    // SIGTERM: the agent stops its workload, records why, and exits 0.
    world.agent.signal(Signal::SIGTERM);
    let stopped = world
        .agent
        .wait_event("workload_stopped", stopped_event(epoch(1)))
        .await;
    assert!(matches!(
        stopped.kind,
        EventKind::WorkloadStopped {
            cause: StopReason::AgentShutdown,
            ..
        }
    ));
    assert!(!running(pid));
    let mut agent = world.agent;
    let status = wait_for(
        "the agent to exit",
        Duration::from_secs(10),
        || agent.child.try_wait().unwrap(),
        || "still running".into(),
    )
    .await;
    assert!(status.success(), "{status}");
    let violations = check_server_log(
        &agent.events(),
        Duration::from_millis(STOP_TIMEOUT_MS + 500),
    );
    assert!(violations.is_empty(), "{violations:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_epochs_and_wrong_server_ids_are_refused_and_change_nothing() {
    let world = World::start().await;
    world.gateway.wait_registrations(1).await;
    let pid = world.run("shop", 2).await;
    let events_before = world.agent.events().len();

    for stale in [1, 2] {
        let outcome = world
            .gateway
            .apply(a1(), world.pointer("blog", stale))
            .await;
        match outcome {
            PointerApplication::Refused(Refusal {
                cause: RefusalCause::StaleEpoch { seen },
                ..
            }) => assert_eq!(seen, epoch(2)),
            other => panic!("epoch {stale}: {other:?}"),
        }
    }
    let other = ServerId::parse("a9").unwrap();
    match world.gateway.apply(other, world.pointer("blog", 3)).await {
        PointerApplication::Refused(Refusal {
            cause: RefusalCause::WrongServer,
            ..
        }) => {}
        outcome => panic!("{outcome:?}"),
    }
    match world.gateway.stop(epoch(1), 0).await {
        StopOutcome::Refused(Refusal {
            cause: RefusalCause::StaleEpoch { seen },
            ..
        }) => assert_eq!(seen, epoch(2)),
        outcome => panic!("{outcome:?}"),
    }

    let agent = &world.agent;
    let refused = wait_for(
        "four command_refused events",
        Duration::from_secs(10),
        || {
            let refused: Vec<(String, Epoch)> = agent
                .events()
                .into_iter()
                .filter_map(|e| match e.kind {
                    EventKind::CommandRefused { kind, epoch, .. } => Some((kind, epoch)),
                    _ => None,
                })
                .collect();
            (refused.len() >= 4).then_some(refused)
        },
        || format!("{:#?}", agent.events()),
    )
    .await;
    assert_eq!(
        refused,
        vec![
            ("ApplyPointer".to_owned(), epoch(1)),
            ("ApplyPointer".to_owned(), epoch(2)),
            ("ApplyPointer".to_owned(), epoch(3)),
            ("StopWorkload".to_owned(), epoch(1)),
        ]
    );
    // The workload is untouched: same process, and nothing but refusals (and lease
    // extensions, and a health line that may trail the Joined report) was recorded since.
    assert!(running(pid));
    let after: Vec<EventKind> = agent
        .events()
        .into_iter()
        .skip(events_before)
        .map(|e| e.kind)
        .collect();
    assert!(
        after.iter().all(|k| matches!(
            k,
            EventKind::CommandRefused { .. }
                | EventKind::LeaseExtended { .. }
                | EventKind::WorkloadHealthy { .. }
        )),
        "{after:#?}"
    );
    assert!(
        http_get(world.service, "/")
            .unwrap_or_default()
            .contains("account: shop")
    );
    world.assert_no_violation();
}

/// A site of standby gateways (docs/ha.md): the agent registers under the active gateway's
/// generation and refuses what a gateway of an older one sends, a deposed gateway's: its
/// commands, and its acceptance of a registration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_and_acceptances_of_an_older_gateway_generation_are_refused() {
    let world = World::start().await;
    let gateway = &world.gateway;
    gateway.wait_registrations(1).await;
    // Long leases: the agent spends a while refusing a deposed gateway below.
    gateway.ttl_ms.store(10_000, Ordering::SeqCst);
    gateway.generation.store(7, Ordering::SeqCst);
    gateway
        .connection()
        .close(0, "the test moves to generation 7");
    gateway.wait_registrations(2).await;
    let pid = world.run("shop", 2).await;

    match gateway.stop_as(Some(5), epoch(2), 0).await {
        StopOutcome::Refused(Refusal {
            cause: RefusalCause::NotAllowed,
            detail,
        }) => assert!(
            detail.contains("deposed") && detail.contains("g5"),
            "{detail}"
        ),
        outcome => panic!("{outcome:?}"),
    }
    match gateway
        .apply_as(Some(5), a1(), world.pointer("blog", 3))
        .await
    {
        PointerApplication::Refused(Refusal {
            cause: RefusalCause::NotAllowed,
            detail,
        }) => assert!(detail.contains("g7"), "{detail}"),
        outcome => panic!("{outcome:?}"),
    }
    let agent = &world.agent;
    agent
        .wait_event("the deposed gateway's apply refused", |kind| {
            matches!(kind, EventKind::CommandRefused { kind, reason, .. }
                if kind == "ApplyPointer" && reason.contains("deposed"))
        })
        .await;

    // The same address answering as generation 5 again, as a deposed gateway woken from a
    // pause: the agent does not register with it.
    let registrations = gateway.seen.lock().unwrap().registrations.len();
    gateway.generation.store(5, Ordering::SeqCst);
    gateway
        .connection()
        .close(0, "the test plays a deposed gateway");
    wait_for(
        "the agent to refuse generation 5's acceptance",
        Duration::from_secs(20),
        || {
            agent
                .output()
                .contains("not registering with a deposed gateway")
                .then_some(())
        },
        || agent.output(),
    )
    .await;
    assert!(gateway.seen.lock().unwrap().registrations.len() > registrations);
    // A newer generation takes the agent back, its workload never stopped: the refused
    // connections carried no pulse, so a new one is the agent's under generation 8.
    let pulses = gateway.seen.lock().unwrap().pulses.len();
    gateway.generation.store(8, Ordering::SeqCst);
    wait_for(
        "a pulse under generation 8",
        Duration::from_secs(20),
        || (gateway.seen.lock().unwrap().pulses.len() > pulses).then_some(()),
        || agent.output(),
    )
    .await;
    assert!(running(pid), "the workload runs on");
    assert!(
        !agent
            .events()
            .iter()
            .any(|e| matches!(&e.kind, EventKind::WorkloadStopped { .. })),
        "{:#?}",
        agent.events()
    );
    world.assert_no_violation();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_pointer_for_another_account_stops_the_old_workload_first_and_removes_its_files() {
    let world = World::start().await;
    world.gateway.wait_registrations(1).await;
    let old_pid = world.run("shop", 1).await;
    let shop_scratch = world.work.join("scratch/shop");
    std::fs::write(shop_scratch.join("cart.tmp"), "shop's secrets").unwrap();

    let new_pid = world.run("blog", 2).await;
    assert_ne!(old_pid, new_pid);
    assert!(!running(old_pid));
    let events = world.agent.events();
    let position = |wanted: &dyn Fn(&EventKind) -> bool| {
        events
            .iter()
            .position(|e| wanted(&e.kind))
            .unwrap_or_else(|| panic!("{events:#?}"))
    };
    let old_stopped = position(
        &|k| matches!(k, EventKind::WorkloadStopped { epoch, cause: StopReason::Superseded, .. } if *epoch == self::epoch(1)),
    );
    let new_starting = position(
        &|k| matches!(k, EventKind::WorkloadStarting { epoch, .. } if *epoch == self::epoch(2)),
    );
    let wiped = position(
        &|k| matches!(k, EventKind::DataWiped { account, .. } if account.as_str() == "shop"),
    );
    assert!(old_stopped < wiped && wiped < new_starting, "{events:#?}");
    assert!(
        !shop_scratch.exists(),
        "the old account's scratch must be removed"
    );
    assert!(
        !world.work.join("data/shop").exists(),
        "the old account's data must be removed (tenant hygiene)"
    );
    assert!(world.work.join("scratch/blog").is_dir());
    assert!(world.work.join("data/blog").is_dir());
    let page = http_get(world.service, "/").unwrap_or_default();
    assert!(page.contains("account: blog"), "{page}");
    world
        .gateway
        .wait_stopped_report(epoch(1), StopCause::Commanded)
        .await;
    world.assert_no_violation();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_renewals_go_unanswered_stops_its_workload_when_the_lease_ends() {
    let world = World::start().await;
    world.gateway.wait_registrations(1).await;
    let pid = world.run("shop", 1).await;

    world.gateway.answer_renewals.store(false, Ordering::SeqCst);
    let silenced = Instant::now();
    let stopped = world
        .agent
        .wait_event("workload_stopped", stopped_event(epoch(1)))
        .await;
    let bound = Duration::from_millis(TTL_MS + STOP_TIMEOUT_MS + 500);
    assert!(
        silenced.elapsed() < bound,
        "stopped after {:?}",
        silenced.elapsed()
    );
    assert!(matches!(
        stopped.kind,
        EventKind::WorkloadStopped {
            cause: StopReason::LeaseExpired,
            ..
        }
    ));
    assert!(!running(pid));
    // The node's own record: stopped no later than its last lease end plus the stop.
    let until = world
        .agent
        .events()
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::LeaseExtended { until_mono_ns, .. } => Some(until_mono_ns),
            _ => None,
        })
        .max()
        .unwrap();
    assert!(
        stopped.mono_ns <= until + STOP_TIMEOUT_MS * 1_000_000,
        "{stopped:?} vs {until}"
    );
    world.assert_no_violation();
    world
        .gateway
        .wait_stopped_report(epoch(1), StopCause::LeaseExpired)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agent_takes_its_workload_along_and_a_restarted_agent_keeps_the_epoch() {
    let mut world = World::start().await;
    world.gateway.wait_registrations(1).await;
    let pid = world.run("shop", 3).await;

    world.agent.signal(Signal::SIGKILL);
    let killed = Instant::now();
    wait_for(
        "the workload to die with its agent",
        Duration::from_millis(1500),
        || (!running(pid)).then_some(()),
        || format!("pid {pid} still running"),
    )
    .await;
    eprintln!(
        "workload gone {:?} after the agent was killed",
        killed.elapsed()
    );

    let restarted = Agent::start(world.gateway.addr, &world.certs, &world.work);
    let old = std::mem::replace(&mut world.agent, restarted);
    drop(old);
    let registration = world.gateway.wait_registrations(2).await;
    assert_eq!(registration.highest_epoch, epoch(3));
    assert_eq!(registration.running, None);
    let reaped = world
        .agent
        .wait_event("orphan_reaped", stopped_event(epoch(3)))
        .await;
    assert!(
        matches!(
            reaped.kind,
            EventKind::WorkloadStopped {
                cause: StopReason::OrphanReaped,
                reaped_alive: Some(false),
                ..
            }
        ),
        "{reaped:?}"
    );
    // The restarted agent still fences: epoch 3 again is stale.
    match world.gateway.apply(a1(), world.pointer("shop", 3)).await {
        PointerApplication::Refused(Refusal {
            cause: RefusalCause::StaleEpoch { seen },
            ..
        }) => {
            assert_eq!(seen, epoch(3))
        }
        outcome => panic!("{outcome:?}"),
    }
    world.run("shop", 4).await;
    world.assert_no_violation();
}

/// A log rotated until the line that accepted the workload's epoch is gone: a restarted
/// agent still knows the epoch and the workload it left, from the checkpoint the newest
/// file starts with (docs/node.md, "Event log rotation").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_finds_its_epoch_and_workload_after_rotation_removed_their_lines() {
    const ROTATION: [&str; 4] = ["--event-log-max-bytes", "1024", "--event-log-keep", "1"];
    let mut world = World::start().await;
    world.gateway.wait_registrations(1).await;
    let first = Agent::start_with(world.gateway.addr, &world.certs, &world.work, &ROTATION);
    drop(std::mem::replace(&mut world.agent, first));
    world.gateway.wait_registrations(2).await;
    world.run("shop", 3).await;
    // Lease renewals fill files; with one rotated file kept, the one with the pointer's
    // line is removed after the second rotation.
    wait_for(
        "the line that accepted epoch 3 to be rotated away",
        Duration::from_secs(60),
        || {
            let events = world.agent.events();
            let gone = !events
                .iter()
                .any(|e| matches!(e.kind, EventKind::PointerAccepted { .. }));
            (gone && rotated_files(&world.work).ok()?.len() == 1).then_some(())
        },
        || format!("{:#?}", world.agent.events()),
    )
    .await;
    let events = world.agent.events();
    assert!(
        matches!(&events[0].kind, EventKind::Checkpoint(state) if state.highest_epoch == epoch(3)),
        "{:#?}",
        events[0]
    );

    world.agent.signal(Signal::SIGKILL);
    let restarted = Agent::start_with(world.gateway.addr, &world.certs, &world.work, &ROTATION);
    drop(std::mem::replace(&mut world.agent, restarted));
    let registration = world.gateway.wait_registrations(3).await;
    assert_eq!(registration.highest_epoch, epoch(3));
    world
        .agent
        .wait_event("the left workload reaped", stopped_event(epoch(3)))
        .await;
    match world.gateway.apply(a1(), world.pointer("shop", 3)).await {
        PointerApplication::Refused(Refusal {
            cause: RefusalCause::StaleEpoch { seen },
            ..
        }) => assert_eq!(seen, epoch(3)),
        outcome => panic!("{outcome:?}"),
    }
    world.run("shop", 4).await;
    world.assert_no_violation();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_workload_drains_stops_and_answers_stopped() {
    let world = World::start().await;
    world.gateway.wait_registrations(1).await;
    let pid = world.run("shop", 1).await;
    let asked = Instant::now();
    let outcome = world.gateway.stop(epoch(1), 150).await;
    assert_eq!(outcome, StopOutcome::Stopped { epoch: epoch(1) });
    assert!(
        asked.elapsed() >= Duration::from_millis(150),
        "drained first"
    );
    assert!(!running(pid));
    let stopped = world
        .agent
        .wait_event("workload_stopped", stopped_event(epoch(1)))
        .await;
    assert!(matches!(
        stopped.kind,
        EventKind::WorkloadStopped {
            cause: StopReason::Commanded,
            ..
        }
    ));
    // Asking again is answered at once: nothing of epoch 1 runs.
    assert_eq!(
        world.gateway.stop(epoch(1), 0).await,
        StopOutcome::Stopped { epoch: epoch(1) }
    );
    world.assert_no_violation();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workload_that_cannot_start_or_exits_early_is_reported_failed() {
    let world = World::start().await;
    world.gateway.wait_registrations(1).await;
    let seen = &world.gateway.seen;
    let wait_failed = |at: Epoch| {
        wait_for(
            "WorkloadFailed",
            Duration::from_secs(10),
            move || {
                let seen = seen.lock().unwrap();
                seen.failed.iter().find(|f| f.epoch == at).cloned()
            },
            move || format!("{:?}", seen.lock().unwrap().failed),
        )
    };

    let mut missing = world.pointer("shop", 1);
    missing.software.command = "/nonexistent/leasehold-test-binary".into();
    let outcome = world.gateway.apply(a1(), missing).await;
    assert_eq!(outcome, PointerApplication::Accepted { epoch: epoch(1) });
    wait_failed(epoch(1)).await;
    let stopped = world
        .agent
        .wait_event("workload_stopped", stopped_event(epoch(1)))
        .await;
    assert!(
        matches!(
            stopped.kind,
            EventKind::WorkloadStopped {
                cause: StopReason::FailedStart,
                pid: None,
                ..
            }
        ),
        "{stopped:?}"
    );

    let mut early_exit = world.pointer("shop", 2);
    early_exit.software.command = "sh".into();
    early_exit.software.args = vec!["-c".into(), "exit 3".into()];
    early_exit.software.health_path = None;
    let outcome = world.gateway.apply(a1(), early_exit).await;
    assert_eq!(outcome, PointerApplication::Accepted { epoch: epoch(2) });
    let failed = wait_failed(epoch(2)).await;
    assert!(failed.reason.contains("exited"), "{failed:?}");
    let stopped = world
        .agent
        .wait_event("workload_stopped", stopped_event(epoch(2)))
        .await;
    assert!(
        matches!(
            stopped.kind,
            EventKind::WorkloadStopped {
                cause: StopReason::Exited,
                exit_code: Some(3),
                ..
            }
        ),
        "{stopped:?}"
    );
    // The server is free again: the next pointer runs.
    world.run("shop", 3).await;
    world.assert_no_violation();
}

/// The system-wide monotonic clock, as the event log's `mono_ns` reads it.
fn mono_now_ns() -> u64 {
    leasehold_node::clock::mono_now().as_nanos()
}

/// SIGUSR2 replaces the agent in place (docs/node.md, "Upgrading an agent"): its binary is
/// executed again in the same process, and the new image adopts the workload. The same
/// workload process runs on under the same epoch, the new image registers with it running
/// and renews its lease, a stop still reaches it, no file holds its secret, and no rule of
/// the event log is broken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr2_replaces_the_agent_in_place_and_its_workload_runs_on() {
    let world = World::start().await;
    // Room for a debug build's start on a busy machine: the new image must take the lease
    // over before it ends, or the guard stops the workload (the test below).
    world.gateway.ttl_ms.store(10_000, Ordering::SeqCst);
    world.gateway.wait_registrations(1).await;
    let pid = world.run("shop", 3).await;
    // A renewal under the longer TTL, so the lease left at the replacement is long.
    world
        .agent
        .wait_event("a lease of 10 s", |kind| {
            matches!(kind, EventKind::LeaseExtended { until_mono_ns, .. }
                if *until_mono_ns > mono_now_ns() + 5_000_000_000)
        })
        .await;
    let replaced_at = mono_now_ns();
    world.agent.signal(Signal::SIGUSR2);

    let registration = world.gateway.wait_registrations(2).await;
    assert_eq!(
        registration.running,
        Some(RunningWorkload {
            account: AccountId::parse("shop").unwrap(),
            epoch: epoch(3),
        })
    );
    assert_eq!(registration.highest_epoch, epoch(3));
    world
        .agent
        .wait_event("the workload adopted", |kind| {
            matches!(kind, EventKind::WorkloadAdopted { pid: p, epoch: e, .. }
                if *p == pid && *e == epoch(3))
        })
        .await;
    wait_for(
        "a renewal by the new image",
        Duration::from_secs(20),
        || {
            world.agent.events().into_iter().find(|event| {
                event.mono_ns > replaced_at
                    && matches!(event.kind, EventKind::LeaseExtended { epoch: e, .. } if e == epoch(3))
            })
        },
        || format!("{:#?}\n{}", world.agent.events(), world.agent.output()),
    )
    .await;
    assert!(running(pid), "the workload {pid} stopped");
    let events = world.agent.events();
    assert!(
        events
            .iter()
            .any(|event| matches!(event.kind, EventKind::AgentReplaced { .. })),
        "{events:#?}"
    );
    assert!(
        !events.iter().any(|event| matches!(
            event.kind,
            EventKind::WorkloadStopped { .. } | EventKind::WorkloadStarting { .. }
                if event.mono_ns > replaced_at
        )),
        "{events:#?}"
    );
    assert_eq!(
        files_containing(&world.work, "secret of shop"),
        Vec::<String>::new()
    );
    assert!(!world.work.join("handover.json").exists());
    assert!(!world.work.join("guard.deadline").exists());

    // The adopted workload is this image's to stop.
    assert_eq!(
        world.gateway.stop(epoch(3), 0).await,
        StopOutcome::Stopped { epoch: epoch(3) }
    );
    assert!(!running(pid), "stopped, and still running");
    world
        .gateway
        .wait_stopped_report(epoch(3), StopCause::Commanded)
        .await;
    world.assert_no_violation();
}

/// A replacement whose new image never takes over (here the binary on disk was replaced by
/// one that only sleeps): no agent watches the lease any more, and the guard kills the
/// workload at the deadline the old image left, the lease's end less the stop margin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replacement_that_never_comes_up_has_the_guard_stop_the_workload_by_its_lease_end() {
    let mut world = World::start().await;
    // The agent runs from a copy of the binary, which is then replaced.
    let copy = world.work.with_extension("leasehold-copy");
    std::fs::copy(env!("CARGO_BIN_EXE_leasehold"), &copy).unwrap();
    let agent = Agent::start_binary(&copy, world.gateway.addr, &world.certs, &world.work, &[]);
    drop(std::mem::replace(&mut world.agent, agent));
    world.gateway.wait_registrations(2).await;
    let pid = world.run("shop", 3).await;

    let sleeper = copy.with_extension("sleeper");
    std::fs::write(&sleeper, "#!/bin/sh\nexec sleep 60\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&sleeper, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::rename(&sleeper, &copy).unwrap();
    world.agent.signal(Signal::SIGUSR2);
    world
        .agent
        .wait_event("the replacement", |kind| {
            matches!(kind, EventKind::AgentReplaced { .. })
        })
        .await;
    // The lease's end as the old image last recorded it.
    let until = world
        .agent
        .events()
        .iter()
        .filter_map(|event| match event.kind {
            EventKind::LeaseExtended { until_mono_ns, .. } => Some(until_mono_ns),
            _ => None,
        })
        .max()
        .unwrap();
    wait_for(
        "the guard to kill the workload",
        Duration::from_secs(10),
        || (!running(pid)).then_some(()),
        || format!("pid {pid} still running"),
    )
    .await;
    let gone_seen = mono_now_ns();
    // Seen gone within a poll of the lease's end: the guard acted at the deadline, not
    // when the sleeper ends a minute later.
    assert!(
        gone_seen < until + 1_000_000_000,
        "seen gone {} ms after the lease ended",
        (gone_seen - until) / 1_000_000
    );
    assert!(
        world.agent.output().contains("the lease ended while agent"),
        "{}",
        world.agent.output()
    );
}
