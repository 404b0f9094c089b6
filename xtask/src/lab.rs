//! `cargo xtask lab`: the failover lab of the README, on one machine.
//!
//! Builds the topology of `lbha-lab` (client, cloud router with the
//! DigitalOcean simulator, two load balancers running HAProxy + lbha, three
//! web servers), fetches `http://FLOATING_IP/` from the client in a loop, and
//! breaks things: LB1's HAProxy is killed and restarted, then LB1 crashes
//! entirely and comes back. It prints a timeline (who is Master, when the
//! assign happened, how long the client saw errors) and cleans everything
//! up on exit, Ctrl-C included. With `--dual-stack` a reserved IPv6 moves
//! beside the floating IP, a second client fetches it, and the timeline
//! shows both moving; `--vrrp-ipv6` runs VRRP itself over IPv6, and the
//! timeline shows the virtual IPv6 moving too. With `--handover` nothing
//! breaks: a planned handover (`lbha-agent handover`) moves the IP lb1 ->
//! lb2 and back, each step of it on the timeline, and the client's failures
//! are counted apart: those in flight at the instant the route moved, and
//! the others (an outage). With `--keepalived-conf` lbha reads the
//! keepalived stack's keepalived.conf instead of its native TOML (the
//! floating IP, heartbeat and status socket as flags).

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, Result, bail};
use lbha_lab::{
    ApiPath, Binaries, FLOATING_IP, Lab, LabOptions, RESERVED_IPV6, Stack, VIP6, droplet_id,
    wait_for,
};

#[derive(clap::Args)]
pub struct LabArgs {
    /// Seconds to watch after each step.
    #[arg(long, default_value = "5")]
    phase_secs: u64,
    /// VRRP advertisement interval in milliseconds (VRRPv3).
    #[arg(long, default_value = "100")]
    advert_ms: u64,
    /// How long the simulated API takes to complete an assign, in milliseconds.
    #[arg(long, default_value = "300")]
    action_delay_ms: u64,
    /// Client request interval in milliseconds.
    #[arg(long, default_value = "50")]
    request_ms: u64,
    /// Put the API over HTTPS behind a relay delaying every segment this
    /// many milliseconds each way (e.g. 15), as DigitalOcean's is; default:
    /// plain HTTP next door.
    #[arg(long, value_name = "MS")]
    api_delay_ms: Option<u64>,
    /// IPv6 on the client and public side, and a DigitalOcean reserved
    /// IPv6 moved beside the floating IP (VRRP stays IPv4 unless
    /// --vrrp-ipv6).
    #[arg(long)]
    dual_stack: bool,
    /// With --dual-stack: VRRP over IPv6 (VRRPv3 unicast between
    /// fd00:230:1::11 and ::12 on the private network, virtual address
    /// fd00:230:1::100 on the Master), the floating IP and the reserved
    /// IPv6 following that instance.
    #[arg(long, requires = "dual_stack")]
    vrrp_ipv6: bool,
    /// Instead of breaking things: a planned handover lb1 -> lb2
    /// (`lbha-agent handover`), the hand-back lb2 -> lb1, then
    /// `lbha-agent handover --release` on lb2 (heartbeat on).
    #[arg(long, conflicts_with = "dual_stack")]
    handover: bool,
    /// Run lbha on the keepalived.conf of the keepalived stack
    /// (`--keepalived-conf`, with `--floating-ip` and the `--heartbeat-*`
    /// flags, as a migrated operator runs it) instead of its native TOML.
    #[arg(long, conflicts_with = "vrrp_ipv6")]
    keepalived_conf: bool,
}

/// One thing the lab does to the load balancers; returns lines for the
/// timeline.
type Step = dyn Fn(&mut Lab) -> Result<Vec<(Duration, String)>>;

/// `lbha-agent handover ARGS` on load balancer `i`, its output for the
/// timeline; an error when it fails.
fn handover_step(lab: &Lab, i: usize, args: &[&str]) -> Result<Vec<(Duration, String)>> {
    let name = ["lb1", "lb2"][i];
    if !lab.wait_peer_droplet(i, Duration::from_secs(10)) {
        bail!("{name}'s heartbeat never learned the peer's droplet id");
    }
    let run = lab.handover(i, args)?;
    let lines: Vec<(Duration, String)> = run
        .lines
        .into_iter()
        .map(|(at, line)| (at, format!("{name}$ {}", line.trim())))
        .collect();
    for (_, line) in &lines {
        println!("lab:   {line}");
    }
    if !run.ok {
        bail!("lbha-agent handover on {name} failed");
    }
    Ok(lines)
}

fn ms(d: Duration) -> String {
    format!("{:>8.3}s", d.as_secs_f64())
}

fn lb_of(droplet: u64) -> &'static str {
    if droplet == droplet_id(0) {
        "lb1"
    } else {
        "lb2"
    }
}

pub fn run_lab(args: &LabArgs, agent: &Path, dosim: &Path) -> Result<()> {
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
    let opts = LabOptions {
        advert_interval: Duration::from_millis(args.advert_ms),
        action_delay: Duration::from_millis(args.action_delay_ms),
        api: args
            .api_delay_ms
            .map_or(ApiPath::Local, |ms| ApiPath::Remote {
                delay: Duration::from_millis(ms),
            }),
        dual_stack: args.dual_stack,
        vrrp_ipv6: args.vrrp_ipv6,
        heartbeat: args.handover,
        stack: if args.keepalived_conf {
            Stack::LbhaKeepalivedConf
        } else {
            Stack::Lbha
        },
        ..LabOptions::default()
    };
    let bins = Binaries {
        agent: agent.to_owned(),
        dosim: dosim.to_owned(),
    };
    println!("lab: building the topology (lbha: {})", opts.stack.name());
    let mut lab = Lab::start("lab", bins, opts)?;
    let mut client = lab.start_client(Duration::from_millis(args.request_ms));
    let mut client6 = args
        .dual_stack
        .then(|| lab.start_client_v6(Duration::from_millis(args.request_ms)));
    let phase = Duration::from_secs(args.phase_secs);
    let mut markers: Vec<(Duration, String)> = Vec::new();
    let pause = |d: Duration| -> bool {
        let until = std::time::Instant::now() + d;
        while std::time::Instant::now() < until {
            if stop.load(Ordering::SeqCst) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    };

    let result = (|| -> Result<()> {
        if !wait_for(Duration::from_secs(20), || {
            lab.holder() == Some(droplet_id(0))
        }) {
            bail!(
                "the floating IP never reached lb1.\nlb1 log:\n{}\nsimulator log:\n{}",
                lab.lb_log(0),
                lab.sim_log()
            );
        }
        markers.push((
            lab.since_start(),
            format!("lab up: floating IP {FLOATING_IP} on lb1"),
        ));
        if args.handover {
            // As on DigitalOcean, metadata shows an assign seconds late: the
            // new Master must ask the API rather than assign again.
            lab.sim_faults(r#"{"metadata_lag_ms": 3000}"#)?;
        }
        println!(
            "lab: up; client fetching http://{FLOATING_IP}/ every {} ms",
            args.request_ms
        );
        if !pause(phase) {
            return Ok(());
        }

        let failures: [(&str, &Step); 4] = [
            ("kill HAProxy on lb1 (SIGKILL)", &|lab: &mut Lab| {
                let n = lab.kill_haproxy(0);
                if n == 0 {
                    bail!("no HAProxy process found on lb1");
                }
                Ok(Vec::new())
            }),
            ("restart HAProxy on lb1", &|lab: &mut Lab| {
                lab.start_haproxy(0).map(|()| Vec::new())
            }),
            ("crash lb1 (every process SIGKILLed)", &|lab: &mut Lab| {
                lab.crash_lb(0);
                Ok(Vec::new())
            }),
            ("restore lb1 (HAProxy + lbha start)", &|lab: &mut Lab| {
                lab.start_lb(0).map(|()| Vec::new())
            }),
        ];
        let handovers: [(&str, &Step); 3] = [
            ("lbha-agent handover on lb1 (to lb2)", &|lab: &mut Lab| {
                handover_step(lab, 0, &[])
            }),
            (
                "lbha-agent handover on lb2 (back to lb1)",
                &|lab: &mut Lab| handover_step(lab, 1, &[]),
            ),
            ("lbha-agent handover --release on lb2", &|lab: &mut Lab| {
                handover_step(lab, 1, &["--release"])
            }),
        ];
        let steps = if args.handover {
            &handovers[..]
        } else {
            &failures[..]
        };
        for (what, step) in steps {
            markers.push((lab.since_start(), format!(">>> {what}")));
            println!("lab: {what}");
            markers.extend(step(&mut lab)?);
            if !pause(phase) {
                return Ok(());
            }
        }
        Ok(())
    })();
    client.stop();
    if let Some(client6) = &mut client6 {
        client6.stop();
    }

    // The timeline.
    let up_at = markers
        .iter()
        .find(|(_, what)| what.starts_with("lab up"))
        .map_or(Duration::ZERO, |(at, _)| *at);
    let mut events = markers;
    for (i, name) in ["lb1", "lb2"].iter().enumerate() {
        for t in lab.transitions(i) {
            events.push((
                t.at,
                format!("{name}: {} -> {} ({})", t.from, t.to, t.reason),
            ));
        }
    }
    let assigns = lab.assigns();
    for (droplet, requested, completed) in &assigns {
        events.push((
            *requested,
            format!("API: assign {FLOATING_IP} to {} requested", lb_of(*droplet)),
        ));
        if let Some(done) = completed {
            events.push((
                *done,
                format!("API: assign to {} completed, route moved", lb_of(*droplet)),
            ));
        }
    }
    if args.dual_stack {
        for (droplet, requested, completed) in lab.assigns_v6() {
            events.push((
                requested,
                format!(
                    "API: assign {RESERVED_IPV6} to {} requested",
                    lb_of(droplet)
                ),
            ));
            if let Some(done) = completed {
                events.push((
                    done,
                    format!(
                        "API: assign of the IPv6 to {} completed, route moved",
                        lb_of(droplet)
                    ),
                ));
            }
        }
    }
    if args.vrrp_ipv6 {
        for (i, name) in ["lb1", "lb2"].iter().enumerate() {
            for (at, added) in lab.vip6_changes(i) {
                let what = if added { "added to" } else { "removed from" };
                events.push((at, format!("{name}: virtual IPv6 {VIP6} {what} priv0")));
            }
        }
    }
    let outages = client.outages();
    for (from, to, failed) in &outages {
        let until = to.map_or("the end".to_owned(), |t| format!("{:.3}s", t.as_secs_f64()));
        events.push((
            *from,
            format!("client: requests failing until {until} ({failed} failed)"),
        ));
    }
    for (from, to, failed) in client6
        .as_ref()
        .map(lbha_lab::Client::outages)
        .unwrap_or_default()
    {
        let until = to.map_or("the end".to_owned(), |t| format!("{:.3}s", t.as_secs_f64()));
        events.push((
            from,
            format!("client (IPv6): requests failing until {until} ({failed} failed)"),
        ));
    }
    events.sort_by_key(|(at, _)| *at);
    println!("\ntimeline (seconds since the lab started):");
    for (at, what) in &events {
        println!("{}  {what}", ms(*at));
    }
    let requests = client.requests();
    let ok = requests.iter().filter(|r| r.result.is_ok()).count();
    println!(
        "\nclient: {} requests, {} answered, {} failed; assigns: {}",
        requests.len(),
        ok,
        requests.len() - ok,
        assigns.len()
    );
    if args.handover {
        let moves: Vec<Duration> = assigns.iter().filter_map(|(_, _, done)| *done).collect();
        // From the steady state on: start-up failures are no handover's.
        let since_up: Vec<_> = requests.iter().filter(|r| r.at >= up_at).cloned().collect();
        let (in_flight, other) = lbha_lab::split_failures(&since_up, &moves);
        println!(
            "client failures since the lab was up: {} in flight at the instant the route moved, {} other (an outage)",
            in_flight.len(),
            other.len()
        );
        for r in in_flight.iter().chain(&other) {
            println!(
                "  {} .. {}: {}",
                ms(r.at),
                ms(r.ended),
                r.result.as_ref().err().map_or("", String::as_str)
            );
        }
    }
    if let Some(client6) = &client6 {
        let requests = client6.requests();
        let ok = requests.iter().filter(|r| r.result.is_ok()).count();
        println!(
            "client (IPv6, http://[{RESERVED_IPV6}]/): {} requests, {} answered, {} failed; assigns: {}",
            requests.len(),
            ok,
            requests.len() - ok,
            lab.assigns_v6().len()
        );
    }
    // What an operator sees: `lbha-agent status` on each load balancer.
    for i in 0..2 {
        println!("\n$ lbha-agent status   # on lb{}", i + 1);
        let out = std::process::Command::new(agent)
            .arg("status")
            .arg("--socket")
            .arg(lab.status_socket(i))
            .output();
        match out {
            Ok(out) => print!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => println!("(could not run lbha-agent status: {e})"),
        }
    }
    println!("lab: cleaning up");
    drop(client);
    drop(lab);
    result
}
