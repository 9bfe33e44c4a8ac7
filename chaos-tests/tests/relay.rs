//! The fault-injecting UDP relay on real loopback sockets: plain forwarding for several
//! clients, each fault on its own, seeded determinism, and a real QUIC connection between
//! two site identities that survives a partition once it heals.
//!
//! Assertions are on counts and order, never on how fast something happens (the machine is
//! shared): the only timing check is a lower bound (a delayed datagram is not early), and
//! every wait is for a condition, with a generous deadline.

use std::collections::{BTreeSet, HashSet};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use leasehold_chaos_tests::harness::site::create_certs;
use leasehold_chaos_tests::relay::{
    Direction, Faults, FaultsError, LinkFaults, Relay, RelayError, RelayStats,
};
use leasehold_federation::ids::SiteId;
use leasehold_federation::transport::Alpn;
use leasehold_federation::transport::certs::load_site_identity;
use leasehold_federation::transport::connection::{Connection, Inbox, RequestError, close_code};
use leasehold_federation::transport::endpoint::{Endpoint, Limits};
use leasehold_federation::transport::identity::{PeerName, PeerPolicy};
use leasehold_federation::wire::site::{Ping, Pong};
use leasehold_federation::wire::{Inbound, InboundRequest};

const DEADLINE: Duration = Duration::from_secs(20);

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().expect("a socket address")
}

/// Polls `condition` until it holds; past [`DEADLINE`] panics with `what` and the last
/// thing `condition` saw.
fn wait_for<T: std::fmt::Debug>(what: &str, mut condition: impl FnMut() -> (bool, T)) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (done, seen) = condition();
        if done {
            return seen;
        }
        if Instant::now() > deadline {
            panic!("timed out waiting for {what}; last seen: {seen:?}");
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// What the target received: the payload, who sent it (the relay's socket for that
/// client), and when.
#[derive(Debug, Clone)]
struct Arrival {
    payload: Vec<u8>,
    from: SocketAddr,
    at: Instant,
}

/// A UDP peer behind the relay: records every datagram and, while `echo` is set, sends it
/// back to its sender.
struct Target {
    socket: Arc<UdpSocket>,
    arrivals: Arc<Mutex<Vec<Arrival>>>,
    echo: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Target {
    fn start() -> Target {
        let socket = UdpSocket::bind(loopback()).expect("bind the target");
        socket
            .set_read_timeout(Some(Duration::from_millis(10)))
            .expect("set a read timeout");
        let socket = Arc::new(socket);
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let echo = Arc::new(AtomicBool::new(true));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = thread::spawn({
            let (socket, arrivals, echo, stop) =
                (socket.clone(), arrivals.clone(), echo.clone(), stop.clone());
            move || {
                let mut buffer = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((length, from)) = socket.recv_from(&mut buffer) else {
                        continue;
                    };
                    let at = Instant::now();
                    let payload = buffer[..length].to_vec();
                    // Recorded before the echo, so a client that has its echo can rely
                    // on the record.
                    arrivals.lock().expect("arrivals").push(Arrival {
                        payload: payload.clone(),
                        from,
                        at,
                    });
                    if echo.load(Ordering::Relaxed) {
                        let _ = socket.send_to(&payload, from);
                    }
                }
            }
        });
        Target {
            socket,
            arrivals,
            echo,
            stop,
            thread: Some(thread),
        }
    }

    fn addr(&self) -> SocketAddr {
        self.socket.local_addr().expect("the target's address")
    }

    fn arrivals(&self) -> Vec<Arrival> {
        self.arrivals.lock().expect("arrivals").clone()
    }

    fn count(&self) -> usize {
        self.arrivals.lock().expect("arrivals").len()
    }

    fn payloads(&self) -> Vec<Vec<u8>> {
        self.arrivals().into_iter().map(|a| a.payload).collect()
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A target that does not answer, behind a relay with `seed` and `faults` toward it.
fn relay_to_silent_target(seed: u64, toward_target: LinkFaults) -> (Target, Relay) {
    let target = Target::start();
    target.echo.store(false, Ordering::Relaxed);
    let relay = Relay::start(loopback(), target.addr(), seed).expect("start the relay");
    relay
        .set_faults(Faults::only(Direction::ToTarget, toward_target))
        .expect("valid faults");
    (target, relay)
}

fn client() -> UdpSocket {
    let socket = UdpSocket::bind(loopback()).expect("bind a client");
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("set a read timeout");
    socket
}

/// Waits for a datagram on `socket` until [`DEADLINE`].
fn receive(socket: &UdpSocket) -> Vec<u8> {
    let deadline = Instant::now() + DEADLINE;
    let mut buffer = [0u8; 2048];
    loop {
        match socket.recv(&mut buffer) {
            Ok(length) => return buffer[..length].to_vec(),
            Err(error) if Instant::now() > deadline => panic!("nothing arrived: {error}"),
            Err(_) => {}
        }
    }
}

/// Whatever arrives on `socket` within `quiet` (used only to show that nothing does:
/// a late datagram can only make such a check fail, never pass wrongly).
fn drain(socket: &UdpSocket, quiet: Duration) -> Vec<Vec<u8>> {
    let until = Instant::now() + quiet;
    let mut buffer = [0u8; 2048];
    let mut got = Vec::new();
    while Instant::now() < until {
        if let Ok(length) = socket.recv(&mut buffer) {
            got.push(buffer[..length].to_vec());
        }
    }
    got
}

/// Sends `payloads` to the relay from `socket`, in small batches, each after the relay has
/// taken in the previous one: a burst that overflows a socket buffer would lose datagrams
/// before the relay's dice see them, and break the seeded patterns.
fn send_paced(socket: &UdpSocket, relay: &Relay, payloads: &[Vec<u8>]) {
    let start = relay.stats().to_target.received;
    for (index, payload) in payloads.iter().enumerate() {
        socket.send_to(payload, relay.addr()).expect("send");
        let sent = index as u64 + 1;
        if sent.is_multiple_of(16) || sent == payloads.len() as u64 {
            wait_for("the relay to take in a batch", || {
                let stats = relay.stats();
                (stats.to_target.received - start >= sent, stats)
            });
        }
    }
}

fn numbered(count: u32) -> Vec<Vec<u8>> {
    (0..count).map(|n| n.to_be_bytes().to_vec()).collect()
}

fn number(payload: &[u8]) -> u32 {
    u32::from_be_bytes(payload.try_into().expect("a numbered payload"))
}

/// Waits until everything the relay took in toward the target has been decided and has
/// left it (nothing delayed or held), and the target has all that was forwarded.
fn settle_to_target(relay: &Relay, target: &Target) -> RelayStats {
    wait_for("the relay to settle toward the target", || {
        let stats = relay.stats();
        let link = stats.to_target;
        // Each duplicated datagram leaves twice.
        let decided =
            link.forwarded + link.send_errors + link.dropped() == link.received + link.duplicated;
        (
            decided && target.count() as u64 == link.forwarded,
            (stats, target.count()),
        )
    })
    .0
}

#[test]
fn several_clients_each_get_their_own_echoes_through_the_relay() {
    let target = Target::start();
    let relay = Relay::start(loopback(), target.addr(), 1).expect("start the relay");
    let clients: Vec<_> = (0..4)
        .map(|client_index| {
            let relay_addr = relay.addr();
            thread::spawn(move || {
                let socket = client();
                let mut echoes = Vec::new();
                for n in 0..25 {
                    let message = format!("client {client_index} message {n}");
                    socket
                        .send_to(message.as_bytes(), relay_addr)
                        .expect("send");
                    echoes.push(String::from_utf8(receive(&socket)).expect("utf-8"));
                }
                echoes
            })
        })
        .collect();
    for (client_index, client) in clients.into_iter().enumerate() {
        let echoes = client.join().expect("a client thread");
        let expected: Vec<_> = (0..25)
            .map(|n| format!("client {client_index} message {n}"))
            .collect();
        assert_eq!(
            echoes, expected,
            "client {client_index} got others' answers"
        );
    }
    let sources: HashSet<SocketAddr> = target.arrivals().iter().map(|a| a.from).collect();
    assert_eq!(sources.len(), 4, "one stable upstream address per client");
    // The timer counts a datagram just after sending it, so the counts may trail the
    // last echo by a moment.
    let stats = wait_for("100 datagrams forwarded each way", || {
        let stats = relay.stats();
        let done = stats.to_target.forwarded == 100 && stats.from_target.forwarded == 100;
        (done, stats)
    });
    assert_eq!(stats.clients, 4);
    assert_eq!(stats.to_target.dropped() + stats.from_target.dropped(), 0);
}

#[test]
fn a_cut_direction_passes_nothing_while_the_other_way_works_and_heals() {
    let target = Target::start();
    let relay = Relay::start(loopback(), target.addr(), 2).expect("start the relay");
    let socket = client();
    socket.send_to(b"hello", relay.addr()).expect("send");
    assert_eq!(receive(&socket), b"hello");
    // The target learned the relay's upstream address for this client.
    let upstream = target.arrivals()[0].from;

    // Cut toward the target: the target hears nothing, but can still reach the client.
    relay
        .set_faults(Faults::one_way(Direction::ToTarget))
        .expect("valid faults");
    for _ in 0..10 {
        socket.send_to(b"lost", relay.addr()).expect("send");
    }
    wait_for("ten cut drops toward the target", || {
        let stats = relay.stats();
        (stats.to_target.dropped_cut == 10, stats)
    });
    target
        .socket
        .send_to(b"unasked", upstream)
        .expect("the target sends");
    assert_eq!(receive(&socket), b"unasked");
    assert_eq!(
        target.count(),
        1,
        "nothing crossed the cut toward the target"
    );

    // Cut from the target: the target hears the client, its answers are lost.
    relay
        .set_faults(Faults::one_way(Direction::FromTarget))
        .expect("valid faults");
    for _ in 0..10 {
        socket.send_to(b"unanswered", relay.addr()).expect("send");
    }
    wait_for("the target to hear all ten", || {
        (target.count() == 11, target.count())
    });
    wait_for("ten cut drops from the target", || {
        let stats = relay.stats();
        (stats.from_target.dropped_cut == 10, stats)
    });
    assert_eq!(
        drain(&socket, Duration::from_millis(300)),
        Vec::<Vec<u8>>::new(),
        "nothing crossed the cut from the target"
    );

    // Heal: echoes flow again.
    relay.set_faults(Faults::none()).expect("valid faults");
    socket.send_to(b"healed", relay.addr()).expect("send");
    assert_eq!(receive(&socket), b"healed");
    let stats = relay.stats();
    assert_eq!(stats.to_target.dropped_cut, 10);
    assert_eq!(stats.from_target.dropped_cut, 10);
}

#[test]
fn loss_one_drops_every_datagram_and_loss_zero_none() {
    let (target, relay) = relay_to_silent_target(
        3,
        LinkFaults {
            loss: 1.0,
            ..LinkFaults::none()
        },
    );
    let socket = client();
    send_paced(&socket, &relay, &numbered(100));
    let stats = settle_to_target(&relay, &target);
    assert_eq!(stats.to_target.dropped_loss, 100);
    assert_eq!(target.count(), 0);

    relay.set_faults(Faults::none()).expect("valid faults");
    send_paced(&socket, &relay, &numbered(100));
    let stats = settle_to_target(&relay, &target);
    assert_eq!(stats.to_target.dropped_loss, 100, "no new drops");
    assert_eq!(stats.to_target.forwarded, 100);
    assert_eq!(target.payloads(), numbered(100));
}

/// Sends `count` numbered datagrams through a relay with `seed` and `faults` toward a
/// silent target; returns the numbers in the order they arrived, once the relay has
/// settled, and the relay's counts.
fn numbers_through(seed: u64, faults: LinkFaults, count: u32) -> (Vec<u32>, RelayStats) {
    let (target, relay) = relay_to_silent_target(seed, faults);
    send_paced(&client(), &relay, &numbered(count));
    let stats = settle_to_target(&relay, &target);
    let arrived = target.payloads().iter().map(|p| number(p)).collect();
    (arrived, stats)
}

#[test]
fn duplicate_one_sends_every_datagram_twice() {
    let duplicate = LinkFaults {
        duplicate: 1.0,
        ..LinkFaults::none()
    };
    let (mut arrived, stats) = numbers_through(4, duplicate, 50);
    assert_eq!(stats.to_target.duplicated, 50);
    assert_eq!(stats.to_target.forwarded, 100);
    arrived.sort_unstable();
    let twice: Vec<u32> = (0..50).flat_map(|n| [n, n]).collect();
    assert_eq!(arrived, twice);
}

/// Which of 200 numbered datagrams cross a relay with `loss` 0.5 and `seed`.
fn survivors(seed: u64) -> BTreeSet<u32> {
    let loss = LinkFaults {
        loss: 0.5,
        ..LinkFaults::none()
    };
    numbers_through(seed, loss, 200).0.into_iter().collect()
}

#[test]
fn the_same_seed_drops_the_same_datagrams_of_a_sequence() {
    let first = survivors(42);
    let second = survivors(42);
    assert_eq!(first, second);
    assert!(
        (50..150).contains(&first.len()),
        "loss 0.5 kept {} of 200",
        first.len()
    );
    assert_ne!(survivors(43), first, "another seed, another pattern");
}

#[test]
fn a_delayed_datagram_does_not_arrive_before_its_delay() {
    let target = Target::start();
    let relay = Relay::start(loopback(), target.addr(), 5).expect("start the relay");
    let delay = Duration::from_millis(300);
    relay
        .set_faults(Faults::only(
            Direction::ToTarget,
            LinkFaults {
                delay,
                jitter: Duration::from_millis(50),
                ..LinkFaults::none()
            },
        ))
        .expect("valid faults");
    let socket = client();
    let sent = Instant::now();
    socket.send_to(b"slow", relay.addr()).expect("send");
    assert_eq!(receive(&socket), b"slow");
    let arrived = target.arrivals()[0].at;
    assert!(
        arrived - sent >= delay,
        "arrived after {:?}",
        arrived - sent
    );

    // Both ways: the round trip is at least the configured RTT.
    let rtt = Duration::from_millis(400);
    relay.set_faults(Faults::rtt(rtt)).expect("valid faults");
    let sent = Instant::now();
    socket.send_to(b"round trip", relay.addr()).expect("send");
    assert_eq!(receive(&socket), b"round trip");
    assert!(sent.elapsed() >= rtt, "answered after {:?}", sent.elapsed());
}

#[test]
fn reorder_swaps_at_least_one_pair_of_a_seeded_sequence() {
    let reorder = LinkFaults {
        reorder: 0.2,
        ..LinkFaults::none()
    };
    let (arrived, stats) = numbers_through(6, reorder, 200);
    let swapped = arrived.windows(2).filter(|pair| pair[0] > pair[1]).count();
    assert!(swapped >= 1, "no pair out of order: {arrived:?}");
    assert!(stats.to_target.reordered >= 1, "{stats:?}");
    let mut sorted = arrived.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..200).collect::<Vec<_>>(), "reordered, not lost");
}

#[test]
fn bad_fault_settings_are_refused_by_field_and_change_nothing() {
    let target = Target::start();
    let relay = Relay::start(loopback(), target.addr(), 7).expect("start the relay");
    relay
        .set_faults(Faults::rtt(Duration::from_millis(10)))
        .expect("valid faults");
    let mut bad = Faults::none();
    bad.to_target.loss = 1.5;
    match relay.set_faults(bad) {
        Err(FaultsError::Probability { field, value }) => {
            assert_eq!((field.as_str(), value), ("to_target.loss", 1.5));
        }
        other => panic!("expected a refused probability, got {other:?}"),
    }
    assert_eq!(relay.faults(), Faults::rtt(Duration::from_millis(10)));
    let unspecified: SocketAddr = "0.0.0.0:9".parse().expect("an address");
    assert!(matches!(
        Relay::start(loopback(), unspecified, 0),
        Err(RelayError::Target { .. })
    ));
}

/// Answers every `Ping` with its `Pong` until the connection ends.
async fn answer_pings(mut inbox: Inbox) {
    while let Some(Ok(message)) = inbox.next().await {
        if let Inbound::Request(InboundRequest::Ping(ping, reply)) = message {
            let _ = reply
                .send(&Pong {
                    seq: ping.seq,
                    sent_at_us: ping.sent_at_us,
                })
                .await;
        }
    }
}

fn ping(seq: u64) -> Ping {
    Ping { seq, sent_at_us: 0 }
}

/// Site-b connected to site-a through a relay, with the federation's own transport (QUIC,
/// mutual TLS with site certificates made by the harness); site-a answers `Ping`s.
struct SitesThroughRelay {
    relay: Relay,
    to_a: Connection,
    served: tokio::task::JoinHandle<()>,
    // Kept alive for the connection's sake.
    _a: Endpoint,
    _b: Endpoint,
    _b_inbox: Inbox,
    _certs: tempfile::TempDir,
}

/// Starts both sites and a relay with `seed` and `faults` toward site-a, and connects
/// site-b to site-a through it.
async fn sites_through_relay(seed: u64, faults: Faults) -> SitesThroughRelay {
    let certs = tempfile::TempDir::new().expect("a temporary directory");
    create_certs(certs.path(), &[("site-a", vec![]), ("site-b", vec![])]).expect("certificates");
    let site_a = SiteId::parse("site-a").expect("a site id");
    let site_b = SiteId::parse("site-b").expect("a site id");
    // An idle timeout well beyond any partition of these tests, so that the connection
    // outlives it.
    let limits = Limits {
        request_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
        ..Limits::default()
    };
    let a = Endpoint::listen(
        loopback(),
        &load_site_identity(certs.path(), &site_a).expect("site-a's identity"),
        Alpn::Site,
        PeerPolicy::Sites([site_b.clone()].into_iter().collect()),
        limits.clone(),
    )
    .expect("site-a listens");
    let b = Endpoint::dial_only(
        loopback(),
        &load_site_identity(certs.path(), &site_b).expect("site-b's identity"),
        Alpn::Site,
        limits,
    )
    .expect("site-b's endpoint");
    let relay = Relay::start(loopback(), a.local_addr().expect("site-a's address"), seed)
        .expect("start the relay");
    relay.set_faults(faults).expect("valid faults");

    let expected = PeerName::Site(site_a);
    let accept = async {
        let handshake = tokio::time::timeout(DEADLINE, a.accept())
            .await
            .expect("a connection within the deadline")
            .expect("site-a's endpoint is open");
        handshake.finish().await
    };
    let (dialled, accepted) = tokio::join!(b.connect(relay.addr(), &expected), accept);
    let (to_a, b_inbox) = dialled.expect("site-b connects to site-a through the relay");
    let (to_b, a_inbox) = accepted.expect("site-a accepts site-b");
    assert_eq!(to_b.peer(), &PeerName::Site(site_b));
    assert_ne!(
        to_b.remote_address(),
        b.local_addr().expect("site-b's address"),
        "site-a sees the relay, not site-b"
    );
    SitesThroughRelay {
        relay,
        to_a,
        served: tokio::spawn(answer_pings(a_inbox)),
        _a: a,
        _b: b,
        _b_inbox: b_inbox,
        _certs: certs,
    }
}

impl SitesThroughRelay {
    fn close(self) {
        self.to_a.close(close_code::DONE, "test over");
        self.served.abort();
    }
}

/// A request crosses; under a partition a request times out; after healing, a new request
/// on the same connection is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quic_request_crosses_the_relay_times_out_in_a_partition_and_succeeds_after_healing() {
    let sites = sites_through_relay(8, Faults::none()).await;
    let (relay, to_a) = (&sites.relay, &sites.to_a);
    let pong = to_a
        .request(&ping(1))
        .await
        .expect("a Pong through the relay");
    assert_eq!(pong.seq, 1);

    relay.set_faults(Faults::partition()).expect("valid faults");
    let cut_before = relay.stats().to_target.dropped_cut;
    match to_a.request_within(&ping(2), Duration::from_secs(1)).await {
        Err(RequestError::TimedOut { kind, .. }) => assert_eq!(kind, "Ping"),
        other => panic!("expected a timeout under the partition, got {other:?}"),
    }
    let stats = relay.stats();
    assert!(
        stats.to_target.dropped_cut > cut_before,
        "the partition dropped site-b's packets: {stats:?}"
    );

    relay.set_faults(Faults::none()).expect("valid faults");
    let pong = to_a
        .request_within(&ping(3), DEADLINE)
        .await
        .expect("a Pong after healing");
    assert_eq!(pong.seq, 3);
    sites.close();
}

/// QUIC's own recovery carries requests across a lossy, slow, duplicating, reordering
/// link, handshake included: what a fault campaign's "bad network" looks like.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_requests_cross_a_lossy_slow_reordering_relay() {
    let bad_network = Faults::both(LinkFaults {
        delay: Duration::from_millis(20),
        jitter: Duration::from_millis(10),
        loss: 0.05,
        duplicate: 0.05,
        reorder: 0.05,
        cut: false,
    });
    let sites = sites_through_relay(9, bad_network).await;
    for seq in 0..20 {
        let pong = sites
            .to_a
            .request_within(&ping(seq), DEADLINE)
            .await
            .expect("a Pong across the bad network");
        assert_eq!(pong.seq, seq);
    }
    let stats = sites.relay.stats();
    assert_eq!(stats.clients, 1, "one client: site-b's endpoint");
    assert!(
        stats.to_target.forwarded > 0 && stats.from_target.forwarded > 0,
        "{stats:?}"
    );
    sites.close();
}
