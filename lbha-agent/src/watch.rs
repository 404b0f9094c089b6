//! `lbha-agent watch`: receive VRRP adverts on an interface through the same
//! receive path the daemon uses, and print them as JSON lines (a diagnostic
//! tool; it never leaves anything attached behind it).

use std::{net::IpAddr, time::Duration};

use anyhow::Context;
use lbha_agent::{
    bpf::Counters,
    config::ReceivePathChoice,
    recv::{AdvertReceiver, Opened, SteadyAdverts},
};
use lbha_common::{
    AdvertEvent, VridConfig,
    event::{
        Family, MAX_ALLOWED_SOURCES, ReceivePath, TooManySources, VridKey, change, silence_timer,
    },
    vrrp::{AUTH_NONE, AUTH_PASS, encode::auth_data},
};
use serde::Serialize;

use crate::print_json;

/// `--receive-path` on the command line ([`ReceivePathChoice`]'s names).
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum PathArg {
    Auto,
    Xdp,
    XdpNoTimer,
    Raw,
}

impl From<PathArg> for ReceivePathChoice {
    fn from(arg: PathArg) -> Self {
        match arg {
            PathArg::Auto => ReceivePathChoice::Auto,
            PathArg::Xdp => ReceivePathChoice::Xdp,
            PathArg::XdpNoTimer => ReceivePathChoice::XdpNoTimer,
            PathArg::Raw => ReceivePathChoice::Raw,
        }
    }
}

#[derive(clap::Args)]
pub struct WatchArgs {
    /// Interface to receive adverts on.
    #[arg(long, short)]
    interface: String,
    /// VRID to accept: `VRID`, `VRID:v2`, `VRID:v3` or `VRID:v2:pass=SECRET`,
    /// plus `:ipv6` for the VRID over IPv6 (a router of its own), plus
    /// `:from=IP` (repeatable, up to 8) to accept adverts only from those
    /// sources, as the daemon does with unicast peers (repeatable).
    /// Version defaults to 3.
    #[arg(long = "vrid", required = true, value_parser = parse_vrid_spec)]
    vrids: Vec<(VridKey, VridConfig)>,
    /// Receive path: XDP with raw-socket fallback, XDP only, or raw socket only.
    #[arg(long, value_enum, default_value = "auto")]
    receive_path: PathArg,
    /// Also print adverts the kernel queued without waking us, checking every
    /// this many milliseconds (0: only print adverts that changed something).
    #[arg(long, default_value = "1000")]
    drain_ms: u64,
    /// Exit after this many adverts.
    #[arg(long)]
    count: Option<u64>,
    /// Exit with an error if `--count` adverts have not arrived after this many seconds.
    #[arg(long)]
    timeout: Option<u64>,
}

/// Parses `51`, `51:v2`, `51:v3`, `51:v2:pass=secret`, `51:ipv6`, each
/// optionally with `:from=10.0.0.1:from=10.0.0.2` (`:from=fe80::1` with
/// `:ipv6`).
fn parse_vrid_spec(spec: &str) -> Result<(VridKey, VridConfig), String> {
    let (vrid, rest) = spec.split_once(':').unwrap_or((spec, ""));
    let vrid: u8 = vrid
        .parse()
        .map_err(|_| format!("VRID must be 1-255 in {spec:?}"))?;
    if vrid == 0 {
        return Err(format!("VRID must be 1-255 in {spec:?}"));
    }
    let mut version = 3;
    let mut auth = (AUTH_NONE, [0u8; 8]);
    let mut sources: Vec<IpAddr> = Vec::new();
    let mut family = Family::Ipv4;
    let parts = if rest.is_empty() {
        Vec::new()
    } else {
        split_options(rest)
    };
    for part in &parts {
        match part.as_str() {
            "v2" => version = 2,
            "v3" => version = 3,
            "ipv6" => family = Family::Ipv6,
            _ => {
                if let Some(pass) = part.strip_prefix("pass=").filter(|p| !p.is_empty()) {
                    auth = (AUTH_PASS, auth_data(pass.as_bytes()));
                } else if let Some(ip) = part.strip_prefix("from=") {
                    let ip: IpAddr = ip
                        .parse()
                        .map_err(|_| format!("{ip:?} is not an IP address in {spec:?}"))?;
                    sources.push(ip);
                } else {
                    return Err(format!("unknown VRID option {part:?} in {spec:?}"));
                }
            }
        }
    }
    if version == 3 && auth.0 != AUTH_NONE {
        return Err(format!("VRRPv3 has no authentication ({spec:?})"));
    }
    if family == Family::Ipv6 && version != 3 {
        return Err(format!("VRRP over IPv6 is version 3 only ({spec:?})"));
    }
    if let Some(other) = sources
        .iter()
        .find(|ip| ip.is_ipv6() != (family == Family::Ipv6))
    {
        return Err(format!(
            "from={other} is not an {} address in {spec:?}",
            family.name()
        ));
    }
    VridConfig::new(version, auth.0, auth.1)
        .with_allowed_ips(&sources)
        .map(|config| (VridKey { family, vrid }, config))
        .map_err(|TooManySources(n)| {
            format!("{n} sources in {spec:?}: at most {MAX_ALLOWED_SOURCES} can be checked")
        })
}

/// The `:`-separated options of a VRID spec, a `from=` option keeping
/// the colons of its IPv6 address: a piece that starts no option (an IPv6
/// group never is `v2`, `v3`, `ipv6` or holds `=`) belongs to the `from=`
/// before it.
fn split_options(rest: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for piece in rest.split(':') {
        let starts_option = matches!(piece, "v2" | "v3" | "ipv6") || piece.contains('=');
        match out.last_mut() {
            Some(last) if !starts_option && last.starts_with("from=") => {
                last.push(':');
                last.push_str(piece);
            }
            _ => out.push(piece.to_owned()),
        }
    }
    out
}

#[derive(Serialize)]
struct AdvertJson {
    timestamp_ns: u64,
    family: &'static str,
    src: String,
    dst: String,
    first_vip: String,
    ifindex: u32,
    vrid: u8,
    priority: u8,
    version: u8,
    interval_cs: u16,
    count_addr: u8,
    changes: Vec<&'static str>,
    receive_path: &'static str,
}

impl From<&AdvertEvent> for AdvertJson {
    fn from(e: &AdvertEvent) -> Self {
        const NAMES: [(u8, &str); 6] = [
            (change::NEW_SOURCE, "new_source"),
            (change::PRIORITY, "priority"),
            (change::RESIGN, "resign"),
            (change::INTERVAL, "interval"),
            (change::AFTER_SILENCE, "after_silence"),
            (change::VERSION, "version"),
        ];
        Self {
            timestamp_ns: e.timestamp_ns,
            family: e.family().map_or("unknown", Family::name),
            src: e.src_ip().to_string(),
            dst: e.dst_ip().to_string(),
            first_vip: e.first_vip_ip().to_string(),
            ifindex: e.ifindex,
            vrid: e.vrid,
            priority: e.priority,
            version: e.version,
            interval_cs: e.interval_cs,
            count_addr: e.count_addr,
            changes: NAMES
                .iter()
                .filter(|(bit, _)| e.flags & bit != 0)
                .map(|(_, name)| *name)
                .chain((e.flags & change::TIMER != 0).then_some(
                    if e.silence_timer == silence_timer::ARMED {
                        "silence_timer_armed"
                    } else {
                        "silence_timer_refused"
                    },
                ))
                .collect(),
            receive_path: match ReceivePath::from_u8(e.receive_path) {
                Some(ReceivePath::Xdp) => "xdp",
                Some(ReceivePath::RawSocket) => "raw-socket",
                None => "unknown",
            },
        }
    }
}

/// The kernel's "no advert for `down_timer_adverts` intervals" cue to the
/// agent: not an advert, so `watch` does not print it.
fn is_silence_report(event: &AdvertEvent) -> bool {
    event.flags & change::SILENCE != 0
}

#[derive(Serialize)]
struct Summary<'a> {
    receive_path: &'a str,
    adverts: u64,
    counters: std::collections::BTreeMap<&'static str, u64>,
}

pub async fn run(args: WatchArgs) -> anyhow::Result<()> {
    // A diagnostic tool: never leaves anything attached behind it.
    // With --drain-ms, the kernel also queues the steady adverts it would
    // otherwise only keep in its map, so every advert can be printed.
    let steady = if args.drain_ms > 0 {
        SteadyAdverts::Queued
    } else {
        SteadyAdverts::MapOnly
    };
    let Opened {
        mut receiver,
        choice,
    } = AdvertReceiver::open_probed(
        &args.interface,
        &args.vrids,
        args.receive_path.into(),
        None,
        steady,
    )
    .with_context(|| format!("opening the VRRP receive path on {}", args.interface))?;
    let path = receiver.path_name();
    tracing::info!(interface = %args.interface, receive_path = path, program = choice.program.name(), reason = %choice.reason, "watching VRRP adverts");
    eprintln!("receive path: {path}");
    eprintln!("program: {} ({})", choice.program.name(), choice.reason);

    let deadline = args
        .timeout
        .map(|secs| tokio::time::Instant::now() + Duration::from_secs(secs));
    let mut drain = (args.drain_ms > 0).then(|| {
        let mut tick = tokio::time::interval(Duration::from_millis(args.drain_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick
    });
    let mut seen = 0u64;
    let done = |seen| args.count.is_some_and(|n| seen >= n);
    let result = loop {
        if done(seen) {
            break Ok(());
        }
        let event = tokio::select! {
            event = receiver.next() => Some(event?),
            _ = async { drain.as_mut().expect("checked").tick().await }, if drain.is_some() => None,
            () = async { tokio::time::sleep_until(deadline.expect("checked")).await }, if deadline.is_some() => {
                break Err(anyhow::anyhow!("timed out after {seen} adverts"));
            }
            _ = tokio::signal::ctrl_c() => break Ok(()),
        };
        for event in event
            .into_iter()
            .chain(std::iter::from_fn(|| receiver.try_next()))
            .filter(|event| !is_silence_report(event))
        {
            print_json(&AdvertJson::from(&event))?;
            seen += 1;
            if done(seen) {
                break;
            }
        }
    };
    // Adverts the kernel queued silently since the last drain are still
    // reported, so the summary and the printed events agree.
    while !done(seen)
        && let Some(event) = receiver.try_next()
    {
        if is_silence_report(&event) {
            continue;
        }
        print_json(&AdvertJson::from(&event))?;
        seen += 1;
    }
    let counters: Counters = receiver.counters()?;
    print_json(&Summary {
        receive_path: path,
        adverts: seen,
        counters: counters.iter().collect(),
    })?;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vrid_specs_may_name_the_sources_to_accept() {
        use lbha_common::event::wire_v4;
        let (key, config) =
            parse_vrid_spec("51:v2:pass=secret:from=10.0.0.1:from=10.0.0.2").unwrap();
        assert_eq!(
            (key, config.version, config.auth_type),
            (VridKey::v4(51), 2, AUTH_PASS)
        );
        assert!(config.allows_source(&wire_v4([10, 0, 0, 1])));
        assert!(config.allows_source(&wire_v4([10, 0, 0, 2])));
        assert!(!config.allows_source(&wire_v4([10, 0, 0, 3])));

        let (_, any) = parse_vrid_spec("52").unwrap();
        assert!(
            any.allows_source(&wire_v4([192, 0, 2, 1])),
            "no from=: any source"
        );

        // IPv6: its own key, sources with colons of their own.
        let (key, v6) = parse_vrid_spec("51:ipv6:from=fe80::1:from=fe80::2").unwrap();
        assert_eq!(key, VridKey::v6(51));
        let fe80 = |last: u8| {
            let mut a = [0u8; 16];
            a[..2].copy_from_slice(&[0xfe, 0x80]);
            a[15] = last;
            a
        };
        assert!(v6.allows_source(&fe80(1)) && v6.allows_source(&fe80(2)));
        assert!(!v6.allows_source(&fe80(3)));
        let error = parse_vrid_spec("51:ipv6:from=10.0.0.1").unwrap_err();
        assert!(error.contains("not an IPv6 address"), "{error}");
        let error = parse_vrid_spec("51:v2:ipv6").unwrap_err();
        assert!(error.contains("version 3 only"), "{error}");

        let nine: String = (1..=9).fold(String::new(), |mut all, i| {
            all.push_str(&format!(":from=10.0.0.{i}"));
            all
        });
        let error = parse_vrid_spec(&format!("53{nine}")).unwrap_err();
        assert!(error.contains("at most 8"), "{error}");
        let error = parse_vrid_spec("53:from=10.0.0").unwrap_err();
        assert!(error.contains("not an IP address"), "{error}");
    }
}
