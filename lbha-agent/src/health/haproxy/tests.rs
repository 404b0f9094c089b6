use std::sync::{
    Arc, Mutex,
    atomic::{AtomicUsize, Ordering},
};

use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::UnixListener,
};

use super::*;

const HEADER: &str = "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight,act,bck\n";

/// A `show stat` CSV: frontend `fe` with `fe_status`, backend `be` with
/// servers of `servers` statuses and the BACKEND row's status.
fn csv(fe_status: &str, servers: &[&str], be_status: &str) -> String {
    let mut out = String::from(HEADER);
    out += &format!("fe,FRONTEND,,,0,0,100,0,0,0,0,0,0,,,,,{fe_status},,,\n");
    for (i, status) in servers.iter().enumerate() {
        out += &format!("be,s{i},0,0,0,0,,0,0,0,,0,,0,0,0,0,{status},1,1,0\n");
    }
    out += &format!("be,BACKEND,0,0,0,0,10,0,0,0,0,0,,0,0,0,0,{be_status},1,1,0\n");
    out
}

/// How the fake HAProxy behaves.
#[derive(Clone)]
enum Mode {
    Serve {
        stat: String,
        stopping: bool,
    },
    /// Accepts and reads, never answers (a SIGSTOPped or hung HAProxy).
    Hang,
    /// A reload's soft stop landing between `show info` and `show stat`:
    /// this connection's worker answers `show stat` with `fe` STOP and is
    /// stopping from then on; new connections reach a healthy new worker.
    SoftStopMidQuery,
}

/// A fake HAProxy stats socket in a temp dir: answers `prompt`, `show
/// info` and `show stat` in interactive mode, as HAProxy 2.6 does.
struct Fake {
    _dir: tempfile::TempDir,
    path: PathBuf,
    mode: Arc<Mutex<Mode>>,
    accepts: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
    connections: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Fake {
    fn start(mode: Mode) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.sock");
        let mut fake = Self {
            _dir: dir,
            path,
            mode: Arc::new(Mutex::new(mode)),
            accepts: Arc::new(AtomicUsize::new(0)),
            task: tokio::spawn(async {}),
            connections: Arc::default(),
        };
        fake.listen();
        fake
    }

    fn listen(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let listener = UnixListener::bind(&self.path).unwrap();
        let (mode, accepts) = (self.mode.clone(), self.accepts.clone());
        let connections = self.connections.clone();
        self.task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                accepts.fetch_add(1, Ordering::SeqCst);
                let mode = mode.clone();
                let connection = tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut lines = BufReader::new(read).lines();
                    let mut prompt = false;
                    let mut soft_stopped = false;
                    while let Ok(Some(line)) = lines.next_line().await {
                        let current = mode.lock().unwrap().clone();
                        let (stat, stopping) = match current {
                            Mode::Serve { stat, stopping } => (stat, stopping || soft_stopped),
                            Mode::Hang => continue,
                            Mode::SoftStopMidQuery if line.trim() == "show stat" => {
                                soft_stopped = true;
                                *mode.lock().unwrap() = serve(csv("OPEN", &["UP"], "UP"));
                                (csv("STOP", &["UP"], "UP"), false)
                            }
                            Mode::SoftStopMidQuery => (String::new(), false),
                        };
                        let mut reply = match line.trim() {
                            "prompt" => {
                                prompt = true;
                                String::new()
                            }
                            "show info" => format!(
                                "Name: HAProxy\nPid: {}\nStopping: {}\n",
                                i32::MAX - 1,
                                u8::from(stopping)
                            ),
                            "show stat" => stat.clone(),
                            _ => "Unknown command.\n".into(),
                        };
                        if !prompt {
                            return;
                        }
                        reply += "\n> ";
                        if write.write_all(reply.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
                connections.lock().unwrap().push(connection);
            }
        });
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    /// Stops listening (the socket file stays: connections are refused), as
    /// between an old worker's leaving and a new one's binding.
    fn refuse(&mut self) {
        self.task.abort();
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }

    fn check(&self) -> HaproxyCheck {
        HaproxyCheck {
            socket: HaproxySocket::Stats(self.path.clone()),
            pidfile: None,
            require_frontends: vec!["fe".into()],
            backends: vec![],
            backends_down: BackendsDown::Weight(-50),
            reload_grace: Duration::from_secs(5),
        }
    }
}

fn serve(stat: String) -> Mode {
    Mode::Serve {
        stat,
        stopping: false,
    }
}

const TIMEOUT: Duration = Duration::from_millis(200);

#[tokio::test]
async fn healthy_haproxy_passes_over_one_held_connection() {
    let fake = Fake::start(serve(csv("OPEN", &["UP", "DOWN"], "UP")));
    let mut probe = HaproxyProbe::new(fake.check(), TIMEOUT);
    for _ in 0..5 {
        assert_eq!(
            probe.run().await,
            Outcome::Answered {
                serving: Ok(()),
                backends: Ok(())
            }
        );
    }
    assert_eq!(probe.connects, 1, "the connection is held across runs");
    assert_eq!(fake.accepts.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_hang_is_down_after_the_timeout() {
    let fake = Fake::start(serve(csv("OPEN", &["UP"], "UP")));
    let mut probe = HaproxyProbe::new(fake.check(), TIMEOUT);
    assert!(matches!(probe.run().await, Outcome::Answered { .. }));
    fake.set(Mode::Hang);
    let started = Instant::now();
    let outcome = probe.run().await;
    let took = started.elapsed();
    assert!(
        matches!(&outcome, Outcome::Down(why) if why.contains("no answer")),
        "{outcome:?}"
    );
    assert!(
        took >= TIMEOUT && took < TIMEOUT * 3,
        "down after the timeout, not later: {took:?}"
    );
    // Answering again: up again, on a new connection (the old one may
    // still carry the late answer).
    fake.set(serve(csv("OPEN", &["UP"], "UP")));
    assert!(matches!(
        probe.run().await,
        Outcome::Answered {
            serving: Ok(()),
            ..
        }
    ));
    assert_eq!(probe.connects, 2);
}

#[tokio::test]
async fn a_soft_stop_between_show_info_and_show_stat_asks_the_new_worker() {
    let fake = Fake::start(serve(csv("OPEN", &["UP"], "UP")));
    let mut probe = HaproxyProbe::new(fake.check(), TIMEOUT);
    assert!(matches!(probe.run().await, Outcome::Answered { .. }));
    fake.set(Mode::SoftStopMidQuery);
    assert_eq!(
        probe.run().await,
        Outcome::Answered {
            serving: Ok(()),
            backends: Ok(())
        },
        "the new worker's frontends count, not the stopping one's"
    );
    assert_eq!(probe.connects, 2);
}

#[tokio::test]
async fn a_closed_frontend_is_down() {
    let fake = Fake::start(serve(csv("STOP", &["UP"], "UP")));
    let mut probe = HaproxyProbe::new(fake.check(), TIMEOUT);
    let outcome = probe.run().await;
    assert_eq!(
        outcome,
        Outcome::Answered {
            serving: Err("frontend fe is STOP".into()),
            backends: Ok(())
        }
    );
    let mut missing = fake.check();
    missing.require_frontends = vec!["fe".into(), "https".into()];
    fake.set(serve(csv("OPEN", &["UP"], "UP")));
    let mut probe = HaproxyProbe::new(missing, TIMEOUT);
    assert!(
        matches!(probe.run().await, Outcome::Answered { serving: Err(why), .. } if why == "no frontend https")
    );
}

#[tokio::test]
async fn all_backends_down_is_a_weight_not_a_fault_by_default() {
    let fake = Fake::start(serve(csv("OPEN", &["DOWN", "MAINT"], "DOWN")));
    let check = fake.check();
    let mut probe = HaproxyProbe::new(check.clone(), TIMEOUT);
    let outcome = probe.run().await;
    assert!(
        matches!(
            &outcome,
            Outcome::Answered {
                serving: Ok(()),
                backends: Err(_)
            }
        ),
        "serving, backends down: {outcome:?}"
    );
    assert_eq!(backends_weight(&check), -50, "weighs, does not fault");
    let fault = HaproxyCheck {
        backends_down: BackendsDown::Fault,
        ..check
    };
    assert_eq!(backends_weight(&fault), 0, "configured to fault: weight 0");
}

#[tokio::test]
async fn a_reload_shaped_refusal_is_not_a_failure() {
    // A master with a worker: this test process (its parent a shell
    // standing in for the master is not needed: the family is read from
    // procfs), so use a real pair: `sh` (the master) running `sleep` (a
    // worker).
    let mut master = std::process::Command::new("/bin/sh")
        .args(["-c", "sleep 30 & wait"])
        .spawn()
        .unwrap();
    let master_pid = master.id() as i32;
    let deadline = Instant::now() + Duration::from_secs(5);
    while family_of(master_pid).workers == 0 {
        assert!(
            Instant::now() < deadline,
            "the stand-in worker never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut fake = Fake::start(serve(csv("OPEN", &["UP"], "UP")));
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("haproxy.pid");
    std::fs::write(&pidfile, format!("{master_pid}\n")).unwrap();
    let mut check = fake.check();
    check.pidfile = Some(pidfile);
    check.reload_grace = Duration::from_millis(600);
    let mut probe = HaproxyProbe::new(check.clone(), TIMEOUT);
    assert!(matches!(probe.run().await, Outcome::Answered { .. }));

    // The old worker drains: it says so, and the check asks the new one.
    fake.set(Mode::Serve {
        stat: csv("OPEN", &["UP"], "UP"),
        stopping: true,
    });
    assert!(matches!(probe.run().await, Outcome::Answered { .. }));

    // Between workers: refused (and the held connection closed).
    fake.refuse();
    let outcome = probe.run().await;
    assert!(matches!(outcome, Outcome::Reloading(_)), "{outcome:?}");
    assert!(matches!(probe.run().await, Outcome::Reloading(_)));
    // The new worker listens: answered again, nothing was counted.
    fake.set(serve(csv("OPEN", &["UP"], "UP")));
    fake.listen();
    assert!(matches!(
        probe.run().await,
        Outcome::Answered {
            serving: Ok(()),
            ..
        }
    ));

    // Refusing longer than a reload takes is a failure.
    fake.refuse();
    assert!(matches!(probe.run().await, Outcome::Reloading(_)));
    tokio::time::sleep(Duration::from_millis(700)).await;
    let outcome = probe.run().await;
    assert!(
        matches!(&outcome, Outcome::Down(why) if why.contains("longer than a reload")),
        "{outcome:?}"
    );

    // A held connection that stops answering is a hang, young worker or
    // not; a fresh one unanswered while a worker is seconds old is a new
    // worker not polling yet (its socket bound by the master).
    fake.set(serve(csv("OPEN", &["UP"], "UP")));
    fake.listen();
    // The stand-in worker is a second or two old: within a 5 s grace.
    check.reload_grace = Duration::from_secs(5);
    let mut probe = HaproxyProbe::new(check, TIMEOUT);
    assert!(matches!(probe.run().await, Outcome::Answered { .. }));
    fake.set(Mode::Hang);
    let outcome = probe.run().await;
    assert!(
        matches!(&outcome, Outcome::Down(why) if why.contains("no answer")),
        "{outcome:?}"
    );
    let outcome = probe.run().await;
    assert!(matches!(outcome, Outcome::Reloading(_)), "{outcome:?}");

    // The master dies: down at once, grace or not.
    fake.set(serve(csv("OPEN", &["UP"], "UP")));
    assert!(matches!(probe.run().await, Outcome::Answered { .. }));
    master.kill().unwrap();
    master.wait().unwrap();
    let outcome = probe.run().await;
    assert!(
        matches!(&outcome, Outcome::Down(why) if why.contains("master")),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_refusal_without_a_live_master_is_down() {
    let mut fake = Fake::start(serve(csv("OPEN", &["UP"], "UP")));
    let mut probe = HaproxyProbe::new(fake.check(), TIMEOUT);
    assert!(matches!(probe.run().await, Outcome::Answered { .. }));
    fake.refuse();
    let outcome = probe.run().await;
    assert!(matches!(outcome, Outcome::Down(_)), "{outcome:?}");
}

#[test]
fn parses_haproxy_2_6_output() {
    let info =
        parse_info("Name: HAProxy\nVersion: 2.6.12\nPid: 3271\nUptime_sec: 10\nStopping: 1\n");
    assert_eq!(
        info,
        Info {
            pid: Some(3271),
            stopping: true
        }
    );
    let stat = parse_stat(&csv("OPEN", &["UP", "UP 1/3", "DOWN", "no check"], "UP")).unwrap();
    assert_eq!(stat.frontends["fe"], "OPEN");
    assert_eq!(
        stat.backends["be"],
        Backend {
            up: true,
            servers: 4,
            servers_up: 3
        }
    );
    assert_eq!(parse_stat("garbage"), Err(StatError::NoHeader));
    assert_eq!(
        parse_stat("# pxname,svname\nfe,FRONTEND\n"),
        Err(StatError::NoColumn("status"))
    );
    assert_eq!(reply_end(b"a\nb\n\n> "), Some(5));
    assert_eq!(reply_end(b"master> "), Some(0));
    assert_eq!(reply_end(b"a,b> "), None);
}

#[test]
fn named_and_all_backends() {
    let mut stat = parse_stat(&csv("OPEN", &["DOWN"], "DOWN")).unwrap();
    stat.backends.insert(
        "app".into(),
        Backend {
            up: true,
            servers: 1,
            servers_up: 1,
        },
    );
    // A backend without servers (stats, a redirect) never counts.
    stat.backends.insert("stats".into(), Backend::default());
    let mut check = HaproxyCheck {
        socket: HaproxySocket::Stats("/x".into()),
        pidfile: None,
        require_frontends: vec![],
        backends: vec![],
        backends_down: BackendsDown::Weight(-50),
        reload_grace: Duration::from_secs(5),
    };
    assert_eq!(
        backends_verdict(&check, &stat),
        Ok(()),
        "one backend has a server"
    );
    check.backends = vec!["be".into()];
    assert!(
        backends_verdict(&check, &stat).is_err(),
        "the named one has none"
    );
    check.backends = vec!["app".into()];
    assert_eq!(backends_verdict(&check, &stat), Ok(()));
    stat.backends.get_mut("app").unwrap().up = false;
    check.backends = vec![];
    assert!(backends_verdict(&check, &stat).is_err(), "all down");
}

#[test]
fn import_suggests_the_haproxy_check_for_pidof_and_killall() {
    let check = |script: &str| config::Check {
        name: "chk".into(),
        script: script.into(),
        probe: None,
        interval: Duration::from_secs(1),
        timeout: Duration::from_secs(1),
        weight: 0,
        weight_reverse: false,
        rise: 1,
        fall: 1,
        init_fail: false,
    };
    assert!(
        import_suggestion(&check("pidof haproxy")).is_some_and(|s| s.contains("haproxy = { }"))
    );
    assert!(import_suggestion(&check("/usr/bin/killall -0 haproxy")).is_some());
    assert!(import_suggestion(&check("pidof nginx")).is_none());
    assert!(import_suggestion(&check("/etc/keepalived/chk.sh")).is_none());
}

/// No socket configured, `config = FILE`: the check finds the socket in
/// the file's `global` section, and finds it again when the connection
/// fails after the configuration moved it (a reload).
#[tokio::test]
async fn a_discovered_socket_is_found_again_when_it_moves() {
    let first = Fake::start(serve(csv("OPEN", &["UP"], "UP")));
    let second = Fake::start(serve(csv("OPEN", &["UP"], "UP")));
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("haproxy.cfg");
    let write = |sock: &Path| {
        std::fs::write(
            &cfg,
            format!(
                "global\n    stats socket ipv4@127.0.0.1:9999\n    stats socket {} mode 600 level admin\n",
                sock.display()
            ),
        )
        .unwrap();
    };
    write(&first.path);
    let mut check = first.check();
    check.socket = HaproxySocket::Discover {
        config: Some(cfg.clone()),
    };
    let mut probe = HaproxyProbe::new(check, TIMEOUT);
    assert!(matches!(
        probe.run().await,
        Outcome::Answered {
            serving: Ok(()),
            ..
        }
    ));
    assert_eq!(first.accepts.load(Ordering::SeqCst), 1);
    write(&second.path);
    let mut first = first;
    first.refuse();
    // The held connection fails once (a reload, no master known: down);
    // the next run finds the new socket.
    let _ = probe.run().await;
    let mut answered = false;
    for _ in 0..3 {
        if matches!(
            probe.run().await,
            Outcome::Answered {
                serving: Ok(()),
                ..
            }
        ) {
            answered = true;
            break;
        }
    }
    assert!(answered, "the moved socket was not found again");
    assert_eq!(second.accepts.load(Ordering::SeqCst), 1);

    // Nothing to find: a clear error, down.
    std::fs::write(&cfg, "global\n    log stdout local0\n").unwrap();
    let mut check = first.check();
    check.socket = HaproxySocket::Discover { config: Some(cfg) };
    let outcome = HaproxyProbe::new(check, TIMEOUT).run().await;
    assert!(
        matches!(&outcome, Outcome::Down(why) if why.contains("no unix `stats socket`")),
        "{outcome:?}"
    );
}
