//! keepalived's `virtual_routes` and `virtual_rules` lines (2.2.7's
//! `alloc_route` in `vrrp_iproute.c`, `alloc_rule` in `vrrp_iprule.c`):
//! the common subset, read exactly as keepalived reads it, and written
//! back in the same syntax (the native TOML keeps these lines as strings,
//! so `import-keepalived` is lossless).
//!
//! Options lbha does not implement are [`RouteError::Unsupported`] (naming
//! the option); lines keepalived itself drops (a bad address, no
//! destination, no action) are [`RouteError::Dropped`].

use std::{fmt, net::IpAddr};

/// keepalived's protocol number for what it adds (`RTPROT_KEEPALIVED`).
pub const RTPROT_KEEPALIVED: u8 = 18;
/// The main routing table (`RT_TABLE_MAIN`), keepalived's default.
pub const TABLE_MAIN: u32 = 254;
/// keepalived numbers rules without a preference from here downwards
/// (`RULE_START_PRIORITY`), per family, across the whole file.
pub const RULE_START_PRIORITY: u32 = 16384;

/// Why a line is not a route or rule lbha adds.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// keepalived reports it and drops the line.
    #[error("{0}")]
    Dropped(String),
    /// keepalived knows the option; lbha does not implement it.
    #[error("`{0}` is not supported: not implemented")]
    Unsupported(String),
}

/// A route's type (`rtm_type`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RouteKind {
    #[default]
    Unicast,
    Blackhole,
    Unreachable,
    Prohibit,
}

impl RouteKind {
    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "unicast" => Self::Unicast,
            "blackhole" => Self::Blackhole,
            "unreachable" => Self::Unreachable,
            "prohibit" => Self::Prohibit,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Self::Unicast => "unicast",
            Self::Blackhole => "blackhole",
            Self::Unreachable => "unreachable",
            Self::Prohibit => "prohibit",
        }
    }
}

/// A prefix: `address/len`, or keepalived's `default` (`any`, `all`),
/// which is the family's `/0`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prefix {
    pub address: IpAddr,
    pub len: u8,
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.len)
    }
}

/// One `virtual_routes` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VirtualRoute {
    pub kind: RouteKind,
    pub dst: Prefix,
    /// `src`: the preferred source address (`RTA_PREFSRC`).
    pub src: Option<IpAddr>,
    /// `via` (`gw`); two or more with `or`: a multipath route, one next
    /// hop each, on `dev`.
    pub via: Vec<IpAddr>,
    /// `dev` (`oif`).
    pub dev: Option<String>,
    /// `scope` as the kernel's number; keepalived's default is universe (0).
    pub scope: Option<u8>,
    /// `table`, [`TABLE_MAIN`] by default.
    pub table: u32,
    /// `metric` (`priority`, `preference`).
    pub metric: Option<u32>,
    /// `protocol`; keepalived adds with [`RTPROT_KEEPALIVED`] otherwise.
    pub protocol: Option<u8>,
    pub onlink: bool,
    /// keepalived's `no_track`.
    pub no_track: bool,
}

impl VirtualRoute {
    /// The protocol the route is added with (keepalived's rule).
    pub fn effective_protocol(&self) -> u8 {
        self.protocol.unwrap_or(RTPROT_KEEPALIVED)
    }
}

impl fmt::Display for VirtualRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.dst.address.is_ipv6() {
            f.write_str("inet6 ")?;
        }
        if let Some(src) = self.src {
            write!(f, "src {src} ")?;
        }
        if self.kind != RouteKind::Unicast {
            write!(f, "{} ", self.kind.name())?;
        }
        write!(f, "{}", self.dst)?;
        if let Some((first, rest)) = self.via.split_first() {
            write!(f, " via {first}")?;
            for other in rest {
                write!(f, " or {other}")?;
            }
        }
        if let Some(dev) = &self.dev {
            write!(f, " dev {dev}")?;
        }
        if let Some(scope) = self.scope {
            write!(f, " scope {}", crate::scope_name(scope))?;
        }
        if self.table != TABLE_MAIN {
            write!(f, " table {}", self.table)?;
        }
        if let Some(metric) = self.metric {
            write!(f, " metric {metric}")?;
        }
        if let Some(protocol) = self.protocol {
            write!(f, " protocol {protocol}")?;
        }
        if self.onlink {
            f.write_str(" onlink")?;
        }
        if self.no_track {
            f.write_str(" no_track")?;
        }
        Ok(())
    }
}

/// A rule's action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleAction {
    /// `table N` (`lookup N`).
    Table(u32),
    Blackhole,
    Unreachable,
    Prohibit,
}

/// One `virtual_rules` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VirtualRule {
    /// IPv6 (`inet6`, or the family of its addresses).
    pub ipv6: bool,
    pub from: Option<Prefix>,
    pub to: Option<Prefix>,
    pub action: RuleAction,
    /// `preference` (`priority`, `order`); keepalived numbers a rule
    /// without one (with a warning), so it is always set once read.
    pub priority: u32,
    /// `fwmark MARK[/MASK]`.
    pub fwmark: Option<(u32, Option<u32>)>,
    /// `iif` (`dev`).
    pub iif: Option<String>,
    pub oif: Option<String>,
    /// `not`.
    pub invert: bool,
    pub no_track: bool,
}

impl fmt::Display for VirtualRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut words = Vec::new();
        if self.ipv6 {
            words.push("inet6".to_string());
        }
        if self.invert {
            words.push("not".into());
        }
        if let Some(from) = self.from {
            words.push(format!("from {from}"));
        }
        if let Some(to) = self.to {
            words.push(format!("to {to}"));
        }
        if let Some((mark, mask)) = self.fwmark {
            words.push(match mask {
                Some(mask) => format!("fwmark {mark:#x}/{mask:#x}"),
                None => format!("fwmark {mark:#x}"),
            });
        }
        if let Some(iif) = &self.iif {
            words.push(format!("iif {iif}"));
        }
        if let Some(oif) = &self.oif {
            words.push(format!("oif {oif}"));
        }
        words.push(format!("preference {}", self.priority));
        words.push(match self.action {
            RuleAction::Table(t) => format!("table {t}"),
            RuleAction::Blackhole => "blackhole".into(),
            RuleAction::Unreachable => "unreachable".into(),
            RuleAction::Prohibit => "prohibit".into(),
        });
        if self.no_track {
            words.push("no_track".into());
        }
        f.write_str(&words.join(" "))
    }
}

/// The next automatic rule preferences, per family (keepalived's
/// `next_rule_priority_ipv4` / `_ipv6`, shared by every rule of a file,
/// `static_rules` included).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RulePriorities {
    pub v4: u32,
    pub v6: u32,
}

impl Default for RulePriorities {
    fn default() -> Self {
        Self {
            v4: RULE_START_PRIORITY,
            v6: RULE_START_PRIORITY,
        }
    }
}

/// Options keepalived's route parser knows that lbha does not implement.
const UNSUPPORTED_ROUTE: &[&str] = &[
    "as",
    "from",
    "tos",
    "dsfield",
    "encap",
    "expires",
    "mtu",
    "hoplimit",
    "advmss",
    "rtt",
    "rttvar",
    "reordering",
    "window",
    "cwnd",
    "ssthresh",
    "realms",
    "rto_min",
    "initcwnd",
    "initrwnd",
    "features",
    "quickack",
    "congctl",
    "pref",
    "ttl-propagate",
    "fastopen_no_cookie",
    "add",
    "append",
    "nexthop",
    "track_group",
    "vrf",
];

/// Options keepalived's rule parser knows that lbha does not implement.
const UNSUPPORTED_RULE: &[&str] = &[
    "tos",
    "dsfield",
    "realms",
    "suppress_prefixlength",
    "sup_pl",
    "suppress_ifgroup",
    "sup_group",
    "tunnel-id",
    "uidrange",
    "l3mdev",
    "protocol",
    "ipproto",
    "sport",
    "dport",
    "track_group",
    "goto",
    "nop",
    "type",
];

fn dropped(message: String) -> RouteError {
    RouteError::Dropped(message)
}

/// keepalived's `parse_ipaddress` without a prefix: the family from a `:`.
fn address(text: &str) -> Option<IpAddr> {
    text.parse().ok()
}

/// keepalived's `parse_route`: `default`/`any`/`all` (the family's `/0`,
/// settled later), or `address[/len]`. `Ok(None)` is a family-less default.
fn prefix(text: &str) -> Result<Option<Prefix>, ()> {
    if matches!(text, "default" | "any" | "all") {
        return Ok(None);
    }
    let (addr, len) = match text.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (text, None),
    };
    let address: IpAddr = addr.parse().map_err(|_| ())?;
    let max = if address.is_ipv6() { 128 } else { 32 };
    let len = match len {
        // keepalived reports a bad length and keeps the full one.
        Some(l) => l.parse::<u8>().ok().filter(|l| *l <= max).unwrap_or(max),
        None => max,
    };
    Ok(Some(Prefix { address, len }))
}

fn unspecified(ipv6: bool) -> IpAddr {
    if ipv6 {
        IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
    }
}

/// A routing table by number or by the names iproute2 always knows.
fn table(text: &str) -> Option<u32> {
    match text {
        "main" => Some(TABLE_MAIN),
        "local" => Some(255),
        "default" => Some(253),
        _ => parse_u32(text),
    }
}

/// A number as keepalived's `strtoul(.., 0)` reads it (decimal, 0x hex).
fn parse_u32(text: &str) -> Option<u32> {
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None if text.len() > 1 && text.starts_with('0') => u32::from_str_radix(&text[1..], 8).ok(),
        None => text.parse().ok(),
    }
}

/// Protocols by number or by iproute2's names.
fn protocol(text: &str) -> Option<u8> {
    Some(match text {
        "kernel" => 2,
        "boot" => 3,
        "static" => 4,
        "keepalived" => RTPROT_KEEPALIVED,
        _ => return text.parse().ok(),
    })
}

/// The family tracker keepalived keeps while reading a line.
struct FamilyCheck(Option<bool>);

impl FamilyCheck {
    fn set(&mut self, ipv6: bool, what: &str) -> Result<(), RouteError> {
        match self.0 {
            None => {
                self.0 = Some(ipv6);
                Ok(())
            }
            Some(f) if f == ipv6 => Ok(()),
            Some(_) => Err(dropped(format!(
                "cannot mix IPv4 and IPv6 addresses ({what})"
            ))),
        }
    }
}

/// Reads one `virtual_routes` line (its words); warnings are pushed onto
/// `warnings`.
pub fn parse_route(words: &[&str], warnings: &mut Vec<String>) -> Result<VirtualRoute, RouteError> {
    let mut family = FamilyCheck(None);
    let mut kind = RouteKind::Unicast;
    let mut dst: Option<Option<Prefix>> = None;
    let mut src = None;
    let mut via: Vec<IpAddr> = Vec::new();
    let mut dev = None;
    let mut scope = None;
    let mut table_id = TABLE_MAIN;
    let mut metric = None;
    let mut proto = None;
    let mut onlink = false;
    let mut no_track = false;
    let mut i = 0;
    let value = |i: usize, what: &str| {
        words
            .get(i)
            .copied()
            .ok_or_else(|| dropped(format!("`{what}` needs a value")))
    };
    while i < words.len() {
        let word = words[i];
        match word {
            "inet" => family.set(false, "inet")?,
            "inet6" => family.set(true, "inet6")?,
            "src" => {
                i += 1;
                let v = value(i, "src")?;
                let a =
                    address(v).ok_or_else(|| dropped(format!("invalid route src address {v}")))?;
                family.set(a.is_ipv6(), "src")?;
                src = Some(a);
            }
            "via" | "gw" => {
                if word == "gw" {
                    warnings.push(
                        "\"gw\" for routes is deprecated, as keepalived says; read as \"via\""
                            .into(),
                    );
                }
                i += 1;
                let mut v = value(i, word)?;
                if v == "inet" || v == "inet6" {
                    i += 1;
                    v = value(i, word)?;
                }
                let a =
                    address(v).ok_or_else(|| dropped(format!("invalid route via address {v}")))?;
                family.set(a.is_ipv6(), "via")?;
                // A later `via` replaces the first, as in keepalived.
                if via.len() <= 1 {
                    via = vec![a];
                } else {
                    return Err(RouteError::Unsupported("via after or".into()));
                }
            }
            "or" => {
                i += 1;
                let v = value(i, "or")?;
                if via.len() >= 2 {
                    warnings.push(
                        "\"or\" route already specified - ignoring subsequent, as keepalived does"
                            .into(),
                    );
                } else {
                    let a =
                        address(v).ok_or_else(|| dropped(format!("invalid \"or\" address {v}")))?;
                    if via.is_empty() {
                        // keepalived moves a missing `via` into the first
                        // next hop: a next hop without a gateway.
                        return Err(RouteError::Unsupported("or without via".into()));
                    }
                    family.set(a.is_ipv6(), "or")?;
                    via.push(a);
                }
            }
            "table" => {
                i += 1;
                let v = value(i, "table")?;
                table_id = table(v)
                    .ok_or_else(|| dropped(format!("routing table {v} not found for route")))?;
            }
            "protocol" => {
                i += 1;
                let v = value(i, "protocol")?;
                proto = Some(protocol(v).ok_or_else(|| {
                    dropped(format!("protocol {v} not found or invalid for route"))
                })?);
            }
            "scope" => {
                i += 1;
                let v = value(i, "scope")?;
                scope =
                    Some(crate::parse_scope(v).ok_or_else(|| {
                        dropped(format!("scope {v} not found or invalid for route"))
                    })?);
            }
            "metric" | "priority" | "preference" => {
                i += 1;
                let v = value(i, word)?;
                metric =
                    Some(parse_u32(v).ok_or_else(|| {
                        dropped(format!("invalid metric {v} specified for route"))
                    })?);
            }
            "dev" | "oif" => {
                i += 1;
                dev = Some(value(i, word)?.to_string());
            }
            "onlink" => onlink = true,
            "prepend" => {}
            "no_track" => no_track = true,
            w if UNSUPPORTED_ROUTE.contains(&w) => return Err(RouteError::Unsupported(w.into())),
            _ => {
                let mut w = word;
                if w == "to" {
                    i += 1;
                    w = value(i, "to")?;
                }
                if let Some(k) = RouteKind::from_name(w) {
                    kind = k;
                    i += 1;
                    w = value(i, k.name())?;
                } else if matches!(
                    w,
                    "local" | "broadcast" | "anycast" | "multicast" | "throw" | "nat" | "xresolve"
                ) {
                    return Err(RouteError::Unsupported(w.into()));
                }
                let p = prefix(w).map_err(|()| dropped(format!("unknown route keyword {w}")))?;
                if let Some(p) = p {
                    family.set(p.address.is_ipv6(), "destination")?;
                }
                dst = Some(p);
            }
        }
        i += 1;
    }
    let Some(dst) = dst else {
        return Err(dropped("route must have a destination".into()));
    };
    let ipv6 = family.0.unwrap_or(false);
    let dst = dst.unwrap_or(Prefix {
        address: unspecified(ipv6),
        len: 0,
    });
    if !no_track {
        if proto.is_some_and(|p| p != RTPROT_KEEPALIVED) {
            warnings.push(format!("route cannot be tracked if protocol is not {RTPROT_KEEPALIVED} (keepalived); protocol reset, as keepalived resets it"));
            proto = None;
        }
        if dev.is_none() {
            warnings.push(format!(
                "cannot track route {dst} with no interface specified, not tracking (as keepalived)"
            ));
            no_track = true;
        }
    }
    Ok(VirtualRoute {
        kind,
        dst,
        src,
        via,
        dev,
        scope,
        table: table_id,
        metric,
        protocol: proto,
        onlink,
        no_track,
    })
}

/// Reads one `virtual_rules` line; a rule without a preference takes the
/// next of `priorities`, with a warning, as in keepalived.
pub fn parse_rule(
    words: &[&str],
    priorities: &mut RulePriorities,
    warnings: &mut Vec<String>,
) -> Result<VirtualRule, RouteError> {
    let mut family = FamilyCheck(None);
    let mut from = None;
    let mut to = None;
    let mut action: Option<RuleAction> = None;
    let mut priority = None;
    let mut fwmark = None;
    let mut iif = None;
    let mut oif = None;
    let mut invert = false;
    let mut no_track = false;
    let mut i = 0;
    let value = |i: usize, what: &str| {
        words
            .get(i)
            .copied()
            .ok_or_else(|| dropped(format!("`{what}` needs a value")))
    };
    let set_action = |action: &mut Option<RuleAction>, a: RuleAction| {
        if action.is_some() {
            return Err(dropped(
                "cannot specify more than one of table/blackhole/prohibit/unreachable for rule"
                    .into(),
            ));
        }
        *action = Some(a);
        Ok(())
    };
    while i < words.len() {
        let word = words[i];
        match word {
            "inet" => family.set(false, "inet")?,
            "inet6" => family.set(true, "inet6")?,
            "from" | "to" => {
                i += 1;
                let v = value(i, word)?;
                let p =
                    prefix(v).map_err(|()| dropped(format!("invalid rule {word} address {v}")))?;
                if let Some(p) = p {
                    family.set(p.address.is_ipv6(), word)?;
                }
                if word == "from" {
                    from = Some(p);
                } else {
                    to = Some(p);
                }
            }
            "table" | "lookup" => {
                i += 1;
                let v = value(i, word)?;
                let t = table(v)
                    .ok_or_else(|| dropped(format!("routing table {v} not found for rule")))?;
                if t == 0 {
                    return Err(dropped("table 0 is not valid".into()));
                }
                set_action(&mut action, RuleAction::Table(t))?;
            }
            "not" => invert = true,
            "preference" | "order" | "priority" => {
                i += 1;
                let v = value(i, word)?;
                priority =
                    Some(parse_u32(v).ok_or_else(|| {
                        dropped(format!("invalid rule preference {v} specified"))
                    })?);
            }
            "fwmark" => {
                i += 1;
                let v = value(i, word)?;
                let bad = || dropped(format!("invalid rule fwmark {v} specified"));
                fwmark = Some(match v.split_once('/') {
                    Some((m, k)) => (
                        parse_u32(m).ok_or_else(bad)?,
                        Some(parse_u32(k).ok_or_else(bad)?),
                    ),
                    None => (parse_u32(v).ok_or_else(bad)?, None),
                });
            }
            "dev" | "iif" => {
                i += 1;
                iif = Some(value(i, word)?.to_string());
            }
            "oif" => {
                i += 1;
                oif = Some(value(i, word)?.to_string());
            }
            "no_track" => no_track = true,
            "blackhole" => set_action(&mut action, RuleAction::Blackhole)?,
            "unreachable" => set_action(&mut action, RuleAction::Unreachable)?,
            "prohibit" => set_action(&mut action, RuleAction::Prohibit)?,
            w if UNSUPPORTED_RULE.contains(&w) => return Err(RouteError::Unsupported(w.into())),
            w => return Err(dropped(format!("unknown rule option {w}"))),
        }
        i += 1;
    }
    let Some(action) = action else {
        return Err(dropped("no action specified for rule".into()));
    };
    let ipv6 = family.0.unwrap_or(false);
    let settle = |p: Option<Option<Prefix>>| {
        p.map(|p| {
            p.unwrap_or(Prefix {
                address: unspecified(ipv6),
                len: 0,
            })
        })
    };
    let priority = if let Some(p) = priority {
        p
    } else {
        let next = if ipv6 {
            &mut priorities.v6
        } else {
            &mut priorities.v4
        };
        let p = *next;
        *next = next.saturating_sub(1);
        warnings.push(format!(
            "rule has no preference specified - setting to {p}, as keepalived does (this is probably not what you want)"
        ));
        p
    };
    Ok(VirtualRule {
        ipv6,
        from: settle(from),
        to: settle(to),
        action,
        priority,
        fwmark,
        iif,
        oif,
        invert,
        no_track,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(line: &str) -> (Result<VirtualRoute, RouteError>, Vec<String>) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let mut w = Vec::new();
        (parse_route(&words, &mut w), w)
    }

    #[test]
    fn routes_read_as_keepalived_reads_them() {
        let (r, w) = route("src 192.168.100.1 192.168.109.0/24 via 192.168.200.254 dev eth1");
        let r = r.unwrap();
        assert_eq!(r.dst.to_string(), "192.168.109.0/24");
        assert_eq!(r.src, Some("192.168.100.1".parse().unwrap()));
        assert_eq!(r.via, vec!["192.168.200.254".parse::<IpAddr>().unwrap()]);
        assert_eq!(r.dev.as_deref(), Some("eth1"));
        assert!(!r.no_track && w.is_empty());
        assert_eq!((r.table, r.effective_protocol(), r.scope), (254, 18, None));

        // No interface: keepalived cannot track it (a warning).
        let (r, w) = route("192.168.112.0/24 via 192.168.100.254");
        assert!(r.unwrap().no_track && w.len() == 1);
        let (r, _) = route("192.168.113.0/24 via 192.168.100.252 or 192.168.100.253");
        assert_eq!(r.unwrap().via.len(), 2);
        let (r, _) = route("blackhole 192.168.113.1/32");
        let r = r.unwrap();
        assert_eq!((r.kind, r.dst.len), (RouteKind::Blackhole, 32));
        let (r, w) = route("0.0.0.0/0 gw 192.168.0.1 table 100");
        assert_eq!(r.unwrap().table, 100);
        assert!(w.iter().any(|w| w.contains("deprecated")));
        let (r, _) = route("to default via 10.0.0.1 dev eth0 metric 5 scope link onlink no_track");
        let r = r.unwrap();
        assert_eq!(r.dst.to_string(), "0.0.0.0/0");
        assert_eq!(
            (r.metric, r.scope, r.onlink, r.no_track),
            (Some(5), Some(253), true, true)
        );
        let (r, _) = route("inet6 default via 2001:db8::1 dev eth0");
        assert_eq!(r.unwrap().dst.to_string(), "::/0");

        assert_eq!(
            route("192.168.1.0/24 mtu 1400 dev eth0").0,
            Err(RouteError::Unsupported("mtu".into()))
        );
        assert!(matches!(
            route("via 10.0.0.1 dev eth0").0,
            Err(RouteError::Dropped(_))
        ));
        assert!(matches!(
            route("192.168.1./24 dev eth0").0,
            Err(RouteError::Dropped(_))
        ));
        assert!(matches!(
            route("10.0.0.0/8 via 2001:db8::1").0,
            Err(RouteError::Dropped(_))
        ));
        assert!(matches!(
            route("10.0.0.0/8 via").0,
            Err(RouteError::Dropped(_))
        ));
    }

    #[test]
    fn routes_write_back_to_the_same_route() {
        for line in [
            "src 192.168.100.1 192.168.109.0/24 via 192.168.200.254 dev eth1",
            "192.168.113.0/24 via 192.168.100.252 or 192.168.100.253",
            "blackhole 192.168.113.1/32",
            "0.0.0.0/0 via 192.168.0.1 table 100 metric 7 protocol 18 onlink",
            "192.168.111.0/24 dev eth2 scope link no_track",
            "inet6 default via 2001:db8::1 dev eth0",
        ] {
            let (r, _) = route(line);
            let r = r.unwrap();
            let (again, _) = route(&r.to_string());
            assert_eq!(again.unwrap(), r, "{line} -> {r}");
        }
    }

    #[test]
    fn rules_read_as_keepalived_reads_them() {
        let mut p = RulePriorities::default();
        let mut w = Vec::new();
        let rule = |line: &str, p: &mut RulePriorities, w: &mut Vec<String>| {
            parse_rule(&line.split_whitespace().collect::<Vec<_>>(), p, w)
        };
        let r = rule("from 192.168.200.0/24 table 2", &mut p, &mut w).unwrap();
        assert_eq!((r.priority, r.action), (16384, RuleAction::Table(2)));
        assert_eq!(w.len(), 1);
        // A rule keepalived drops takes no number.
        assert!(matches!(
            rule("to 192.168.200./24 table 2", &mut p, &mut w),
            Err(RouteError::Dropped(_))
        ));
        let r = rule("to 10.0.0.0/8 table 3", &mut p, &mut w).unwrap();
        assert_eq!(r.priority, 16383);
        let r = rule("inet6 from all lookup 5", &mut p, &mut w).unwrap();
        assert_eq!(
            (r.priority, r.from.unwrap().to_string()),
            (16384, "::/0".into())
        );
        let r = rule(
            "from 10.1.0.0/16 iif eth0 oif eth1 fwmark 0x10/0xff preference 100 prohibit no_track",
            &mut p,
            &mut w,
        )
        .unwrap();
        assert_eq!(r.fwmark, Some((16, Some(255))));
        assert_eq!(
            (r.priority, r.action, r.no_track),
            (100, RuleAction::Prohibit, true)
        );
        let again = rule(&r.to_string(), &mut p, &mut w).unwrap();
        assert_eq!(again, r);
        assert!(matches!(
            rule("from 10.0.0.0/8", &mut p, &mut w),
            Err(RouteError::Dropped(_))
        ));
        assert_eq!(
            rule("from 10.0.0.0/8 table 1 uidrange 1-2", &mut p, &mut w),
            Err(RouteError::Unsupported("uidrange".into()))
        );
        assert!(matches!(
            rule("table 1 table 2", &mut p, &mut w),
            Err(RouteError::Dropped(_))
        ));
    }
}
