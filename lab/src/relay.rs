//! A TCP relay that delays every segment, each way: the tens of
//! milliseconds between a droplet and DigitalOcean's API, which the lab's
//! simulator next door would otherwise hide. This kernel has no netem
//! qdisc, so the delay is added here, in user space, per read: what the
//! relay reads from one side it writes to the other `delay` later, in
//! order. A TCP or TLS handshake then costs its real number of round trips.

use std::{
    io::{Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
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
        thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let _ = client.set_nonblocking(false);
                        thread::spawn(move || {
                            if let Ok(server) = TcpStream::connect(upstream) {
                                relay_both_ways(client, server, delay);
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
        Ok(Self { listen, stop })
    }
}

impl Drop for DelayRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn relay_both_ways(client: TcpStream, server: TcpStream, delay: Duration) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let up = thread::spawn(move || pump(client, server2, delay));
    pump(server, client2, delay);
    let _ = up.join();
}

/// Copies `from` to `to`, each chunk `delay` after it was read.
fn pump(mut from: TcpStream, mut to: TcpStream, delay: Duration) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    let writer = thread::spawn(move || {
        for (read_at, chunk) in rx {
            let due = read_at + delay;
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
        let mut stream = TcpStream::connect(relay.listen).unwrap();
        stream.set_nodelay(true).unwrap();
        for round in 0..3u8 {
            let started = Instant::now();
            let message = [round; 100];
            stream.write_all(&message).unwrap();
            let mut back = [0u8; 100];
            stream.read_exact(&mut back).unwrap();
            let took = started.elapsed();
            assert_eq!(back, message);
            assert!(took >= 2 * delay, "round trip {took:?}");
            assert!(
                took < 2 * delay + Duration::from_millis(200),
                "round trip {took:?}"
            );
        }
    }
}
