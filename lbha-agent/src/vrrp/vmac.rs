//! keepalived's `use_vmac`: a macvlan in private mode on the instance's
//! interface, with the VRRP virtual MAC (00:00:5e:00:01:VRID), created
//! when the instance starts and deleted when it stops, as keepalived 2.2.7
//! does (`netlink_link_add_vmac` / `netlink_link_del_vmac`).
//!
//! The macvlan holds the virtual addresses and sends the adverts and
//! gratuitous ARPs (from the virtual MAC: a socket bound to a macvlan sends
//! with the macvlan's address), so neighbours learn a MAC that moves with
//! mastership and never need the gratuitous ARP to follow a failover.
//!
//! Adverts are still received on the base interface: the XDP program (or
//! the raw socket) stays there. Every frame for the macvlan arrives through
//! its lower device first: XDP runs in the driver (or in generic mode
//! before the receive handlers), before macvlan's `rx_handler` hands the
//! frame to the macvlan, and multicast goes to the lower device as well
//! as to every macvlan (`macvlan_handle_frame` returns `RX_HANDLER_PASS`
//! for it). So receiving on the macvlan would add nothing.
//!
//! The sysctls keepalived sets (`vrrp_if_config.c`): on the macvlan
//! `arp_ignore=1` (answer ARP only for its own addresses, not the base's),
//! `accept_local=1`, `rp_filter=0` (it has no address of the subnet's
//! route), `promote_secondaries=1`, and IPv6 off (no link-local address
//! from the virtual MAC, RFC 5798 7.4); on the base interface
//! `arp_ignore=1` and `arp_filter=1`, so the base never answers ARP for the
//! virtual addresses with its own MAC. The base's values are restored when
//! the macvlan goes.

use std::io;

use futures_util::TryStreamExt;
use rtnetlink::{
    LinkMacVlan,
    packet_route::link::{InfoKind, LinkAttribute, LinkInfo, MacVlanMode},
};
use thiserror::Error;

use crate::sys::iface::{IfaceError, if_index};

#[derive(Debug, Error)]
pub enum VmacError {
    #[error(transparent)]
    Interface(#[from] IfaceError),
    #[error(
        "interface {0} exists and is not a macvlan: lbha does not take it over (rename the instance's `use_vmac` interface)"
    )]
    NotMacvlan(String),
    #[error("netlink: {what} macvlan {name}: {message}")]
    Netlink {
        what: &'static str,
        name: String,
        message: String,
    },
    #[error("setting {path} to {value}")]
    Sysctl {
        path: String,
        value: u8,
        #[source]
        source: io::Error,
    },
}

/// A macvlan lbha created (or took over: a macvlan of that name left by
/// keepalived or a killed lbha), deleted by [`Vmac::remove`].
#[derive(Debug)]
pub struct Vmac {
    pub name: String,
    base: String,
    /// The base interface's sysctls before lbha changed them.
    restore: Vec<(String, String)>,
}

fn netlink<'n>(
    what: &'static str,
    name: &'n str,
) -> impl FnOnce(rtnetlink::Error) -> VmacError + 'n {
    move |e| VmacError::Netlink {
        what,
        name: name.to_owned(),
        message: e.to_string(),
    }
}

fn sysctl_path(interface: &str, key: &str) -> String {
    format!("/proc/sys/net/ipv4/conf/{interface}/{key}")
}

fn write_sysctl(path: &str, value: u8) -> Result<(), VmacError> {
    std::fs::write(path, value.to_string()).map_err(|source| VmacError::Sysctl {
        path: path.to_owned(),
        value,
        source,
    })
}

impl Vmac {
    /// Creates the macvlan `name` on `base` with `mac`, sets keepalived's
    /// sysctls, and brings it up. A macvlan already named so is deleted
    /// and created again (keepalived updates or replaces it); any other
    /// interface of that name is left alone and refused.
    pub async fn create(
        handle: &rtnetlink::Handle,
        name: &str,
        base: &str,
        mac: [u8; 6],
    ) -> Result<Self, VmacError> {
        let base_index = if_index(base)?;
        if let Some(existing) = existing_link(handle, name).await? {
            if !existing.1 {
                return Err(VmacError::NotMacvlan(name.to_owned()));
            }
            tracing::info!(
                vmac = name,
                "removing an old macvlan of the instance's VMAC name"
            );
            handle
                .link()
                .del(existing.0)
                .execute()
                .await
                .map_err(netlink("deleting old", name))?;
        }
        handle
            .link()
            .add(
                LinkMacVlan::new(name, base_index, MacVlanMode::Private)
                    .address(mac.to_vec())
                    .build(),
            )
            .execute()
            .await
            .map_err(netlink("creating", name))?;
        let mut vmac = Self {
            name: name.to_owned(),
            base: base.to_owned(),
            restore: Vec::new(),
        };
        // From here on a failure deletes what was created.
        match vmac.configure(handle).await {
            Ok(()) => Ok(vmac),
            Err(error) => {
                vmac.remove(handle).await;
                Err(error)
            }
        }
    }

    async fn configure(&mut self, handle: &rtnetlink::Handle) -> Result<(), VmacError> {
        let name = self.name.clone();
        // IPv6 off before the link is up: no link-local address from the
        // virtual MAC (keepalived's IN6_ADDR_GEN_MODE_NONE and
        // `link_set_ipv6(ifp, false)` for an IPv4 instance).
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"), "1");
        for (key, value) in [
            ("arp_ignore", 1),
            ("accept_local", 1),
            ("rp_filter", 0),
            ("promote_secondaries", 1),
        ] {
            write_sysctl(&sysctl_path(&name, key), value)?;
        }
        for key in ["arp_ignore", "arp_filter"] {
            let path = sysctl_path(&self.base, key);
            let before = std::fs::read_to_string(&path).map_err(|source| VmacError::Sysctl {
                path: path.clone(),
                value: 1,
                source,
            })?;
            let before = before.trim().to_owned();
            if before != "1" {
                write_sysctl(&path, 1)?;
                self.restore.push((path, before));
            }
        }
        let index = if_index(&name)?;
        handle
            .link()
            .set(rtnetlink::LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(netlink("bringing up", &name))?;
        Ok(())
    }

    /// Deletes the macvlan (its addresses go with it) and restores the
    /// base interface's sysctls. Never fails: what cannot be undone is
    /// logged, and the daemon goes on.
    pub async fn remove(self, handle: &rtnetlink::Handle) {
        for (path, value) in &self.restore {
            if let Err(error) = std::fs::write(path, value) {
                tracing::warn!(vmac = %self.name, path, %error, "base interface setting not restored");
            }
        }
        // Already gone (deleted by hand, or the base went): nothing to do.
        if let Ok(index) = if_index(&self.name)
            && let Err(error) = handle.link().del(index).execute().await
        {
            tracing::warn!(vmac = %self.name, %error, "macvlan not deleted");
        }
    }
}

/// The index of the interface `name`, and whether it is a macvlan; none
/// when there is no such interface.
async fn existing_link(
    handle: &rtnetlink::Handle,
    name: &str,
) -> Result<Option<(u32, bool)>, VmacError> {
    let mut links = handle.link().get().match_name(name.to_owned()).execute();
    match links.try_next().await {
        Ok(Some(link)) => {
            let macvlan = link.attributes.iter().any(|a| match a {
                LinkAttribute::LinkInfo(infos) => infos
                    .iter()
                    .any(|i| matches!(i, LinkInfo::Kind(InfoKind::MacVlan))),
                _ => false,
            });
            Ok(Some((link.header.index, macvlan)))
        }
        Ok(None) => Ok(None),
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(None),
        Err(e) => Err(netlink("looking up", name)(e)),
    }
}

/// keepalived's `clear_rp_filter`: a macvlan's `rp_filter=0` counts only
/// with `all.rp_filter` 0 (the kernel uses the greater of the two), so when
/// `all` is set, every interface (and `default`, for new ones) is first
/// raised to at least `all`'s value, then `all` set to 0: each interface
/// filters as before, the macvlans not at all. [`RpFilter::restore`] puts
/// back what is still as lbha left it.
#[derive(Debug, Default)]
pub struct RpFilter {
    /// `all`'s value before, when lbha cleared it.
    all: Option<String>,
    /// (`default` or an interface, its value before), for those raised.
    raised: Vec<(String, String)>,
}

fn rp_filter_of(interface: &str) -> Option<String> {
    std::fs::read_to_string(sysctl_path(interface, "rp_filter"))
        .ok()
        .map(|v| v.trim().to_owned())
}

impl RpFilter {
    pub fn clear() -> Self {
        let mut saved = Self::default();
        let Some(all) = rp_filter_of("all") else {
            return saved;
        };
        let Ok(level) = all.parse::<u8>() else {
            return saved;
        };
        if level == 0 {
            return saved;
        }
        let mut names = vec!["default".to_owned()];
        if let Ok(dir) = std::fs::read_dir("/proc/sys/net/ipv4/conf") {
            names.extend(
                dir.flatten()
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|n| n != "all" && n != "default"),
            );
        }
        for name in names {
            let Some(before) = rp_filter_of(&name) else {
                continue;
            };
            if before.parse::<u8>().is_ok_and(|v| v < level)
                && write_sysctl(&sysctl_path(&name, "rp_filter"), level).is_ok()
            {
                saved.raised.push((name, before));
            }
        }
        match write_sysctl(&sysctl_path("all", "rp_filter"), 0) {
            Ok(()) => {
                tracing::info!(from = %all, "net.ipv4.conf.all.rp_filter set to 0 for the VRRP virtual MAC interfaces (each interface keeps its filtering)");
                saved.all = Some(all);
            }
            Err(error) => {
                tracing::warn!(%error, "net.ipv4.conf.all.rp_filter left set: a macvlan may drop traffic to the virtual addresses");
            }
        }
        saved
    }

    /// Restores what lbha changed and nobody changed since.
    pub fn restore(self) {
        let Some(all) = self.all else { return };
        if rp_filter_of("all").as_deref() == Some("0") {
            let _ = std::fs::write(sysctl_path("all", "rp_filter"), &all);
        }
        for (name, before) in self.raised {
            if rp_filter_of(&name).as_deref() == Some(all.as_str()) {
                let _ = std::fs::write(sysctl_path(&name, "rp_filter"), before);
            }
        }
    }
}
