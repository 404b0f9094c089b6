//! The second path between agents: authenticated UDP heartbeats over
//! another network than VRRP's. Every interval each agent sends its droplet
//! id and, per VRRP router (family and VRID), its state and effective priority to its peers; what it
//! hears is published as a [`PeerTable`]. The VRRP driver uses it to tell a
//! partitioned VRRP path from a dead master, and the floating-IP manager to
//! know which droplet belongs to which router.

pub mod wire;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use lbha_common::event::VridKey;
use tokio::{net::UdpSocket, sync::watch, task::JoinHandle};

use self::wire::{Key, Message, Record, Refused};
use crate::{clock::monotonic_ns, config};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("reading heartbeat key file {path}")]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("heartbeat key file {0} holds fewer than {min} bytes", min = wire::MIN_KEY_BYTES)]
    TooShort(std::path::PathBuf),
}

/// Reads the shared secret (surrounding whitespace, such as the newline of
/// `openssl rand -hex 32 > file`, is not part of it). Blocks.
pub fn read_key(path: &std::path::Path) -> Result<Vec<u8>, KeyError> {
    let bytes = std::fs::read(path).map_err(|source| KeyError::Read {
        path: path.to_owned(),
        source,
    })?;
    let key = bytes.trim_ascii().to_vec();
    if key.len() < wire::MIN_KEY_BYTES {
        return Err(KeyError::TooShort(path.to_owned()));
    }
    Ok(key)
}

/// What this agent reports, by family and VRID (an IPv4 and an IPv6
/// instance may share a VRID); the interface tasks keep it current.
#[derive(Clone, Debug, Default)]
pub struct Local(Arc<Mutex<BTreeMap<VridKey, Record>>>);

impl Local {
    pub fn set(&self, record: Record) {
        self.with(|all| all.insert(record.key(), record));
    }

    pub fn remove(&self, key: VridKey) {
        self.with(|all| all.remove(&key));
    }

    /// What the next heartbeat carries.
    pub(crate) fn records(&self) -> Vec<Record> {
        self.with(|all| all.values().copied().collect())
    }

    fn with<T>(&self, f: impl FnOnce(&mut BTreeMap<VridKey, Record>) -> T) -> T {
        let mut all = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut all)
    }
}

/// The last heartbeat accepted from one peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub droplet_id: u64,
    pub records: Vec<Record>,
    /// When it arrived (`CLOCK_MONOTONIC` ns).
    pub received_ns: u64,
    boot_id: u64,
    seq: u64,
}

impl Peer {
    /// The peer as `message`, accepted at `received_ns`, shows it.
    pub(crate) fn from_message(message: Message, received_ns: u64) -> Self {
        Self {
            droplet_id: message.droplet_id,
            records: message.records,
            received_ns,
            boot_id: message.boot_id,
            seq: message.seq,
        }
    }
}

/// Peers by their configured address, with how long a heartbeat counts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerTable {
    pub peers: BTreeMap<SocketAddr, Peer>,
    /// A peer's heartbeat counts this long after it arrived.
    pub valid_for_ns: u64,
}

impl PeerTable {
    /// Until when (monotonic ns) a healthy peer says it is Master of the
    /// router `key` (that family's instance of the VRID), if one does.
    pub fn master_alive_until(&self, key: VridKey) -> Option<u64> {
        self.peers
            .values()
            .filter(|peer| {
                peer.records
                    .iter()
                    .any(|r| r.key() == key && r.state == wire::PeerState::Master && r.healthy)
            })
            .map(|peer| peer.received_ns + self.valid_for_ns)
            .max()
    }

    /// Whether `peer`'s last heartbeat still counts at `now`.
    pub fn is_fresh(&self, peer: &Peer, now: u64) -> bool {
        now < peer.received_ns + self.valid_for_ns
    }
}

/// Heartbeats received, by outcome (for metrics).
#[derive(Debug, Default)]
pub struct Counters {
    pub accepted: std::sync::atomic::AtomicU64,
    refused: [std::sync::atomic::AtomicU64; Refused::ALL.len()],
    pub send_errors: std::sync::atomic::AtomicU64,
}

impl Counters {
    fn refuse(&self, why: Refused) {
        let index = Refused::ALL.iter().position(|r| *r == why).unwrap_or(0);
        self.refused[index].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// (outcome, count) for every outcome.
    pub fn all(&self) -> Vec<(String, u64)> {
        use std::sync::atomic::Ordering::Relaxed;
        let mut out = vec![("accepted".to_owned(), self.accepted.load(Relaxed))];
        for (why, count) in Refused::ALL.iter().zip(&self.refused) {
            out.push((why.to_string(), count.load(Relaxed)));
        }
        out.push(("send_error".to_owned(), self.send_errors.load(Relaxed)));
        out
    }
}

/// The running heartbeat: its peer table and its two tasks.
pub struct Heartbeat {
    pub peers: watch::Receiver<PeerTable>,
    pub counters: Arc<Counters>,
    tasks: [JoinHandle<()>; 2],
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Heartbeat {
    /// Binds the socket and starts sending and receiving. `droplet` says our
    /// droplet id once it is known (0 until then).
    pub async fn start(
        config: &config::Heartbeat,
        secret: &[u8],
        local: Local,
        droplet: watch::Receiver<u64>,
    ) -> std::io::Result<Self> {
        let socket = Arc::new(UdpSocket::bind(config.listen).await?);
        let key = Arc::new(Key::new(secret));
        let valid_for_ns =
            config.interval.as_nanos() as u64 * u64::from(config::Heartbeat::MISSED_TO_SILENT);
        let (table_tx, peers) = watch::channel(PeerTable {
            peers: BTreeMap::new(),
            valid_for_ns,
        });
        let counters = Arc::new(Counters::default());
        let sender = tokio::spawn(send_loop(
            socket.clone(),
            key.clone(),
            config.peers.clone(),
            config.interval,
            local,
            droplet,
            counters.clone(),
        ));
        let receiver = tokio::spawn(receive_loop(
            socket,
            key,
            config.peers.clone(),
            table_tx,
            counters.clone(),
        ));
        tracing::info!(listen = %config.listen, peers = ?config.peers, "heartbeat running");
        Ok(Self {
            peers,
            counters,
            tasks: [sender, receiver],
        })
    }

    pub fn stop(self) {
        for task in self.tasks {
            task.abort();
        }
    }
}

async fn send_loop(
    socket: Arc<UdpSocket>,
    key: Arc<Key>,
    peers: Vec<SocketAddr>,
    interval: Duration,
    local: Local,
    droplet: watch::Receiver<u64>,
    counters: Arc<Counters>,
) {
    let boot_id = fastrand::u64(..);
    let mut seq = 0u64;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        seq += 1;
        let datagram = wire::encode(
            &Message {
                droplet_id: *droplet.borrow(),
                boot_id,
                seq,
                sent_unix_ms: unix_ms(),
                records: local.records(),
            },
            &key,
        );
        for peer in &peers {
            if let Err(error) = socket.send_to(&datagram, peer).await {
                counters
                    .send_errors
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::debug!(%peer, %error, "heartbeat not sent");
            }
        }
    }
}

/// Fits the largest heartbeat: [`wire::MAX_RECORDS`] version 2 records
/// (6,192 bytes).
const RECEIVE_BUFFER: usize = 8192;

async fn receive_loop(
    socket: Arc<UdpSocket>,
    key: Arc<Key>,
    peers: Vec<SocketAddr>,
    table: watch::Sender<PeerTable>,
    counters: Arc<Counters>,
) {
    let mut buffer = vec![0u8; RECEIVE_BUFFER];
    loop {
        let (len, from) = match socket.recv_from(&mut buffer).await {
            Ok(received) => received,
            Err(error) => {
                tracing::warn!(%error, "heartbeat socket failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let now = monotonic_ns();
        let result = accept(&buffer[..len], from, &key, &peers, &table.borrow());
        match result {
            Ok((peer, message)) => {
                counters
                    .accepted
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                table.send_modify(|t| {
                    let droplet_id = message.droplet_id;
                    let known = t.peers.insert(peer, Peer::from_message(message, now));
                    if known.is_none() {
                        tracing::info!(%peer, droplet_id, "heartbeat from peer");
                    }
                });
            }
            Err(why) => {
                counters.refuse(why);
                tracing::debug!(%from, %why, "heartbeat refused");
            }
        }
    }
}

/// Decides about one datagram from `from`: which configured peer sent it
/// and what it says, or why it is refused.
fn accept(
    datagram: &[u8],
    from: SocketAddr,
    key: &Key,
    peers: &[SocketAddr],
    table: &PeerTable,
) -> Result<(SocketAddr, Message), Refused> {
    let peer = *peers
        .iter()
        .find(|p| p.ip() == from.ip())
        .ok_or(Refused::UnknownSender)?;
    let message = wire::decode(datagram, key)?;
    let last = table.peers.get(&peer).map(|p| (p.boot_id, p.seq));
    wire::is_fresh(&message, unix_ms(), last)?;
    Ok((peer, message))
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::{wire::PeerState, *};

    const SECRET: &[u8] = b"heartbeat-test-secret";

    fn record(vrid: u8, state: PeerState, healthy: bool) -> Record {
        Record {
            vrid,
            state,
            priority: 200,
            healthy,
            address: Ipv4Addr::new(10, 0, 0, 1).into(),
        }
    }

    /// An IPv6 instance's record.
    fn record6(vrid: u8, state: PeerState) -> Record {
        Record {
            address: "fe80::1".parse().unwrap(),
            ..record(vrid, state, true)
        }
    }

    fn table_with(records: Vec<Record>) -> PeerTable {
        let mut table = PeerTable {
            valid_for_ns: 300,
            ..PeerTable::default()
        };
        table.peers.insert(
            "10.0.9.1:7823".parse().unwrap(),
            Peer {
                droplet_id: 1,
                records,
                received_ns: 1_000,
                boot_id: 1,
                seq: 1,
            },
        );
        table
    }

    #[test]
    fn a_master_keeps_only_its_own_familys_router_of_the_vrid_alive() {
        let v6_master = table_with(vec![record6(51, PeerState::Master)]);
        assert_eq!(v6_master.master_alive_until(VridKey::v6(51)), Some(1_300));
        assert_eq!(
            v6_master.master_alive_until(VridKey::v4(51)),
            None,
            "an IPv6 master is not the IPv4 router of its VRID"
        );
        let v4_master = table_with(vec![
            record(51, PeerState::Master, true),
            record6(51, PeerState::Backup),
        ]);
        assert_eq!(v4_master.master_alive_until(VridKey::v4(51)), Some(1_300));
        assert_eq!(v4_master.master_alive_until(VridKey::v6(51)), None);
    }

    #[test]
    fn local_keeps_both_families_of_a_vrid_apart() {
        let local = Local::default();
        local.set(record(51, PeerState::Master, true));
        local.set(record6(51, PeerState::Backup));
        assert_eq!(local.records().len(), 2);
        local.remove(VridKey::v4(51));
        assert_eq!(local.records(), vec![record6(51, PeerState::Backup)]);
    }

    #[test]
    fn the_largest_heartbeat_fits_the_receive_buffer() {
        let message = Message {
            droplet_id: 1,
            boot_id: 1,
            seq: 1,
            sent_unix_ms: 1,
            records: vec![record6(1, PeerState::Master); wire::MAX_RECORDS],
        };
        let len = wire::encode(&message, &Key::new(SECRET)).len();
        assert!(len <= RECEIVE_BUFFER, "{len}");
    }

    #[test]
    fn only_a_fresh_healthy_master_keeps_the_vrid_alive() {
        let mut table = PeerTable {
            valid_for_ns: 300,
            ..PeerTable::default()
        };
        let peer = |records, received_ns| Peer {
            droplet_id: 1,
            records,
            received_ns,
            boot_id: 1,
            seq: 1,
        };
        table.peers.insert(
            "10.0.9.1:7823".parse().unwrap(),
            peer(
                vec![
                    record(51, PeerState::Master, true),
                    record(52, PeerState::Master, false),
                    record(53, PeerState::Backup, true),
                ],
                1_000,
            ),
        );
        assert_eq!(table.master_alive_until(VridKey::v4(51)), Some(1_300));
        assert_eq!(
            table.master_alive_until(VridKey::v4(52)),
            None,
            "a faulted master is not alive"
        );
        assert_eq!(
            table.master_alive_until(VridKey::v4(53)),
            None,
            "a backup is no master"
        );
        assert_eq!(table.master_alive_until(VridKey::v4(54)), None);
        let p = &table.peers[&"10.0.9.1:7823".parse().unwrap()];
        assert!(table.is_fresh(p, 1_299) && !table.is_fresh(p, 1_300));
    }

    #[test]
    fn datagrams_from_strangers_and_replays_are_refused() {
        let key = Key::new(SECRET);
        let peer: SocketAddr = "10.0.9.1:7823".parse().unwrap();
        let message = Message {
            droplet_id: 7,
            boot_id: 3,
            seq: 10,
            sent_unix_ms: unix_ms(),
            records: vec![record(51, PeerState::Master, true)],
        };
        let bytes = wire::encode(&message, &key);
        let mut table = PeerTable::default();
        let from_peer: SocketAddr = "10.0.9.1:40000".parse().unwrap();
        assert_eq!(
            accept(&bytes, from_peer, &key, &[peer], &table).map(|(p, _)| p),
            Ok(peer),
            "the peer's address, whatever its source port"
        );
        assert_eq!(
            accept(
                &bytes,
                "10.0.9.2:7823".parse().unwrap(),
                &key,
                &[peer],
                &table
            )
            .err(),
            Some(Refused::UnknownSender)
        );
        table.peers.insert(
            peer,
            Peer {
                droplet_id: 7,
                records: vec![],
                received_ns: 0,
                boot_id: 3,
                seq: 10,
            },
        );
        assert_eq!(
            accept(&bytes, from_peer, &key, &[peer], &table).err(),
            Some(Refused::Replayed)
        );
    }

    #[tokio::test]
    async fn two_agents_hear_each_other_on_loopback() {
        // Both families, so the heartbeats go as version 2.
        let local_a = Local::default();
        local_a.set(record(52, PeerState::Master, true));
        local_a.set(record6(51, PeerState::Master));
        let (_da, droplet_a) = watch::channel(1001);
        let (_db, droplet_b) = watch::channel(1002);
        let (addrs, a, b) = start_pair(local_a, droplet_a, droplet_b).await;
        let mut seen = b.peers.clone();
        tokio::time::timeout(Duration::from_secs(5), async {
            while seen.borrow().master_alive_until(VridKey::v6(51)).is_none() {
                seen.changed().await.unwrap();
            }
        })
        .await
        .expect("b hears a's heartbeat");
        let table = seen.borrow().clone();
        assert_eq!(table.peers[&addrs[0]].droplet_id, 1001);
        assert!(table.master_alive_until(VridKey::v4(52)).is_some());
        assert!(table.master_alive_until(VridKey::v4(51)).is_none());
        a.stop();
        b.stop();
    }

    /// Starts two agents that name each other as peers. Each must know the
    /// other's port before it binds, so the ports are probed first; another
    /// test in this process can take a probed port before we bind it, so an
    /// `AddrInUse` picks fresh ports (a few times) instead of failing.
    async fn start_pair(
        local_a: Local,
        droplet_a: watch::Receiver<u64>,
        droplet_b: watch::Receiver<u64>,
    ) -> ([SocketAddr; 2], Heartbeat, Heartbeat) {
        for _ in 0..10 {
            let addrs = [free_port(), free_port()]
                .map(|port| SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
            let config = |i: usize| config::Heartbeat {
                listen: addrs[i],
                peers: vec![addrs[1 - i]],
                key_file: "/unused".into(),
                interval: Duration::from_millis(20),
            };
            let a = match Heartbeat::start(&config(0), SECRET, local_a.clone(), droplet_a.clone())
                .await
            {
                Ok(a) => a,
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
                Err(e) => panic!("starting a: {e}"),
            };
            match Heartbeat::start(&config(1), SECRET, Local::default(), droplet_b.clone()).await {
                Ok(b) => return (addrs, a, b),
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => a.stop(),
                Err(e) => panic!("starting b: {e}"),
            }
        }
        panic!("no free pair of loopback UDP ports in 10 tries");
    }

    fn free_port() -> u16 {
        std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }
}
