//! Fuzzes lbha's native TOML configuration: the parser and its writer.
//!
//! Two modes, by the first input byte:
//!
//! * anything but NUL: the input is a configuration file (invalid UTF-8
//!   replaced, as for a text file) given to `parse_toml`. Invariants: parsing never panics;
//!   an error result holds at least one diagnostic; every diagnostic (error
//!   or warning) names the given path and a line between 1 and the input's
//!   last line (or none); a configuration that loads survives `to_toml` →
//!   `parse_toml` unchanged, and `to_toml` is then a fixed point.
//! * NUL: the rest is a list of edits applied to a configuration that uses
//!   every key (strings of any content, addresses, durations, numbers,
//!   probes, added and removed tables). Text written by hand rarely reaches a
//!   valid configuration with odd values; this mode does. Invariant: an
//!   edited configuration that passes the checks `parse_toml` applies
//!   (`config::validate`, plus the few made while reading: `[floating_ip]`
//!   `instance` names an instance, its durations are not zero, an `http`
//!   probe is an http(s) URL) is written by `to_toml` as TOML that
//!   `parse_toml` reads back as the same configuration.
//!
//! Edited values stay within what the parser itself can produce (durations
//! are whole nanoseconds rounded from seconds in an `f64`, at most 366 days;
//! `droplet_id` is 1..=i64::MAX; socket addresses carry no IPv6 flow label).

#![no_main]

use std::{
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6},
    path::Path,
    time::Duration,
};

use lbha_config::{
    self as config, Config, InitialState, Lines, PathFamily, Probe, ReceivePathChoice, Syntax,
    TokenSource,
};
use lbha_fuzz::{TOML_PATH, check_result, check_toml_round_trip};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let [0, edits @ ..] = data {
        edited(edits);
    } else {
        let text = String::from_utf8_lossy(data);
        let path = Path::new(TOML_PATH);
        if let Some(loaded) = check_result(config::parse_toml(&text, path), &text, path) {
            check_toml_round_trip(&loaded, "TOML");
        }
    }
});

/// A configuration with every key set, the starting point of the edits.
const BASE: &str = r#"
[global]
vrrp_version = 3
script_security = true
script_user = "keepalived_script"
script_group = "nogroup"
metrics_listen = "127.0.0.1:9464"
status_socket = "/run/lbha/lbha.sock"

[[check]]
name = "chk_haproxy"
script = "pidof haproxy"
interval = 2
timeout = 0.5
weight = -20
weight_reverse = true
rise = 3
fall = 2

[[check]]
name = "chk_tcp"
tcp = "127.0.0.1:80"

[[instance]]
name = "VI_1"
interface = "eth1"
vrid = 33
priority = 200
version = 2
advert_interval = 1
state = "master"
preempt = true
preempt_delay = 30.5
unicast_src = "10.132.7.12"
unicast_peers = ["10.132.7.13", "10.132.7.14"]
check_unicast_src = true
down_timer_adverts = 4
auth_pass = "password"
virtual_addresses = ["203.0.113.10/24", "203.0.113.11"]
track = ["chk_haproxy", "chk_tcp"]
receive_path = "xdp"

[instance.notify]
master = "/etc/keepalived/master.sh"
backup = "/etc/keepalived/backup.sh"
fault = "/etc/keepalived/fault.sh"
any = "/etc/keepalived/notify.sh"

[[instance]]
name = "VI_2"
interface = "eth2"
vrid = 34
advert_interval = 0.25

[floating_ip]
ip = "203.0.113.50"
instance = "VI_1"
token_file = "/etc/lbha/do-token"
api_url = "https://api.digitalocean.com"
metadata_url = "http://169.254.169.254"
api_path = "reserved_ips"
droplet_id = 123456
recheck_interval = 10
operation_deadline = 30
request_timeout = 10
metadata_timeout = 2
"#;

/// Reads edit operands from the input; zeros once it is used up.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0; N];
        let n = N.min(self.0.len());
        out[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        out
    }

    fn u8(&mut self) -> u8 {
        self.array::<1>()[0]
    }

    /// One input byte as a yes/no choice.
    fn coin(&mut self) -> bool {
        self.u8() & 1 == 0
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.array())
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }

    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }

    fn index(&mut self, len: usize) -> Option<usize> {
        let pick = usize::from(self.u8());
        (len > 0).then(|| pick % len)
    }

    /// A length byte, then that many bytes (invalid UTF-8 replaced).
    fn string(&mut self) -> String {
        let len = usize::from(self.u8()).min(self.0.len());
        let (bytes, rest) = self.0.split_at(len);
        self.0 = rest;
        String::from_utf8_lossy(bytes).into_owned()
    }

    /// A duration as `parse_toml` makes one: whole microseconds (the
    /// precision the configuration keeps), at most 366 days.
    fn duration(&mut self) -> Duration {
        const MAX_MICROS: u64 = 366 * 24 * 3600 * 1_000_000;
        let micros = match self.u8() % 4 {
            // Whole centiseconds (what VRRPv3 advert intervals must be).
            0 => u64::from(self.u16()) * 10_000,
            // Whole seconds.
            1 => u64::from(self.u32() % (366 * 24 * 3600)) * 1_000_000,
            2 => self.u64() % (MAX_MICROS + 1),
            _ => u64::from(self.u32()),
        };
        Duration::from_micros(micros)
    }

    fn ipv4(&mut self) -> Ipv4Addr {
        Ipv4Addr::from(self.array::<4>())
    }

    fn socket_addr(&mut self) -> SocketAddr {
        if self.coin() {
            SocketAddr::from((self.ipv4(), self.u16()))
        } else {
            let ip = Ipv6Addr::from(self.array::<16>());
            let (port, scope) = (self.u16(), self.u32());
            SocketAddr::V6(SocketAddrV6::new(ip, port, 0, scope))
        }
    }
}

/// Applies the edits in `input` to [`BASE`] and checks the round trip.
fn edited(input: &[u8]) {
    let path = Path::new(TOML_PATH);
    let mut loaded = match config::parse_toml(BASE, path) {
        Ok(loaded) => loaded,
        Err(errors) => panic!("the base configuration does not load:\n{errors}"),
    };
    let mut b = Bytes(input);
    let mut edits = 0;
    while !b.is_empty() && edits < 64 {
        edit(&mut loaded.config, &mut b);
        edits += 1;
    }
    let c = &loaded.config;
    let findings = config::validate(c, &Lines::default(), path, Syntax::Toml);
    let valid = findings.errors.is_empty()
        && c.floating_ip.as_ref().is_none_or(|f| {
            f.settings.validate().is_ok()
                && f.instance
                    .as_ref()
                    .is_none_or(|name| c.instances.iter().any(|i| &i.name == name))
        })
        && c.checks.iter().all(|check| match &check.probe {
            Some(Probe::Http(url)) => url.starts_with("http://") || url.starts_with("https://"),
            _ => true,
        });
    if valid {
        check_toml_round_trip(&loaded, "edits to the base configuration");
    }
}

fn edit(c: &mut Config, b: &mut Bytes) {
    let check = b.index(c.checks.len());
    let instance = b.index(c.instances.len());
    match b.u8() % 40 {
        // Global.
        0 => c.global.script_user = Some(b.string()),
        1 => c.global.script_group = Some(b.string()),
        2 => c.global.status_socket = b.string().into(),
        3 => c.global.vrrp_version = b.u8(),
        4 => c.global.script_security = b.coin(),
        5 => {
            c.global.metrics_listen = match b.u8() % 2 {
                0 => None,
                _ => Some(b.socket_addr()),
            }
        }
        // Checks.
        6..=18 => {
            let Some(i) = check else { return };
            let check = &mut c.checks[i];
            match b.u8() % 13 {
                0 => check.name = b.string(),
                1 => {
                    check.script = b.string();
                    check.probe = None;
                }
                2 => {
                    check.script.clear();
                    check.probe = Some(match b.u8() % 4 {
                        0 => Probe::Process(b.string()),
                        1 => Probe::Pidfile(b.string().into()),
                        2 => Probe::Tcp(b.socket_addr()),
                        _ => Probe::Http(format!("http://{}", b.string())),
                    });
                }
                3 => check.interval = b.duration(),
                4 => check.timeout = b.duration(),
                5 => check.weight = b.u32() as i32,
                6 => check.weight = i32::from(b.u8() as i8),
                7 => check.weight_reverse = !check.weight_reverse,
                8 => check.rise = b.u32(),
                9 => check.fall = b.u32(),
                10 => check.rise = u32::from(b.u8()),
                11 => check.fall = u32::from(b.u8()),
                _ => check.interval = check.timeout,
            }
        }
        // Instances.
        19..=34 => {
            let Some(i) = instance else { return };
            let names: Vec<String> = c.checks.iter().map(|check| check.name.clone()).collect();
            let inst = &mut c.instances[i];
            match b.u8() % 22 {
                0 => inst.name = b.string(),
                1 => inst.interface = b.string(),
                2 => inst.vrid = b.u8(),
                3 => inst.priority = b.u8(),
                4 => inst.version = b.u8() % 4,
                5 => inst.advert_interval = b.duration(),
                6 => inst.preempt_delay = b.duration(),
                7 => {
                    inst.initial_state = match b.u8() % 2 {
                        0 => InitialState::Backup,
                        _ => InitialState::Master,
                    }
                }
                8 => inst.preempt = !inst.preempt,
                9 => inst.unicast_src = (b.coin()).then(|| b.ipv4().into()),
                10 => inst.unicast_peers.push(b.ipv4().into()),
                11 => inst.unicast_peers.clear(),
                12 => {
                    let mut vip = config::VirtualAddress::new(b.ipv4(), b.u8() % 33);
                    vip.excluded = b.coin();
                    vip.dev = (b.coin()).then(|| b.string());
                    inst.virtual_addresses.push(vip);
                }
                13 => inst.virtual_addresses.clear(),
                14 => inst.auth_pass = (b.coin()).then(|| b.string()),
                15 => {
                    let name = match b.index(names.len()) {
                        Some(n) if b.coin() => names[n].clone(),
                        _ => b.string(),
                    };
                    inst.track.push(name);
                }
                16 => inst.track.clear(),
                17 => {
                    let script = (b.coin()).then(|| b.string());
                    let n = &mut inst.notify;
                    *[&mut n.master, &mut n.backup, &mut n.fault, &mut n.any]
                        [usize::from(b.u8() % 4)] = script;
                }
                18 => {
                    inst.receive_path = match b.u8() % 4 {
                        0 => ReceivePathChoice::Auto,
                        1 => ReceivePathChoice::Xdp,
                        2 => ReceivePathChoice::XdpNoTimer,
                        _ => ReceivePathChoice::Raw,
                    }
                }
                19 => inst.check_unicast_src = !inst.check_unicast_src,
                20 => inst.down_timer_adverts = b.u8(),
                _ => inst.version = c.global.vrrp_version,
            }
        }
        // Floating IP.
        35 | 36 => {
            let Some(f) = &mut c.floating_ip else { return };
            let s = &mut f.settings;
            match b.u8() % 13 {
                // None too: a reserved IPv6 alone (or, without one, nothing to move).
                0 => s.ip = (b.u8() % 4 != 0).then(|| b.ipv4()),
                1 => f.instance = None,
                2 => f.instance = Some(b.string()),
                3 => {
                    f.instance = instance.map(|i| c.instances[i].name.clone());
                }
                4 => s.token = TokenSource::File(b.string().into()),
                5 => s.token = TokenSource::Env(b.string()),
                6 => s.api_url = b.string(),
                7 => s.metadata_url = b.string(),
                8 => {
                    s.path_family = match b.u8() % 2 {
                        0 => PathFamily::FloatingIps,
                        _ => PathFamily::ReservedIps,
                    }
                }
                9 => s.droplet_id = (b.coin()).then(|| b.u64() % (i64::MAX as u64) + 1),
                10 => s.recheck_interval = b.duration(),
                11 => s.operation_deadline = b.duration(),
                _ => match b.u8() % 2 {
                    0 => s.request_timeout = b.duration(),
                    _ => s.metadata_timeout = b.duration(),
                },
            }
        }
        // Whole tables.
        37 => match (b.u8() % 4, check, instance) {
            (0, Some(i), _) => {
                let copy = c.checks[i].clone();
                c.checks.push(copy);
            }
            (1, Some(i), _) => {
                c.checks.remove(i);
            }
            (2, _, Some(i)) => {
                let copy = c.instances[i].clone();
                c.instances.push(copy);
            }
            (3, _, Some(i)) => {
                c.instances.remove(i);
            }
            _ => {}
        },
        38 => c.floating_ip = None,
        _ => {
            // A fresh instance with only the required keys set.
            if let Some(i) = instance {
                let mut fresh = c.instances[i].clone();
                fresh.name = b.string();
                fresh.vrid = b.u8();
                fresh.track.clear();
                fresh.unicast_peers.clear();
                fresh.virtual_addresses.clear();
                fresh.auth_pass = None;
                c.instances.push(fresh);
            }
        }
    }
}
