//! `FaultyNetwork`: TCP proxies in front of every member's peer and client ports that cut, delay
//! and disturb traffic on command; the rootless way to partition a cluster on loopback.
//!
//! Each member listens on its own loopback address, `FaultyNetwork::member_ip(id)`, and makes
//! its outgoing peer connections from it (`--peer-source-address`), so a proxy tells which
//! member a connection comes from by the connection's source address; any other source is
//! `Node::Clients`. Every network draws a fresh `127.x.y.0/24` for its members, so sockets a
//! previous cluster left in `TIME_WAIT` never hold a port a new member needs.
//! Members and clients know each other only by proxy addresses (`--initial-cluster`,
//! `--advertise-client`), so every byte between two parties crosses a proxy.
//!
//! Invariants:
//! - A cut direction delivers nothing; the bytes sent meanwhile wait, in order, until it heals,
//!   as retransmitted TCP segments would. A healed stream is therefore never corrupted.
//! - Delay, jitter and loss apply per chunk in arrival order: a later chunk never overtakes an
//!   earlier one. A lost chunk costs one retransmission delay, as it does in TCP.
//! - The proxies run on their own runtime; dropping the `FaultyNetwork` closes every listener
//!   and connection, whichever runtime the test uses and even when it panicked.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::rng::SeededRng;

/// What a lost chunk costs: a typical minimum TCP retransmission timeout.
pub const RETRANSMISSION_DELAY: Duration = Duration::from_millis(200);

/// Chunks a direction holds before it stops reading (and TCP back-pressure takes over).
const QUEUED_CHUNKS_MAX: usize = 64;

const CHUNK_BYTES: usize = 16 * 1024;

/// The last octet of member addresses is `MEMBER_IP_BASE + id`.
const MEMBER_IP_BASE: u8 = 10;

/// Networks created by this process so far; with the process id, picks each one's subnet.
static NETWORKS_CREATED: AtomicU64 = AtomicU64::new(0);

/// One end of a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Node {
    Member(u64),
    /// Every client process or task, which connect from other loopback addresses.
    Clients,
}

impl fmt::Display for Node {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Node::Member(id) => write!(formatter, "member {id}"),
            Node::Clients => formatter.write_str("clients"),
        }
    }
}

/// How a working link misbehaves.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LinkQuality {
    /// Added to every chunk.
    pub delay: Duration,
    /// Up to this much more, uniformly.
    pub jitter: Duration,
    /// Probability that a chunk is lost once and arrives `RETRANSMISSION_DELAY` later.
    pub loss: f64,
}

/// The address of member `id` in the loopback subnet `127.subnet.0/24`.
fn member_ip_in(subnet: [u8; 2], id: u64) -> IpAddr {
    let octet = u8::try_from(id)
        .ok()
        .and_then(|id| id.checked_add(MEMBER_IP_BASE))
        .expect("member ids in fault tests are below 246");
    IpAddr::V4(Ipv4Addr::new(127, subnet[0], subnet[1], octet))
}

/// Which node a connection from `ip` comes from, for members in `127.subnet.0/24`.
fn node_of(subnet: [u8; 2], ip: IpAddr) -> Node {
    match ip {
        IpAddr::V4(v4)
            if v4.octets()[..3] == [127, subnet[0], subnet[1]]
                && v4.octets()[3] > MEMBER_IP_BASE =>
        {
            Node::Member(u64::from(v4.octets()[3] - MEMBER_IP_BASE))
        }
        _ => Node::Clients,
    }
}

/// A subnet of 127/8 that no other network of this process uses, and that processes started
/// one after another are unlikely to share; never `127.0.0.0/24`, where clients live.
fn fresh_subnet() -> [u8; 2] {
    let created = NETWORKS_CREATED.fetch_add(1, Ordering::Relaxed);
    let mixed = u64::from(std::process::id()).wrapping_mul(251) + created;
    [1 + (mixed / 250 % 250) as u8, (mixed % 250) as u8]
}

/// Cuts and link qualities, by direction `(from, to)`.
#[derive(Debug, Default)]
struct Faults {
    cut: BTreeSet<(Node, Node)>,
    quality: BTreeMap<(Node, Node), LinkQuality>,
}

struct Shared {
    faults: Mutex<Faults>,
    /// Bumped on every change, so stalled directions re-check without polling.
    changes: watch::Sender<u64>,
    /// Seeds each direction's loss and jitter stream.
    directions_opened: AtomicU64,
    seed: u64,
    subnet: [u8; 2],
}

impl Shared {
    fn faults(&self) -> MutexGuard<'_, Faults> {
        // Nothing panics while holding the lock, so a poisoned lock still holds consistent data.
        self.faults.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn change(&self, edit: impl FnOnce(&mut Faults)) {
        edit(&mut self.faults());
        self.changes.send_modify(|generation| *generation += 1);
    }

    fn is_cut(&self, direction: (Node, Node)) -> bool {
        self.faults().cut.contains(&direction)
    }

    fn quality(&self, direction: (Node, Node)) -> LinkQuality {
        self.faults()
            .quality
            .get(&direction)
            .copied()
            .unwrap_or_default()
    }

    async fn wait_until_open(&self, direction: (Node, Node)) {
        // Subscribing before checking means no heal between the check and the wait is missed.
        let mut changes = self.changes.subscribe();
        while self.is_cut(direction) {
            if changes.changed().await.is_err() {
                return;
            }
        }
    }
}

/// Proxies for a cluster's members, and the faults they inject.
pub struct FaultyNetwork {
    shared: Arc<Shared>,
    members: Mutex<BTreeSet<u64>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl FaultyNetwork {
    /// A network with no faults; `seed` fixes the loss and jitter streams.
    pub fn new(seed: u64) -> FaultyNetwork {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("fault-proxy")
            .enable_all()
            .build()
            .expect("the proxy runtime starts");
        let (changes, _) = watch::channel(0);
        FaultyNetwork {
            shared: Arc::new(Shared {
                faults: Mutex::new(Faults::default()),
                changes,
                directions_opened: AtomicU64::new(0),
                seed,
                subnet: fresh_subnet(),
            }),
            members: Mutex::new(BTreeSet::new()),
            runtime: Some(runtime),
        }
    }

    /// Starts a proxy for member `member` that forwards to `target` (where the member really
    /// listens) and returns the loopback address to give out instead.
    pub fn proxy(&self, member: u64, target: SocketAddr) -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("loopback has free ports");
        listener
            .set_nonblocking(true)
            .expect("listeners can be non-blocking");
        let address = listener
            .local_addr()
            .expect("a bound socket has an address");
        self.members
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(member);
        let shared = self.shared.clone();
        self.runtime().spawn(async move {
            let listener = TcpListener::from_std(listener).expect("the proxy runtime has I/O");
            serve(listener, Node::Member(member), target, shared).await;
        });
        address
    }

    /// The loopback address member `id` listens on and connects from in this network.
    pub fn member_ip(&self, id: u64) -> IpAddr {
        member_ip_in(self.shared.subnet, id)
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        self.runtime.as_ref().expect("the runtime lives until drop")
    }

    fn members(&self) -> Vec<u64> {
        self.members
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .copied()
            .collect()
    }

    /// Stops delivery from `from` to `to` (one direction only).
    pub fn cut(&self, from: Node, to: Node) {
        self.shared.change(|faults| {
            faults.cut.insert((from, to));
        });
    }

    /// Stops delivery both ways between `a` and `b`.
    pub fn cut_both(&self, a: Node, b: Node) {
        self.shared.change(|faults| {
            faults.cut.insert((a, b));
            faults.cut.insert((b, a));
        });
    }

    /// Cuts `member` off from every other member and from clients, both ways.
    pub fn isolate(&self, member: u64) {
        let others: Vec<Node> = self
            .members()
            .into_iter()
            .filter(|id| *id != member)
            .map(Node::Member)
            .chain([Node::Clients])
            .collect();
        self.shared.change(|faults| {
            for other in others {
                faults.cut.insert((Node::Member(member), other));
                faults.cut.insert((other, Node::Member(member)));
            }
        });
    }

    /// Cuts every link between two members that share no group, both ways; clients still reach
    /// everyone. Groups may overlap: `[[1, 2], [2, 3]]` is a bridge through member 2.
    pub fn partition(&self, groups: &[Vec<u64>]) {
        let together = |a: u64, b: u64| {
            a == b
                || groups
                    .iter()
                    .any(|group| group.contains(&a) && group.contains(&b))
        };
        let members = self.members();
        self.shared.change(|faults| {
            for a in &members {
                for b in &members {
                    if !together(*a, *b) {
                        faults.cut.insert((Node::Member(*a), Node::Member(*b)));
                    }
                }
            }
        });
    }

    /// Sets how the link from `from` to `to` misbehaves while it is not cut.
    pub fn set_quality(&self, from: Node, to: Node, quality: LinkQuality) {
        self.shared.change(|faults| {
            faults.quality.insert((from, to), quality);
        });
    }

    /// Makes every member-to-member direction misbehave the same way.
    pub fn degrade_all(&self, quality: LinkQuality) {
        let members = self.members();
        self.shared.change(|faults| {
            for a in &members {
                for b in &members {
                    if a != b {
                        faults
                            .quality
                            .insert((Node::Member(*a), Node::Member(*b)), quality);
                    }
                }
            }
        });
    }

    /// Removes every cut and every link degradation.
    pub fn heal(&self) {
        self.shared.change(|faults| {
            faults.cut.clear();
            faults.quality.clear();
        });
    }

    /// The directions cut right now, for reports.
    pub fn cuts(&self) -> Vec<(Node, Node)> {
        self.shared.faults().cut.iter().copied().collect()
    }
}

impl Drop for FaultyNetwork {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            // Unlike a plain drop, this is allowed inside another runtime (an async test).
            runtime.shutdown_background();
        }
    }
}

async fn serve(listener: TcpListener, to: Node, target: SocketAddr, shared: Arc<Shared>) {
    loop {
        let (inbound, source) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(_) => {
                // Out of descriptors or similar: wait rather than spin.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let from = node_of(shared.subnet, source.ip());
        let shared = shared.clone();
        tokio::spawn(async move {
            // A member that is down refuses; the caller then sees its connection closed.
            let Ok(outbound) = TcpStream::connect(target).await else {
                return;
            };
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            let (inbound_read, inbound_write) = inbound.into_split();
            let (outbound_read, outbound_write) = outbound.into_split();
            tokio::join!(
                pump(inbound_read, outbound_write, (from, to), shared.clone()),
                pump(outbound_read, inbound_write, (to, from), shared),
            );
        });
    }
}

/// Copies one direction of a connection, applying that direction's faults.
async fn pump(
    mut source: OwnedReadHalf,
    mut sink: OwnedWriteHalf,
    direction: (Node, Node),
    shared: Arc<Shared>,
) {
    let stream = shared.directions_opened.fetch_add(1, Ordering::Relaxed);
    let mut rng = SeededRng::derive(shared.seed, stream);
    let (chunks, mut queued) = mpsc::channel::<(Instant, Vec<u8>)>(QUEUED_CHUNKS_MAX);
    let reader = async move {
        let mut buffer = vec![0u8; CHUNK_BYTES];
        loop {
            match source.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(read) => {
                    if chunks
                        .send((Instant::now(), buffer[..read].to_vec()))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
    };
    let writer = async move {
        let mut last_due = Instant::now();
        while let Some((arrived, bytes)) = queued.recv().await {
            let quality = shared.quality(direction);
            let mut due = arrived + quality.delay + rng.between(Duration::ZERO, quality.jitter);
            if quality.loss > 0.0 && rng.chance(quality.loss) {
                due += RETRANSMISSION_DELAY;
            }
            due = due.max(last_due);
            last_due = due;
            tokio::time::sleep_until(due).await;
            shared.wait_until_open(direction).await;
            if sink.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = sink.shutdown().await;
    };
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on loopback; returns its address.
    fn echo_server(runtime: &tokio::runtime::Runtime) -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let address = listener.local_addr().unwrap();
        runtime.spawn(async move {
            let listener = TcpListener::from_std(listener).unwrap();
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let (mut read, mut write) = stream.split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                });
            }
        });
        address
    }

    async fn round_trip(stream: &mut TcpStream, message: &[u8]) -> Option<Vec<u8>> {
        stream.write_all(message).await.ok()?;
        let mut reply = vec![0u8; message.len()];
        tokio::time::timeout(Duration::from_millis(300), stream.read_exact(&mut reply))
            .await
            .ok()?
            .ok()?;
        Some(reply)
    }

    #[test]
    fn member_addresses_identify_members() {
        let network = FaultyNetwork::new(0);
        let subnet = network.shared.subnet;
        assert_eq!(node_of(subnet, network.member_ip(3)), Node::Member(3));
        assert_eq!(node_of(subnet, "127.0.0.1".parse().unwrap()), Node::Clients);
        assert_eq!(node_of(subnet, "::1".parse().unwrap()), Node::Clients);
        let other = FaultyNetwork::new(0);
        assert_ne!(other.member_ip(3), network.member_ip(3));
        assert_eq!(node_of(subnet, other.member_ip(3)), Node::Clients);
    }

    #[test]
    fn a_cut_holds_bytes_back_and_a_heal_delivers_them_in_order() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let echo = echo_server(&runtime);
        let network = FaultyNetwork::new(1);
        let proxy = network.proxy(1, echo);
        runtime.block_on(async {
            let mut stream = TcpStream::connect(proxy).await.unwrap();
            assert_eq!(
                round_trip(&mut stream, b"one").await.as_deref(),
                Some(&b"one"[..])
            );

            // Cut replies only: the request arrives, the echo is held back.
            network.cut(Node::Member(1), Node::Clients);
            assert_eq!(round_trip(&mut stream, b"two").await, None);
            network.heal();
            let mut late = [0u8; 3];
            tokio::time::timeout(Duration::from_secs(2), stream.read_exact(&mut late))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(&late, b"two");
            assert_eq!(
                round_trip(&mut stream, b"three").await.as_deref(),
                Some(&b"three"[..])
            );

            network.isolate(1);
            assert_eq!(round_trip(&mut stream, b"four").await, None);
        });
    }

    #[test]
    fn delay_slows_a_link_without_reordering() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let echo = echo_server(&runtime);
        let network = FaultyNetwork::new(2);
        let proxy = network.proxy(1, echo);
        network.set_quality(
            Node::Clients,
            Node::Member(1),
            LinkQuality {
                delay: Duration::from_millis(100),
                jitter: Duration::from_millis(50),
                loss: 0.2,
            },
        );
        runtime.block_on(async {
            let mut stream = TcpStream::connect(proxy).await.unwrap();
            let started = Instant::now();
            let mut expected = Vec::new();
            for index in 0..20u8 {
                stream.write_all(&[index]).await.unwrap();
                expected.push(index);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            let mut received = vec![0u8; expected.len()];
            tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut received))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(received, expected, "bytes arrived out of order");
            assert!(
                started.elapsed() >= Duration::from_millis(100),
                "the delay was not applied"
            );
        });
    }

    #[test]
    fn members_in_other_groups_are_cut_and_clients_are_not() {
        let network = FaultyNetwork::new(3);
        for id in 1..=3 {
            let _ = network.proxy(id, "127.0.0.1:9".parse().unwrap());
        }
        network.partition(&[vec![1], vec![2, 3]]);
        let cuts = network.cuts();
        assert!(cuts.contains(&(Node::Member(1), Node::Member(2))));
        assert!(cuts.contains(&(Node::Member(3), Node::Member(1))));
        assert!(!cuts.contains(&(Node::Member(2), Node::Member(3))));
        assert!(!cuts
            .iter()
            .any(|(a, b)| *a == Node::Clients || *b == Node::Clients));
        network.heal();
        network.partition(&[vec![1, 2], vec![2, 3]]);
        let cuts = network.cuts();
        assert_eq!(
            cuts,
            vec![
                (Node::Member(1), Node::Member(3)),
                (Node::Member(3), Node::Member(1))
            ]
        );
        network.heal();
        assert!(network.cuts().is_empty());
    }
}
