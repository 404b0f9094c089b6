//! `cargo xtask lab`: lbha next to a real keepalived, on one machine.
//!
//! Two network namespaces joined by a veth pair: `ka` runs keepalived as the
//! seed deployment configures it (VRRPv2, PASS auth, unicast peers), `lb` runs
//! lbha's receive path (XDP, or the raw-socket fallback). The lab prints a
//! timeline of the adverts lbha sees while it stops keepalived (priority-0
//! resignation), leaves the link silent, and starts it again. Everything is
//! removed on exit, Ctrl-C included.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::run;

#[derive(clap::Args)]
pub struct LabArgs {
    /// How long each phase (keepalived up, stopped, up again) lasts, in seconds.
    #[arg(long, default_value = "8")]
    phase_secs: u64,
    /// Receive path for lbha: auto (XDP, raw-socket fallback), xdp or raw.
    #[arg(long, default_value = "auto")]
    receive_path: String,
}

const KA_ADDR: &str = "10.210.0.1";
const LB_ADDR: &str = "10.210.0.2";
const VRID: u8 = 51;
const PASSWORD: &str = "lbhalab1";

/// A network namespace, deleted (with everything in it) on drop.
struct Netns(String);

impl Netns {
    fn create(role: &str) -> Result<Self> {
        let name = format!("lbha-lab-{role}-{}", std::process::id());
        run(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = Netns(name);
        ns.exec(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.0]).arg(program);
        cmd
    }

    fn exec(&self, argv: &[&str]) -> Result<()> {
        run(self.command(argv[0]).args(&argv[1..]))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// A child process killed on drop.
struct Daemon(Child);

impl Daemon {
    fn terminate(&mut self) {
        // SIGTERM, as systemd would: keepalived resigns with priority 0.
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn keepalived_conf() -> String {
    format!(
        r#"global_defs {{
    vrrp_version 2
}}
vrrp_instance VI_1 {{
    interface veth-ka
    state MASTER
    virtual_router_id {VRID}
    priority 150
    advert_int 1
    unicast_src_ip {KA_ADDR}
    unicast_peer {{
        {LB_ADDR}
    }}
    authentication {{
        auth_type PASS
        auth_pass {PASSWORD}
    }}
    virtual_ipaddress {{
        10.210.0.100/24
    }}
}}
"#
    )
}

fn start_keepalived(ns: &Netns, dir: &Path) -> Result<Daemon> {
    let log = std::fs::File::create(dir.join("keepalived.log"))?;
    let child = ns
        .command("keepalived")
        .args(["--dont-fork", "--log-console", "--log-detail", "--vrrp"])
        .arg("--use-file")
        .arg(dir.join("keepalived.conf"))
        .arg("--pid")
        .arg(dir.join("keepalived.pid"))
        .arg("--vrrp_pid")
        .arg(dir.join("vrrp.pid"))
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting keepalived")?;
    Ok(Daemon(child))
}

/// One line of the timeline, from a JSON line of `lbha-agent watch`.
fn describe(line: &str, start: Instant) -> Option<String> {
    let json: serde_json::Value = serde_json::from_str(line).ok()?;
    if let Some(counters) = json.get("counters") {
        return Some(format!(
            "lbha saw {} adverts via {}; counters: {counters}",
            json["adverts"], json["receive_path"]
        ));
    }
    let changes: Vec<&str> = json["changes"]
        .as_array()?
        .iter()
        .filter_map(|c| c.as_str())
        .collect();
    Some(format!(
        "{:>7.3}s  advert from {} vrid {} priority {:>3} v{} via {:<10} {}",
        start.elapsed().as_secs_f64(),
        json["src"].as_str()?,
        json["vrid"],
        json["priority"],
        json["version"],
        json["receive_path"].as_str()?,
        if changes.is_empty() {
            "(steady: queued without waking lbha)".to_owned()
        } else {
            format!("woke lbha: {}", changes.join(", "))
        },
    ))
}

pub fn run_lab(args: &LabArgs, agent: &Path) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the lab creates network namespaces and attaches XDP: run it as root");
    }
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst))
            .context("installing the Ctrl-C handler")?;
    }
    let dir: PathBuf = std::env::temp_dir().join(format!("lbha-lab-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("keepalived.conf"), keepalived_conf())?;
    let result = lab(args, agent, &dir, &stop);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn lab(args: &LabArgs, agent: &Path, dir: &Path, stop: &AtomicBool) -> Result<()> {
    let ka = Netns::create("ka")?;
    let lb = Netns::create("lb")?;
    run(Command::new("ip").args([
        "link", "add", "veth-ka", "netns", &ka.0, "type", "veth", "peer", "name", "veth-lb",
        "netns", &lb.0,
    ]))?;
    ka.exec(&[
        "ip",
        "addr",
        "add",
        &format!("{KA_ADDR}/24"),
        "dev",
        "veth-ka",
    ])?;
    lb.exec(&[
        "ip",
        "addr",
        "add",
        &format!("{LB_ADDR}/24"),
        "dev",
        "veth-lb",
    ])?;
    ka.exec(&["ip", "link", "set", "veth-ka", "up"])?;
    lb.exec(&["ip", "link", "set", "veth-lb", "up"])?;
    println!(
        "lab: namespaces {} (keepalived {KA_ADDR}) and {} (lbha {LB_ADDR})",
        ka.0, lb.0
    );

    let mut watch = lb
        .command(agent)
        .args(["watch", "--interface", "veth-lb", "--drain-ms", "1000"])
        .arg(format!("--vrid={VRID}:v2:pass={PASSWORD}"))
        .arg(format!("--receive-path={}", args.receive_path))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .context("starting lbha-agent watch")?;
    let stdout = watch.stdout.take().context("no stdout")?;
    let mut watch = Daemon(watch);
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });

    let start = Instant::now();
    let phase = Duration::from_secs(args.phase_secs);
    let show_until = |until: Instant| -> bool {
        while Instant::now() < until {
            if stop.load(Ordering::SeqCst) {
                return false;
            }
            if let Ok(line) = lines.recv_timeout(Duration::from_millis(50))
                && let Some(text) = describe(&line, start)
            {
                println!("{text}");
            }
        }
        true
    };

    // keepalived starts in BACKUP even with `state MASTER` and takes over
    // after Master_Down_Interval (about 3.6 s at advert_int 1).
    println!(
        "{:>7.3}s  keepalived starts (MASTER after ~3.6 s)",
        start.elapsed().as_secs_f64()
    );
    let mut keepalived = start_keepalived(&ka, dir)?;
    if show_until(Instant::now() + phase) {
        println!(
            "{:>7.3}s  keepalived stopped (SIGTERM): expect a priority-0 advert",
            start.elapsed().as_secs_f64()
        );
        keepalived.terminate();
        if show_until(Instant::now() + phase) {
            println!(
                "{:>7.3}s  keepalived starts again",
                start.elapsed().as_secs_f64()
            );
            keepalived = start_keepalived(&ka, dir)?;
            show_until(Instant::now() + phase);
        }
    }
    drop(keepalived);
    // SIGINT makes the watcher print its counters and exit.
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(watch.0.id() as i32, libc::SIGINT) };
    let _ = watch.0.wait();
    while let Ok(line) = lines.recv_timeout(Duration::from_millis(500)) {
        if let Some(text) = describe(&line, start) {
            println!("{text}");
        }
    }
    println!("lab: cleaning up");
    Ok(())
}
