//! The `haproxy` check against a real HAProxy through its master CLI
//! (`haproxy -W -S SOCKET`), the path the unit tests' fake stats socket
//! does not cover: commands prefixed `@1` reach the current worker and
//! replies end with the master's prompt. HAProxy runs unprivileged on unix
//! sockets in a temp dir (no network), in the foreground, and is killed
//! when the test ends, passed or not.

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use lbha_agent::{
    config::{BackendsDown, HaproxyCheck, HaproxySocket},
    health::haproxy::{HaproxyProbe, Outcome},
};

/// HAProxy in master-worker mode with a master CLI; killed on drop.
struct Haproxy {
    child: Child,
    master: PathBuf,
    pidfile: PathBuf,
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Its worker dies with the master (master-worker mode), but not
        // at once: wait so that no process outlives the test.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && self.worker_alive() {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Haproxy {
    fn start(dir: &Path) -> Option<Self> {
        let binary = ["/usr/sbin/haproxy", "/usr/local/sbin/haproxy"]
            .into_iter()
            .find(|p| Path::new(p).exists())?;
        let config = dir.join("haproxy.cfg");
        std::fs::write(
            &config,
            format!(
                "defaults\n    mode http\n    timeout connect 1s\n    timeout client 5s\n    timeout server 5s\n\
                 frontend fe\n    bind unix@{dir}/fe.sock\n    default_backend be\n\
                 backend be\n    server s1 unix@{dir}/nowhere.sock\n",
                dir = dir.display()
            ),
        )
        .unwrap();
        let master = dir.join("master.sock");
        let pidfile = dir.join("haproxy.pid");
        let child = Command::new(binary)
            .arg("-W")
            .arg("-S")
            .arg(&master)
            .arg("-f")
            .arg(&config)
            .arg("-p")
            .arg(&pidfile)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting haproxy");
        let haproxy = Self {
            child,
            master,
            pidfile,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(haproxy.master.exists() && haproxy.worker_alive()) {
            assert!(Instant::now() < deadline, "haproxy did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(haproxy)
    }

    /// Whether a worker (a child of the master) runs.
    fn worker_alive(&self) -> bool {
        let children = format!("/proc/{pid}/task/{pid}/children", pid = self.child.id());
        std::fs::read_to_string(children).is_ok_and(|c| !c.trim().is_empty())
    }

    /// One command on the master CLI, its reply.
    fn cli(&self, command: &str) -> String {
        let mut stream = UnixStream::connect(&self.master).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        writeln!(stream, "{command}").unwrap();
        // The master keeps the connection open after an `@N` command
        // until the client is done.
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let mut reply = String::new();
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            reply.push_str(&line);
            reply.push('\n');
        }
        reply
    }
}

fn check(haproxy: &Haproxy) -> HaproxyCheck {
    HaproxyCheck {
        socket: HaproxySocket::Master(haproxy.master.clone()),
        pidfile: Some(haproxy.pidfile.clone()),
        require_frontends: vec!["fe".into()],
        backends: Vec::new(),
        backends_down: BackendsDown::Weight(-50),
        reload_grace: Duration::from_secs(5),
    }
}

/// Runs the probe until `done` accepts an outcome (or 5 s pass); returns
/// every outcome seen.
async fn run_until(probe: &mut HaproxyProbe, done: impl Fn(&Outcome) -> bool) -> Vec<Outcome> {
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let outcome = probe.run().await;
        let stop = done(&outcome);
        seen.push(outcome);
        if stop {
            break;
        }
        probe.wait(Duration::from_millis(50)).await;
    }
    seen
}

fn serving(outcome: &Outcome) -> bool {
    matches!(
        outcome,
        Outcome::Answered {
            serving: Ok(()),
            ..
        }
    )
}

#[tokio::test]
async fn the_check_reads_a_real_haproxy_through_its_master_cli() {
    let dir = tempfile::tempdir().unwrap();
    let Some(haproxy) = Haproxy::start(dir.path()) else {
        eprintln!(
            "skipped: no haproxy binary (/usr/sbin/haproxy); `cargo xtask setup` installs it"
        );
        return;
    };
    let mut probe = HaproxyProbe::new(check(&haproxy), HaproxyCheck::DEFAULT_TIMEOUT);

    // Serving: `@1 show info` and `@1 show stat` answered through the
    // master, frontend `fe` OPEN.
    let seen = run_until(&mut probe, serving).await;
    assert!(seen.last().is_some_and(serving), "{seen:?}");

    // A disabled frontend is HAProxy not serving.
    let reply = haproxy.cli("@1 disable frontend fe");
    let seen = run_until(
        &mut probe,
        |o| matches!(o, Outcome::Answered { serving: Err(why), .. } if why.contains("fe")),
    )
    .await;
    assert!(
        matches!(
            seen.last(),
            Some(Outcome::Answered {
                serving: Err(_),
                ..
            })
        ),
        "after `disable frontend fe` ({reply:?}): {seen:?}"
    );
    haproxy.cli("@1 enable frontend fe");
    let seen = run_until(&mut probe, serving).await;
    assert!(seen.last().is_some_and(serving), "re-enabled: {seen:?}");

    // A reload (SIGUSR2 to the master): never down, serving again after.
    let master = i32::try_from(haproxy.child.id()).unwrap();
    // SAFETY: a signal to the HAProxy master this test started.
    assert_eq!(unsafe { libc::kill(master, libc::SIGUSR2) }, 0);
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        seen.push(probe.run().await);
        probe.wait(Duration::from_millis(20)).await;
    }
    seen.extend(run_until(&mut probe, serving).await);
    assert!(
        !seen.iter().any(|o| matches!(o, Outcome::Down(_))),
        "a reload is never down: {seen:?}"
    );
    assert!(
        seen.last().is_some_and(serving),
        "after the reload: {seen:?}"
    );

    // The master killed: down at once (its pidfd), not after a timeout.
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(master, libc::SIGKILL) }, 0);
    let started = Instant::now();
    let seen = run_until(&mut probe, |o| matches!(o, Outcome::Down(_))).await;
    assert!(
        matches!(seen.last(), Some(Outcome::Down(_))),
        "a killed master is down: {seen:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "down within 2 s, took {:?}: {seen:?}",
        started.elapsed()
    );
}
