//! A fault-injecting UDP relay, for putting delay, loss, duplication, reordering and
//! partitions between two sites on a machine without netem (see docs/relay.md).
//!
//! A [`Relay`] listens on one address and forwards to one target. Like a NAT, it gives each
//! client address its own upstream socket toward the target, so the target sees one stable
//! address per client, and it sends the target's answers back to that client from the
//! listening socket. [`Faults`] apply per direction from the moment they are set; the
//! decision for each datagram comes from a seeded random stream per client and direction,
//! so the same seed and the same datagrams give the same decisions.
//!
//! ```no_run
//! # use std::time::Duration;
//! # use leasehold_chaos_tests::relay::{Direction, Faults, Relay};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let site_b: std::net::SocketAddr = "127.0.0.1:7401".parse()?;
//! let relay = Relay::start("127.0.0.1:0".parse()?, site_b, 42)?;
//! // Site A's `[[peer]] addr` for site-b is now `relay.addr()`.
//! relay.set_faults(Faults::rtt(Duration::from_millis(80)))?;
//! relay.set_faults(Faults::one_way(Direction::FromTarget))?; // B's answers are lost
//! relay.set_faults(Faults::none())?; // heal
//! println!("{:?}", relay.stats());
//! # Ok(()) }
//! ```
//!
//! Threads: one reads the listening socket (client → target), one per client reads that
//! client's upstream socket (target → client), and one timer sends every datagram when it
//! is due. All of them stop when the relay is dropped.

mod faults;
mod link;
mod scheduler;
mod stats;

pub use faults::{Direction, Faults, FaultsError, LinkFaults, MAX_DELAY};
pub use link::REORDER_WINDOW;
pub use scheduler::{MAX_QUEUED_BYTES, MAX_QUEUED_DATAGRAMS};
pub use stats::{LinkStats, RelayStats};

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use faults::LinkDice;
use link::Link;
use scheduler::{Destination, Scheduler};
use stats::{Counters, bump};

/// At most this many distinct client addresses get an upstream socket (and a thread);
/// datagrams from further clients are dropped and counted (`RelayStats::refused`). A
/// relay stands between two sites, which need one or two; the bound stops a stray sender
/// from making the relay open sockets without limit.
pub const MAX_CLIENTS: usize = 64;

/// How often a blocked socket read wakes to notice that the relay is stopping, or that a
/// datagram held for reordering has waited long enough.
const POLL: Duration = Duration::from_millis(10);

/// The largest UDP payload.
const MAX_DATAGRAM: usize = 65_535;

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("the relay cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("the relay's target {target} is not an address a datagram can be sent to")]
    Target { target: SocketAddr },
    #[error("the relay cannot set up its listening socket: {0}")]
    Socket(#[source] io::Error),
    #[error("the relay cannot start a thread: {0}")]
    Thread(#[source] io::Error),
}

/// A running relay. Dropping it stops its threads and closes its sockets.
pub struct Relay {
    addr: SocketAddr,
    target: SocketAddr,
    faults: Arc<RwLock<Faults>>,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    scheduler: Scheduler,
    threads: Vec<JoinHandle<()>>,
}

impl Relay {
    /// Listens on `listen` (port 0 picks a free port; use a concrete IP such as
    /// 127.0.0.1, since [`Relay::addr`] reports it to clients) and forwards to `target`,
    /// with no faults until [`Relay::set_faults`]. `seed` drives every fault decision.
    pub fn start(listen: SocketAddr, target: SocketAddr, seed: u64) -> Result<Relay, RelayError> {
        if target.ip().is_unspecified() || target.port() == 0 {
            return Err(RelayError::Target { target });
        }
        let front = UdpSocket::bind(listen).map_err(|source| RelayError::Bind {
            addr: listen,
            source,
        })?;
        front
            .set_read_timeout(Some(POLL))
            .map_err(RelayError::Socket)?;
        let addr = front.local_addr().map_err(RelayError::Socket)?;
        let front = Arc::new(front);
        let faults = Arc::new(RwLock::new(Faults::none()));
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (scheduler, timer) =
            Scheduler::start(front.clone(), counters.clone()).map_err(RelayError::Thread)?;
        let mut relay = Relay {
            addr,
            target,
            faults,
            counters,
            stop,
            scheduler,
            threads: vec![timer],
        };
        // From here on, an error drops `relay`, which stops the timer.
        let front_loop = FrontLoop {
            front,
            target,
            seed,
            faults: relay.faults.clone(),
            counters: relay.counters.clone(),
            stop: relay.stop.clone(),
            scheduler: relay.scheduler.clone(),
            clients: HashMap::new(),
        };
        let reader = thread::Builder::new()
            .name(format!("relay-{}", addr.port()))
            .spawn(move || front_loop.run())
            .map_err(RelayError::Thread)?;
        relay.threads.push(reader);
        Ok(relay)
    }

    /// Where clients should send: the address that a site's `[[peer]] addr` names.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where the relay forwards to.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// Applies `faults` to every datagram that enters the relay from now on; datagrams
    /// already delayed or held keep their fate. Bad settings are refused (naming the
    /// field) and the old ones stay.
    pub fn set_faults(&self, faults: Faults) -> Result<(), FaultsError> {
        faults.validate()?;
        *self.faults.write().unwrap_or_else(PoisonError::into_inner) = faults;
        Ok(())
    }

    /// The faults in force.
    pub fn faults(&self) -> Faults {
        self.faults
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// What the relay has counted so far.
    pub fn stats(&self) -> RelayStats {
        self.counters.snapshot()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.scheduler.stop();
        for thread in self.threads.drain(..) {
            // A relay thread that panicked has nothing left to clean up.
            let _ = thread.join();
        }
    }
}

/// The listening socket's reader: client → target.
struct FrontLoop {
    front: Arc<UdpSocket>,
    target: SocketAddr,
    seed: u64,
    faults: Arc<RwLock<Faults>>,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    scheduler: Scheduler,
    clients: HashMap<SocketAddr, Client>,
}

/// One client address: its link toward the target, and the thread that reads the
/// target's answers on its upstream socket.
struct Client {
    to_target: Link,
    reader: JoinHandle<()>,
}

impl FrontLoop {
    fn run(mut self) {
        let mut buffer = vec![0u8; MAX_DATAGRAM];
        let faults = self.faults.clone();
        while !self.stop.load(Ordering::Relaxed) {
            match self.front.recv_from(&mut buffer) {
                Ok((length, from)) => {
                    let now = Instant::now();
                    if let Some(client) = self.client(from) {
                        let faults = faults.read().unwrap_or_else(PoisonError::into_inner);
                        client
                            .to_target
                            .admit(&buffer[..length], &faults.to_target, now);
                    }
                }
                Err(error) if is_timeout(&error) => {}
                // Rare on an unconnected socket; keep serving, without spinning.
                Err(_) => thread::sleep(POLL),
            }
            let now = Instant::now();
            for client in self.clients.values_mut() {
                client.to_target.tick(now);
            }
        }
        for (_, client) in self.clients.drain() {
            let _ = client.reader.join();
        }
    }

    /// The client at `from`, opening its upstream socket on its first datagram; `None`
    /// (counted as refused) when it cannot have one.
    fn client(&mut self, from: SocketAddr) -> Option<&mut Client> {
        if !self.clients.contains_key(&from) {
            if self.clients.len() >= MAX_CLIENTS {
                bump(&self.counters.refused);
                return None;
            }
            match self.open_client(from) {
                Ok(client) => {
                    bump(&self.counters.clients);
                    self.clients.insert(from, client);
                }
                Err(_) => {
                    bump(&self.counters.refused);
                    return None;
                }
            }
        }
        self.clients.get_mut(&from)
    }

    fn open_client(&self, from: SocketAddr) -> io::Result<Client> {
        let any: SocketAddr = if self.target.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let upstream = UdpSocket::bind(any)?;
        // Connected: the OS passes on only the target's datagrams.
        upstream.connect(self.target)?;
        upstream.set_read_timeout(Some(POLL))?;
        let upstream = Arc::new(upstream);
        let index = self.clients.len() as u64;
        let link = |direction, destination| {
            Link::new(
                direction,
                destination,
                LinkDice::new(self.seed, index, direction),
                self.scheduler.clone(),
                self.counters.clone(),
            )
        };
        let upstream_loop = UpstreamLoop {
            upstream: upstream.clone(),
            from_target: link(Direction::FromTarget, Destination::Client(from)),
            faults: self.faults.clone(),
            stop: self.stop.clone(),
        };
        let reader = thread::Builder::new()
            .name(format!("relay-client-{index}"))
            .spawn(move || upstream_loop.run())?;
        Ok(Client {
            to_target: link(Direction::ToTarget, Destination::Upstream(upstream)),
            reader,
        })
    }
}

/// One client's upstream socket reader: target → client.
struct UpstreamLoop {
    upstream: Arc<UdpSocket>,
    from_target: Link,
    faults: Arc<RwLock<Faults>>,
    stop: Arc<AtomicBool>,
}

impl UpstreamLoop {
    fn run(mut self) {
        let mut buffer = vec![0u8; MAX_DATAGRAM];
        while !self.stop.load(Ordering::Relaxed) {
            match self.upstream.recv(&mut buffer) {
                Ok(length) => {
                    let now = Instant::now();
                    let faults = self.faults.read().unwrap_or_else(PoisonError::into_inner);
                    self.from_target
                        .admit(&buffer[..length], &faults.from_target, now);
                }
                Err(error) if is_timeout(&error) => {}
                // On a connected socket the OS reports a closed target port (ICMP
                // unreachable) here, once per error; the target may come back, so keep
                // reading, but do not spin if an error repeats.
                Err(_) => thread::sleep(POLL),
            }
            self.from_target.tick(Instant::now());
        }
    }
}

fn is_timeout(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}
