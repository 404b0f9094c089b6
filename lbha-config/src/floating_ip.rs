//! The DigitalOcean side of the configuration: which floating (reserved) IP
//! follows mastership (and which reserved IPv6 beside it, or alone), where
//! the API and the metadata service are, and where the token comes from.
//! Only data and its defaults; the client that acts on it is the agent's
//! `cloud` module.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    str::FromStr,
    time::Duration,
};

use thiserror::Error;

/// DigitalOcean's public API.
pub const DEFAULT_API_URL: &str = "https://api.digitalocean.com";
/// The droplet metadata service (link-local, answers only from the droplet).
pub const DEFAULT_METADATA_URL: &str = "http://169.254.169.254";
/// Link-local round trips are sub-millisecond; 2 s is generous and still
/// keeps a failover from stalling on a missing service.
pub const DEFAULT_METADATA_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a Backup sends one cheap request (the holder `GET`) to keep
/// its connection to the API warm: well inside the minute after which load
/// balancers commonly close an idle connection, and 144 requests an hour,
/// under 3% of the 5,000 a DigitalOcean token may make.
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(25);

/// Where the token is read from. A file is preferred in deployments (mode
/// 0600, outside the config); the environment suits systemd credentials and
/// containers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenSource {
    File(PathBuf),
    Env(String),
}

/// Which name the API is addressed by. DO renamed floating IPs to reserved
/// IPs; both paths work today, and the response object key follows the path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PathFamily {
    #[default]
    FloatingIps,
    ReservedIps,
}

impl PathFamily {
    pub fn as_str(self) -> &'static str {
        match self {
            PathFamily::FloatingIps => "floating_ips",
            PathFamily::ReservedIps => "reserved_ips",
        }
    }
}

impl fmt::Display for PathFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Error)]
#[error("unknown path family {0:?} (expected floating_ips or reserved_ips)")]
pub struct UnknownPathFamily(pub String);

impl FromStr for PathFamily {
    type Err = UnknownPathFamily;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "floating_ips" => Ok(PathFamily::FloatingIps),
            "reserved_ips" => Ok(PathFamily::ReservedIps),
            _ => Err(UnknownPathFamily(s.to_owned())),
        }
    }
}

/// A DigitalOcean reserved IPv6 address (`/v2/reserved_ipv6/{ip}`) moved
/// beside the floating IPv4 (or alone, for an IPv6-only service), with the
/// same token, API and timers: to the droplet whose `instance` is Master
/// (None: the instance the IPv4 follows, so that one failover moves both;
/// without an IPv4, the `[floating_ip]` instance or the first).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReservedIpv6 {
    pub address: Ipv6Addr,
    pub instance: Option<String>,
}

/// Why a `reserved_ipv6` value is not one.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum InvalidReservedIpv6 {
    #[error("`{0}` is an IPv4 address: a floating IPv4 goes in `ip`")]
    Ipv4(String),
    #[error("`{0}` is not an IPv6 address")]
    NotAnAddress(String),
    #[error("`{0}` is not a global unicast address (DigitalOcean reserves public IPv6 only)")]
    NotGlobal(String),
}

impl ReservedIpv6 {
    /// `text` as a reserved IPv6: an IPv6 address that can be public, not
    /// link-local, multicast, loopback, unspecified or IPv4-mapped.
    pub fn parse_address(text: &str) -> Result<Ipv6Addr, InvalidReservedIpv6> {
        let address = match text.trim().parse::<IpAddr>() {
            Ok(IpAddr::V6(address)) => address,
            Ok(IpAddr::V4(_)) => return Err(InvalidReservedIpv6::Ipv4(text.to_owned())),
            Err(_) => return Err(InvalidReservedIpv6::NotAnAddress(text.to_owned())),
        };
        let segments = address.segments();
        let link_local = segments[0] & 0xffc0 == 0xfe80;
        if address.is_unspecified()
            || address.is_loopback()
            || address.is_multicast()
            || link_local
            || address.to_ipv4_mapped().is_some()
        {
            return Err(InvalidReservedIpv6::NotGlobal(text.to_owned()));
        }
        Ok(address)
    }
}

/// Everything the floating IP side needs. The config files map onto this.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FloatingIpConfig {
    /// The floating IPv4; None when only [`Self::reserved_ipv6`] is moved
    /// ([`Self::validate`] requires one of the two).
    pub ip: Option<Ipv4Addr>,
    pub api_url: String,
    pub metadata_url: String,
    pub path_family: PathFamily,
    pub token: TokenSource,
    /// Our droplet id when known in advance; otherwise asked from metadata
    /// (and cached). Setting it lets failover work with metadata down.
    pub droplet_id: Option<u64>,
    /// The peer's droplet id, for `lbha-agent handover` when the peer's
    /// heartbeat carries none (its metadata look-up failed); a handover
    /// refuses when both are known and differ. For a pair: the one peer.
    pub peer_droplet_id: Option<u64>,
    /// How often a Master verifies it still holds the IP.
    pub recheck_interval: Duration,
    /// Bound on one API operation including retries, and on waiting for an
    /// assign action to complete.
    pub operation_deadline: Duration,
    /// Bound on one HTTP exchange with the API.
    pub request_timeout: Duration,
    pub metadata_timeout: Duration,
    /// Extra CA certificates (a PEM bundle) trusted for the API besides the
    /// system's: a private or lab CA, a TLS-inspecting proxy's.
    pub ca_file: Option<PathBuf>,
    /// While Backup, one cheap API request this often keeps a connection
    /// to the API open, so a takeover's assign costs one round trip rather
    /// than a TCP and a TLS handshake more. Zero: off.
    pub keepalive_interval: Duration,
    /// A reserved IPv6 moved beside `ip`, or alone (TOML `reserved_ipv6`,
    /// `reserved_ipv6_instance`).
    pub reserved_ipv6: Option<ReservedIpv6>,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum InvalidFloatingIpConfig {
    #[error("floating IP config: {field} must be greater than zero")]
    ZeroDuration { field: &'static str },
    #[error(
        "floating IP config: nothing to move: give a floating IPv4 (`ip`, --floating-ip), a reserved IPv6 (`reserved_ipv6`, --reserved-ipv6), or both"
    )]
    NoAddress,
}

impl FloatingIpConfig {
    /// A config with the production defaults for everything but the IP and
    /// the token.
    pub fn new(ip: Ipv4Addr, token: TokenSource) -> Self {
        Self::with_addresses(Some(ip), None, token)
    }

    /// A config moving only a reserved IPv6 (an IPv6-only service), with
    /// the production defaults.
    pub fn reserved_ipv6_only(reserved_ipv6: ReservedIpv6, token: TokenSource) -> Self {
        Self::with_addresses(None, Some(reserved_ipv6), token)
    }

    /// A config moving `ip`, `reserved_ipv6` or both, with the production
    /// defaults for the rest.
    pub fn with_addresses(
        ip: Option<Ipv4Addr>,
        reserved_ipv6: Option<ReservedIpv6>,
        token: TokenSource,
    ) -> Self {
        Self {
            ip,
            api_url: DEFAULT_API_URL.to_owned(),
            metadata_url: DEFAULT_METADATA_URL.to_owned(),
            path_family: PathFamily::default(),
            token,
            droplet_id: None,
            peer_droplet_id: None,
            recheck_interval: Duration::from_secs(10),
            operation_deadline: Duration::from_secs(30),
            request_timeout: Duration::from_secs(10),
            metadata_timeout: DEFAULT_METADATA_TIMEOUT,
            ca_file: None,
            keepalive_interval: DEFAULT_KEEPALIVE_INTERVAL,
            reserved_ipv6,
        }
    }

    /// The addresses moved: the floating IPv4 first, then the reserved
    /// IPv6.
    pub fn addresses(&self) -> Vec<IpAddr> {
        self.ip
            .map(IpAddr::V4)
            .into_iter()
            .chain(self.reserved_ipv6.as_ref().map(|v6| IpAddr::V6(v6.address)))
            .collect()
    }

    /// [`Self::addresses`] for logs and messages: "203.0.113.10",
    /// "2604:a880::1" or "203.0.113.10 and 2604:a880::1".
    pub fn describe(&self) -> String {
        let all: Vec<String> = self.addresses().iter().map(IpAddr::to_string).collect();
        all.join(" and ")
    }

    /// Token from a file, the usual deployment.
    pub fn with_token_file(ip: Ipv4Addr, path: impl Into<PathBuf>) -> Self {
        Self::new(ip, TokenSource::File(path.into()))
    }

    /// Zero durations would spin or never succeed; reject them up front
    /// (`keepalive_interval` excepted: zero turns it off). A config must
    /// move something: the IPv4, the IPv6 or both.
    pub fn validate(&self) -> Result<(), InvalidFloatingIpConfig> {
        if self.ip.is_none() && self.reserved_ipv6.is_none() {
            return Err(InvalidFloatingIpConfig::NoAddress);
        }
        for (field, d) in [
            ("recheck_interval", self.recheck_interval),
            ("operation_deadline", self.operation_deadline),
            ("request_timeout", self.request_timeout),
            ("metadata_timeout", self.metadata_timeout),
        ] {
            if d.is_zero() {
                return Err(InvalidFloatingIpConfig::ZeroDuration { field });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_family_round_trips_and_rejects_unknown_names() {
        for family in [PathFamily::FloatingIps, PathFamily::ReservedIps] {
            assert_eq!(family.as_str().parse::<PathFamily>().unwrap(), family);
        }
        assert!("reserved".parse::<PathFamily>().is_err());
    }

    #[test]
    fn reserved_ipv6_must_be_a_global_ipv6_address() {
        assert_eq!(
            ReservedIpv6::parse_address("2604:a880:400:d1::7a2:1"),
            Ok("2604:a880:400:d1::7a2:1".parse().unwrap())
        );
        assert_eq!(
            ReservedIpv6::parse_address("203.0.113.10"),
            Err(InvalidReservedIpv6::Ipv4("203.0.113.10".into()))
        );
        assert!(matches!(
            ReservedIpv6::parse_address("2604:a880::g"),
            Err(InvalidReservedIpv6::NotAnAddress(_))
        ));
        for not_global in ["fe80::1", "ff02::12", "::1", "::", "::ffff:203.0.113.10"] {
            assert!(
                matches!(
                    ReservedIpv6::parse_address(not_global),
                    Err(InvalidReservedIpv6::NotGlobal(_))
                ),
                "{not_global}"
            );
        }
    }

    #[test]
    fn zero_durations_are_rejected_by_name() {
        let mut config =
            FloatingIpConfig::new(Ipv4Addr::new(203, 0, 113, 10), TokenSource::Env("T".into()));
        assert_eq!(config.validate(), Ok(()));
        config.operation_deadline = Duration::ZERO;
        assert_eq!(
            config.validate(),
            Err(InvalidFloatingIpConfig::ZeroDuration {
                field: "operation_deadline"
            })
        );
    }

    #[test]
    fn a_reserved_ipv6_alone_is_enough_but_nothing_at_all_is_not() {
        let token = TokenSource::Env("T".into());
        let v6 = ReservedIpv6 {
            address: "2604:a880:400:d1::7a2:1".parse().unwrap(),
            instance: None,
        };
        let alone = FloatingIpConfig::reserved_ipv6_only(v6.clone(), token.clone());
        assert_eq!(alone.validate(), Ok(()));
        assert_eq!(alone.ip, None);
        assert_eq!(alone.describe(), "2604:a880:400:d1::7a2:1");
        let mut both = FloatingIpConfig::new(Ipv4Addr::new(203, 0, 113, 10), token);
        both.reserved_ipv6 = Some(v6);
        assert_eq!(both.describe(), "203.0.113.10 and 2604:a880:400:d1::7a2:1");
        let mut neither = alone;
        neither.reserved_ipv6 = None;
        assert_eq!(neither.validate(), Err(InvalidFloatingIpConfig::NoAddress));
        assert!(
            neither
                .validate()
                .unwrap_err()
                .to_string()
                .contains("nothing to move")
        );
    }
}
