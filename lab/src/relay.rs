//! A TCP relay that delays every segment, each way: the tens of
//! milliseconds between a droplet and DigitalOcean's API, which the lab's
//! simulator next door would otherwise hide. This kernel has no netem
//! qdisc, so the delay is added here, in user space, per read: what the
//! relay reads from one side it writes to the other `delay` later, in
//! order. A TLS handshake then costs its real number of round trips.
//!
//! TCP's own handshake is answered by this host's kernel at once, so the
//! relay adds it: nothing a client sends on a new connection goes on
//! before one round trip (`2 × delay`) after the connection was accepted,
//! which is when the client could first have sent it had its SYN and our
//! SYN-ACK crossed the same distance. A new connection's first request
//! therefore costs TCP + (TLS) + request round trips, and one on a
//! kept-alive connection a single round trip, as on the real path.

use std::{
    io::{Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

/// A running relay; stops accepting when dropped (open connections end
/// when either side closes).
pub struct DelayRelay {
    pub listen: SocketAddr,
    stop: Arc<AtomicBool>,
    connections: Arc<AtomicU64>,
}

impl DelayRelay {
    /// Listens on `listen` (port 0: any) and relays every connection to
    /// `upstream`, `delay` each way.
    pub fn start(listen: SocketAddr, upstream: SocketAddr, delay: Duration) -> Result<Self> {
        let listener = TcpListener::bind(listen).with_context(|| format!("relay on {listen}"))?;
        let listen = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let connections = Arc::new(AtomicU64::new(0));
        let counted = connections.clone();
        // Threads spawned from here (and their sockets) are in the network
        // namespace of the thread that called `start`.
        thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let accepted = Instant::now();
                        counted.fetch_add(1, Ordering::Relaxed);
                        let _ = client.set_nonblocking(false);
                        thread::spawn(move || {
                            if let Ok(server) = TcpStream::connect(upstream) {
                                relay_both_ways(client, server, delay, accepted);
                            }
                        });
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(5));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(50)),
                }
            }
        });
        Ok(Self {
            listen,
            stop,
            connections,
        })
    }

    /// [`start`](Self::start) inside network namespace `netns`: the
    /// listener, and the connections to `upstream`, live there.
    pub fn start_in(
        netns: &str,
        listen: SocketAddr,
        upstream: SocketAddr,
        delay: Duration,
    ) -> Result<Self> {
        lbha_harness::in_netns(netns, move || Self::start(listen, upstream, delay))?
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }
}

impl Drop for DelayRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn relay_both_ways(client: TcpStream, server: TcpStream, delay: Duration, accepted: Instant) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    // The client could have sent nothing before the TCP handshake's round
    // trip, had it crossed the distance.
    let handshake_done = accepted + 2 * delay;
    let up = thread::spawn(move || pump(client, server2, delay, Some(handshake_done)));
    pump(server, client2, delay, None);
    let _ = up.join();
}

/// Copies `from` to `to`, each chunk `delay` after it was read (or after
/// `not_before`, if later).
fn pump(mut from: TcpStream, mut to: TcpStream, delay: Duration, not_before: Option<Instant>) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    let writer = thread::spawn(move || {
        for (read_at, chunk) in rx {
            let due = not_before.map_or(read_at, |at| at.max(read_at)) + delay;
            let now = Instant::now();
            if due > now {
                thread::sleep(due - now);
            }
            if to.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if tx.send((Instant::now(), buffer[..n].to_vec())).is_err() {
                    break;
                }
            }
        }
    }
    drop(tx);
    let _ = writer.join();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on loopback; returns its address.
    fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                thread::spawn(move || {
                    let mut stream = stream;
                    let mut buffer = [0u8; 1024];
                    while let Ok(n) = stream.read(&mut buffer) {
                        if n == 0 || stream.write_all(&buffer[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    #[test]
    fn each_round_trip_costs_twice_the_delay_and_bytes_keep_their_order() {
        let delay = Duration::from_millis(40);
        let relay = DelayRelay::start("127.0.0.1:0".parse().unwrap(), echo(), delay).unwrap();
        for connection in 1..=2u64 {
            let connected = Instant::now();
            let mut stream = TcpStream::connect(relay.listen).unwrap();
            stream.set_nodelay(true).unwrap();
            for round in 0..3u8 {
                let started = if round == 0 {
                    connected
                } else {
                    Instant::now()
                };
                let message = [round; 100];
                stream.write_all(&message).unwrap();
                let mut back = [0u8; 100];
                stream.read_exact(&mut back).unwrap();
                let took = started.elapsed();
                assert_eq!(back, message);
                // A new connection's first exchange pays the TCP handshake's
                // round trip too; later ones one round trip each.
                let expected = if round == 0 { 4 * delay } else { 2 * delay };
                assert!(took >= expected, "round {round}: {took:?}");
                assert!(
                    took < expected + Duration::from_millis(60),
                    "round {round}: {took:?}"
                );
            }
            assert_eq!(relay.connections(), connection);
        }
    }
}
