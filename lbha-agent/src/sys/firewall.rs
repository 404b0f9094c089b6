//! keepalived's accept mode off (`no_accept`, strict mode's default): while
//! a non-owner instance is Master, packets to and from its virtual
//! addresses are dropped, with the nftables rules keepalived 2.2.7 installs
//! (vrrp_nftables.c), in a table of lbha's own:
//!
//! - `table ip lbha`: set `vips` (ipv4_addr); chain `in` (hook input,
//!   priority -1) `ip daddr @vips drop`; chain `out` (hook output, priority
//!   -1) `ip saddr @vips drop`.
//! - `table ip6 lbha`: the same with `vips` (ipv6_addr), Neighbor
//!   Solicitations and Advertisements accepted first (so the address is
//!   still resolved), and link-local addresses matched with their
//!   interface (`vips_ll`, ipv6_addr . ifname), as keepalived's
//!   `vips_link_local_name`.
//!
//! The rules go through the `nft` command (`nft -f -`, one transaction, on
//! the blocking pool): no netlink batch code of our own, and one fork per
//! transition of an instance that needs it, before its addresses go on.
//! The tables are deleted and created again in one transaction at start (a
//! crashed predecessor's elements go with them) and deleted on stop.

use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};

/// lbha's nftables table (both families).
pub const TABLE: &str = "lbha";

/// What could not be done to the rules.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error("could not run `nft` (is the nftables package installed?): {0}")]
    Spawn(#[source] std::io::Error),
    #[error("`nft` refused the rules ({status}): {stderr}")]
    Refused { status: String, stderr: String },
    #[error("the `nft` task did not finish: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// Whether this instance's addresses are blocked while it is Master:
/// keepalived's `vrrp_handle_accept_mode` does nothing for the owner.
pub fn blocks(instance: &lbha_config::Instance) -> bool {
    !instance.accept && instance.priority != 255
}

/// Whether any instance needs the rules.
pub fn needed(config: &lbha_config::Config) -> bool {
    config.instances.iter().any(blocks)
}

/// One blocked address and the interface it is on (link-local IPv6
/// addresses are matched with it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blocked {
    pub address: IpAddr,
    pub device: String,
}

/// The addresses an instance blocks while Master: its virtual addresses,
/// excluded ones too (keepalived's `vip` and `evip` lists).
pub fn blocked_of(instance: &lbha_config::Instance) -> Vec<Blocked> {
    instance
        .virtual_addresses
        .iter()
        .map(|vip| Blocked {
            address: vip.address,
            device: vip
                .dev
                .clone()
                .unwrap_or_else(|| instance.interface.clone()),
        })
        .collect()
}

/// Removes any table left behind, then creates empty ones.
pub fn install_script() -> String {
    format!(
        "{remove}\
         table ip {TABLE} {{\n\
         \tset vips {{ type ipv4_addr; }}\n\
         \tchain in {{ type filter hook input priority -1; policy accept; ip daddr @vips drop; }}\n\
         \tchain out {{ type filter hook output priority -1; policy accept; ip saddr @vips drop; }}\n\
         }}\n\
         table ip6 {TABLE} {{\n\
         \tset vips {{ type ipv6_addr; }}\n\
         \tset vips_ll {{ type ipv6_addr . ifname; }}\n\
         \tchain in {{ type filter hook input priority -1; policy accept;\n\
         \t\ticmpv6 type {{ nd-neighbor-solicit, nd-neighbor-advert }} accept\n\
         \t\tip6 daddr . iifname @vips_ll drop\n\
         \t\tip6 daddr @vips drop\n\
         \t}}\n\
         \tchain out {{ type filter hook output priority -1; policy accept;\n\
         \t\ticmpv6 type {{ nd-neighbor-solicit, nd-neighbor-advert }} accept\n\
         \t\tip6 saddr . oifname @vips_ll drop\n\
         \t\tip6 saddr @vips drop\n\
         \t}}\n\
         }}\n",
        remove = remove_script()
    )
}

/// Deletes both tables, whether they exist or not (declaring a table that
/// exists is no error, so the delete always has one to delete).
pub fn remove_script() -> String {
    format!(
        "table ip {TABLE} {{ }}\ndelete table ip {TABLE}\n\
         table ip6 {TABLE} {{ }}\ndelete table ip6 {TABLE}\n"
    )
}

/// Adds (`add`) or removes (`delete`) the addresses' elements.
pub fn elements_script(verb: &str, blocked: &[Blocked]) -> String {
    let mut out = String::new();
    for b in blocked {
        let line = match b.address {
            IpAddr::V4(a) => format!("{verb} element ip {TABLE} vips {{ {a} }}\n"),
            IpAddr::V6(a) if a.is_unicast_link_local() => format!(
                "{verb} element ip6 {TABLE} vips_ll {{ {a} . \"{}\" }}\n",
                b.device
            ),
            IpAddr::V6(a) => format!("{verb} element ip6 {TABLE} vips {{ {a} }}\n"),
        };
        out.push_str(&line);
    }
    out
}

/// Runs `nft -f -` with `script`, on the blocking pool.
pub async fn apply(script: String) -> Result<(), FirewallError> {
    tokio::task::spawn_blocking(move || run(&script)).await?
}

fn run(script: &str) -> Result<(), FirewallError> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(FirewallError::Spawn)?;
    if let Some(mut stdin) = child.stdin.take() {
        // A write error means nft exited early; its status says why.
        let _ = stdin.write_all(script.as_bytes());
    }
    let output = child.wait_with_output().map_err(FirewallError::Spawn)?;
    if output.status.success() {
        Ok(())
    } else {
        Err(FirewallError::Refused {
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_local_addresses_are_matched_with_their_interface() {
        let blocked = [
            Blocked {
                address: "10.0.0.100".parse().unwrap(),
                device: "eth1".into(),
            },
            Blocked {
                address: "fe80::1".parse().unwrap(),
                device: "eth1".into(),
            },
            Blocked {
                address: "2001:db8::10".parse().unwrap(),
                device: "eth1".into(),
            },
        ];
        assert_eq!(
            elements_script("add", &blocked),
            "add element ip lbha vips { 10.0.0.100 }\n\
             add element ip6 lbha vips_ll { fe80::1 . \"eth1\" }\n\
             add element ip6 lbha vips { 2001:db8::10 }\n"
        );
    }

    #[test]
    fn only_a_non_owner_without_accept_blocks() {
        let text = "[[instance]]\nname = \"VI_1\"\ninterface = \"eth1\"\nvrid = 1\n";
        let mut i = lbha_config::parse_toml(text, std::path::Path::new("t.toml"))
            .expect("valid")
            .config
            .instances
            .remove(0);
        assert!(!blocks(&i), "accept by default");
        i.accept = false;
        assert!(blocks(&i));
        i.priority = 255;
        assert!(!blocks(&i), "the owner always accepts");
    }
}
