//! The relay's timer: one thread that sends each admitted datagram when it falls due,
//! from a binary heap ordered by (due time, admission order). Admission order breaks ties,
//! so datagrams due at the same instant leave in the order they were pushed; the reorder
//! fault relies on that.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Instant;

use super::faults::Direction;
use super::stats::{Counters, bump};

/// At most this many datagrams wait in the queue at once, and at most
/// [`MAX_QUEUED_BYTES`] bytes. A datagram that does not fit is dropped and counted
/// (`dropped_queue_full`), as a real link's buffer tail-drops: without a bound, a fast
/// sender behind a long delay would grow the relay's memory without limit.
pub const MAX_QUEUED_DATAGRAMS: usize = 8192;
/// See [`MAX_QUEUED_DATAGRAMS`].
pub const MAX_QUEUED_BYTES: usize = 32 * 1024 * 1024;

/// Where a datagram goes when it is due.
#[derive(Debug, Clone)]
pub(super) enum Destination {
    /// Toward the target, on the client's own upstream socket (connected to the target).
    Upstream(Arc<UdpSocket>),
    /// Back to a client, from the relay's listening socket.
    Client(SocketAddr),
}

/// A handle to push datagrams to the timer thread; clones share the one queue.
#[derive(Clone)]
pub(super) struct Scheduler {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    /// The relay's listening socket, which answers clients.
    front: Arc<UdpSocket>,
    counters: Arc<Counters>,
}

#[derive(Default)]
struct State {
    queue: BinaryHeap<Reverse<Entry>>,
    bytes: usize,
    next_order: u64,
    stopping: bool,
}

struct Entry {
    due: Instant,
    order: u64,
    direction: Direction,
    destination: Destination,
    datagram: Vec<u8>,
}

impl Entry {
    fn key(&self) -> (Instant, u64) {
        (self.due, self.order)
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}

impl Scheduler {
    /// Starts the timer thread; it runs until [`Scheduler::stop`].
    pub fn start(
        front: Arc<UdpSocket>,
        counters: Arc<Counters>,
    ) -> io::Result<(Scheduler, JoinHandle<()>)> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            front,
            counters,
        });
        let thread = thread::Builder::new().name("relay-timer".into()).spawn({
            let shared = shared.clone();
            move || run(&shared)
        })?;
        Ok((Scheduler { shared }, thread))
    }

    /// Queues `datagram` to leave at `due`, or drops and counts it if the queue is full.
    pub fn push(
        &self,
        due: Instant,
        direction: Direction,
        destination: Destination,
        datagram: Vec<u8>,
    ) {
        let mut state = lock(&self.shared.state);
        if state.queue.len() >= MAX_QUEUED_DATAGRAMS
            || state.bytes + datagram.len() > MAX_QUEUED_BYTES
        {
            bump(&self.shared.counters.link(direction).dropped_queue_full);
            return;
        }
        let order = state.next_order;
        state.next_order += 1;
        state.bytes += datagram.len();
        state.queue.push(Reverse(Entry {
            due,
            order,
            direction,
            destination,
            datagram,
        }));
        // Only a new earliest entry changes how long the thread should sleep.
        let earliest = state
            .queue
            .peek()
            .is_some_and(|Reverse(first)| first.order == order);
        drop(state);
        if earliest {
            self.shared.wake.notify_one();
        }
    }

    /// Stops the thread; datagrams still queued are dropped (the relay is going away).
    pub fn stop(&self) {
        lock(&self.shared.state).stopping = true;
        self.shared.wake.notify_one();
    }
}

fn run(shared: &Shared) {
    let mut state = lock(&shared.state);
    loop {
        if state.stopping {
            return;
        }
        let now = Instant::now();
        let wait = match state.queue.peek() {
            None => None,
            Some(Reverse(first)) if first.due > now => Some(first.due - now),
            Some(_) => {
                if let Some(Reverse(entry)) = state.queue.pop() {
                    state.bytes -= entry.datagram.len();
                    // Send without the lock, so ingress threads are never held up by I/O.
                    drop(state);
                    send(shared, &entry);
                    state = lock(&shared.state);
                }
                continue;
            }
        };
        state = match wait {
            None => shared
                .wake
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner),
            Some(timeout) => {
                shared
                    .wake
                    .wait_timeout(state, timeout)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0
            }
        };
    }
}

fn send(shared: &Shared, entry: &Entry) {
    let sent = match &entry.destination {
        Destination::Upstream(socket) => socket.send(&entry.datagram),
        Destination::Client(client) => shared.front.send_to(&entry.datagram, client),
    };
    let counters = shared.counters.link(entry.direction);
    match sent {
        Ok(_) => bump(&counters.forwarded),
        // A closed port at the target (ICMP unreachable) or a full socket buffer: the
        // datagram is lost, as it would be on a real network; the count says so.
        Err(_) => bump(&counters.send_errors),
    }
}

/// Locks, ignoring poison: the state stays consistent between statements, and a panic
/// elsewhere must not take the relay's other threads down with it.
fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}
