//! keepalived's `virtual_routes` and `virtual_rules`: added through
//! rtnetlink (what `ip route` / `ip rule` do, without forking them) when an
//! instance becomes Master, removed when it leaves Master and at stop.
//!
//! Messages are built as keepalived 2.2.7 builds them (`netlink_route`,
//! `netlink_rule`): routes are prepended (`NLM_F_CREATE` without
//! `NLM_F_EXCL`), with protocol `keepalived` (18) unless the line sets
//! one; a delete leaves the scope a wildcard. An error never stops the
//! instance: the caller logs and counts it.

use std::net::IpAddr;

use futures_util::StreamExt;
use lbha_config as config;
use rtnetlink::packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload,
};
use rtnetlink::packet_route::{
    AddressFamily, RouteNetlinkMessage,
    route::{
        RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteNextHop, RouteProtocol,
        RouteScope, RouteType,
    },
    rule::{RuleAction, RuleAttribute, RuleFlags, RuleMessage},
};
use thiserror::Error;

use super::net::Addresses;
use crate::sys::iface::if_index;

#[derive(Debug, Error)]
pub enum RouteNetError {
    #[error("netlink: {what} `{item}`: {message}")]
    Netlink {
        what: &'static str,
        item: String,
        message: String,
    },
}

fn family(ipv6: bool) -> AddressFamily {
    if ipv6 {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    }
}

fn error(what: &'static str, item: &dyn std::fmt::Display, message: String) -> RouteNetError {
    RouteNetError::Netlink {
        what,
        item: item.to_string(),
        message,
    }
}

/// The route as keepalived sends it; `delete` leaves the scope and an
/// unset type as wildcards, as keepalived's delete does.
fn route_message(route: &config::VirtualRoute, delete: bool) -> Result<RouteMessage, String> {
    let mut m = RouteMessage::default();
    let ipv6 = route.dst.address.is_ipv6();
    m.header.address_family = family(ipv6);
    m.header.destination_prefix_length = route.dst.len;
    if route.table < 256 {
        m.header.table = route.table as u8;
    } else {
        m.header.table = 0;
        m.attributes.push(RouteAttribute::Table(route.table));
    }
    let kind = match route.kind {
        config::RouteKind::Unicast => RouteType::Unicast,
        config::RouteKind::Blackhole => RouteType::BlackHole,
        config::RouteKind::Unreachable => RouteType::Unreachable,
        config::RouteKind::Prohibit => RouteType::Prohibit,
    };
    if delete {
        m.header.scope = RouteScope::NoWhere;
        if route.kind != config::RouteKind::Unicast {
            m.header.kind = kind;
        }
    } else {
        m.header.scope = RouteScope::Universe;
        m.header.kind = kind;
    }
    m.header.protocol = RouteProtocol::from(route.effective_protocol());
    if let Some(scope) = route.scope {
        m.header.scope = RouteScope::from(scope);
    }
    if !route.dst.address.is_unspecified() || route.dst.len != 0 {
        m.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(
                route.dst.address,
            )));
    }
    if let Some(src) = route.src {
        m.attributes
            .push(RouteAttribute::PrefSource(RouteAddress::from(src)));
    }
    let oif = match &route.dev {
        Some(dev) => Some(if_index(dev).map_err(|e| e.to_string())?),
        None => None,
    };
    match route.via.as_slice() {
        [] => {}
        [via] => m
            .attributes
            .push(RouteAttribute::Gateway(RouteAddress::from(*via))),
        hops => {
            // keepalived's `or`: one next hop per gateway, on `dev`.
            let nexthops = hops
                .iter()
                .map(|via: &IpAddr| {
                    let mut nh = RouteNextHop::default();
                    if let Some(index) = oif {
                        nh.interface_index = index;
                    }
                    nh.attributes
                        .push(RouteAttribute::Gateway(RouteAddress::from(*via)));
                    nh
                })
                .collect();
            m.attributes.push(RouteAttribute::MultiPath(nexthops));
        }
    }
    if let Some(metric) = route.metric {
        m.attributes.push(RouteAttribute::Priority(metric));
    }
    if let Some(index) = oif {
        m.attributes.push(RouteAttribute::Oif(index));
    }
    if route.onlink {
        m.header.flags.insert(RouteFlags::Onlink);
    }
    Ok(m)
}

fn rule_message(rule: &config::VirtualRule) -> RuleMessage {
    let mut m = RuleMessage::default();
    m.header.family = family(rule.ipv6);
    if let Some(from) = rule.from {
        m.header.src_len = from.len;
        if from.len != 0 {
            m.attributes.push(RuleAttribute::Source(from.address));
        }
    }
    if let Some(to) = rule.to {
        m.header.dst_len = to.len;
        if to.len != 0 {
            m.attributes.push(RuleAttribute::Destination(to.address));
        }
    }
    m.header.action = match rule.action {
        config::RuleAction::Table(table) => {
            if table < 256 {
                m.header.table = table as u8;
            } else {
                m.attributes.push(RuleAttribute::Table(table));
            }
            RuleAction::ToTable
        }
        config::RuleAction::Blackhole => RuleAction::Blackhole,
        config::RuleAction::Unreachable => RuleAction::Unreachable,
        config::RuleAction::Prohibit => RuleAction::Prohibit,
    };
    if rule.invert {
        m.header.flags.insert(RuleFlags::Invert);
    }
    m.attributes.push(RuleAttribute::Priority(rule.priority));
    if let Some((mark, mask)) = rule.fwmark {
        m.attributes.push(RuleAttribute::FwMark(mark));
        if let Some(mask) = mask {
            m.attributes.push(RuleAttribute::FwMask(mask));
        }
    }
    if let Some(iif) = &rule.iif {
        m.attributes.push(RuleAttribute::Iifname(iif.clone()));
    }
    if let Some(oif) = &rule.oif {
        m.attributes.push(RuleAttribute::Oifname(oif.clone()));
    }
    if !rule.no_track {
        m.attributes
            .push(RuleAttribute::Protocol(RouteProtocol::from(
                config::RTPROT_KEEPALIVED,
            )));
    }
    m
}

/// Sends one request and waits for its acknowledgement; the kernel's
/// error number (negative) on failure.
async fn request(
    addresses: &Addresses,
    message: RouteNetlinkMessage,
    flags: u16,
) -> Result<(), Result<i32, String>> {
    let mut handle = addresses.handle.clone();
    let mut req = NetlinkMessage::from(message);
    req.header.flags = flags;
    let mut response = handle.request(req).map_err(|e| Err(e.to_string()))?;
    while let Some(message) = response.next().await {
        if let NetlinkPayload::Error(e) = message.payload {
            return Err(Ok(e.raw_code()));
        }
    }
    Ok(())
}

impl Addresses {
    /// Adds the route; already present is fine.
    pub async fn add_route(&self, route: &config::VirtualRoute) -> Result<(), RouteNetError> {
        let m = route_message(route, false).map_err(|e| error("adding route", route, e))?;
        // keepalived prepends: NLM_F_CREATE without NLM_F_EXCL.
        match request(
            self,
            RouteNetlinkMessage::NewRoute(m),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE,
        )
        .await
        {
            Ok(()) => Ok(()),
            Err(Ok(code)) if code == -libc::EEXIST => Ok(()),
            Err(e) => Err(error("adding route", route, describe(e))),
        }
    }

    /// Removes the route; already absent is fine.
    pub async fn remove_route(&self, route: &config::VirtualRoute) -> Result<(), RouteNetError> {
        // Its interface gone (no message), so is the route.
        let Ok(m) = route_message(route, true) else {
            return Ok(());
        };
        match request(
            self,
            RouteNetlinkMessage::DelRoute(m),
            NLM_F_REQUEST | NLM_F_ACK,
        )
        .await
        {
            Ok(()) => Ok(()),
            Err(Ok(code)) if code == -libc::ESRCH || code == -libc::ENODEV => Ok(()),
            Err(e) => Err(error("removing route", route, describe(e))),
        }
    }

    /// Adds the rule; already present is fine.
    pub async fn add_rule(&self, rule: &config::VirtualRule) -> Result<(), RouteNetError> {
        match request(
            self,
            RouteNetlinkMessage::NewRule(rule_message(rule)),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | rtnetlink::packet_core::NLM_F_EXCL,
        )
        .await
        {
            Ok(()) => Ok(()),
            Err(Ok(code)) if code == -libc::EEXIST => Ok(()),
            Err(e) => Err(error("adding rule", rule, describe(e))),
        }
    }

    /// Removes the rule; already absent is fine.
    pub async fn remove_rule(&self, rule: &config::VirtualRule) -> Result<(), RouteNetError> {
        match request(
            self,
            RouteNetlinkMessage::DelRule(rule_message(rule)),
            NLM_F_REQUEST | NLM_F_ACK,
        )
        .await
        {
            Ok(()) => Ok(()),
            Err(Ok(code)) if code == -libc::ENOENT => Ok(()),
            Err(e) => Err(error("removing rule", rule, describe(e))),
        }
    }
}

fn describe(e: Result<i32, String>) -> String {
    match e {
        Ok(code) => std::io::Error::from_raw_os_error(-code).to_string(),
        Err(message) => message,
    }
}
