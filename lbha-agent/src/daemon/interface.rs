//! Starting and stopping the instances of one interface: its receive path,
//! an advert sender per instance, and the task that runs them.

use lbha_common::{
    VridConfig,
    event::{DEFAULT_DOWN_TIMER_ADVERTS, MAX_ALLOWED_SOURCES, TooManySources},
    vrrp::{AUTH_NONE, AUTH_PASS, encode::auth_data},
};
use tokio::sync::watch;

use super::{DaemonError, core::Core};
use crate::{
    config::{self, Config},
    recv::{AdvertReceiver, Opened, SteadyAdverts},
    status::{InstanceStatus, Telemetry},
    sys::iface::{interface_ipv4, interface_ipv6_link_local_except},
    vrrp::{
        driver::{InstanceRuntime, InterfaceTask, Shared, TrackRefs, vrid_key},
        net::{Addresses, AdvertSender, AdvertSocket, Batch},
    },
};

// The configuration's bounds are the kernel table's.
const _: () = assert!(config::MAX_FILTERED_PEERS == MAX_ALLOWED_SOURCES);
const _: () = assert!(config::DEFAULT_DOWN_TIMER_ADVERTS == DEFAULT_DOWN_TIMER_ADVERTS);

/// The XDP/raw-socket VRID table entry for an instance: its version and
/// authentication, its `down_timer_adverts` (the kernel's silence timer),
/// and, with `check_unicast_src`, its unicast peers as the only sources
/// whose adverts are accepted (none: multicast, any source).
pub fn vrid_config(instance: &config::Instance) -> Result<VridConfig, DaemonError> {
    let base = match &instance.auth_pass {
        Some(pass) if instance.version == 2 => {
            VridConfig::new(2, AUTH_PASS, auth_data(pass.as_bytes()))
        }
        _ => VridConfig::new(instance.version, AUTH_NONE, [0; 8]),
    };
    let sources: &[std::net::IpAddr] = if instance.check_unicast_src {
        &instance.unicast_peers
    } else {
        &[]
    };
    base.with_down_timer_adverts(instance.down_timer_adverts)
        .with_allowed_ips(sources)
        .map_err(|TooManySources(peers)| DaemonError::TooManyPeers {
            instance: instance.name.clone(),
            peers,
        })
}

/// How an instance's tracked checks weigh: (check state slot, weight,
/// reverse). A `haproxy` check weighs twice: HAProxy serving with the
/// check's weight, its backends with `backends_down`'s.
fn track_refs(config: &Config, instance: &config::Instance) -> Result<TrackRefs, DaemonError> {
    let mut refs = TrackRefs::new();
    for name in &instance.track {
        let index = config
            .checks
            .iter()
            .position(|c| &c.name == name)
            .ok_or_else(|| DaemonError::UnknownCheck {
                instance: instance.name.clone(),
                check: name.clone(),
            })?;
        let check = &config.checks[index];
        refs.push((index, check.weight, check.weight_reverse));
        if let (Some(config::Probe::Haproxy(h)), Some(slot)) = (
            &check.probe,
            crate::health::runner::backends_slot(&config.checks, index),
        ) {
            refs.push((slot, crate::health::haproxy::backends_weight(h), false));
        }
    }
    Ok(refs)
}

/// The instances of one interface, running in their own task.
pub(super) struct Group {
    shutdown: watch::Sender<bool>,
    pub task: tokio::task::JoinHandle<()>,
}

impl Group {
    pub async fn start(
        config: &Config,
        interface: &str,
        core: &Core,
        addresses: &Addresses,
        telemetry: &Telemetry,
    ) -> Result<Self, DaemonError> {
        let instances: Vec<config::Instance> = super::reload::instances_on(config, interface)
            .into_iter()
            .cloned()
            .collect();
        let vrids = instances
            .iter()
            .map(|i| Ok((vrid_key(i), vrid_config(i)?)))
            .collect::<Result<Vec<_>, DaemonError>>()?;
        // Loading the XDP program runs the verifier for hundreds of
        // milliseconds: off the runtime thread, or the instances already
        // running (on a reload) would miss their adverts meanwhile.
        let opened = {
            let (interface, path) = (interface.to_owned(), instances[0].receive_path);
            let pin_root = config.global.bpf_pin_dir.clone();
            let runtime = tokio::runtime::Handle::current();
            tokio::task::spawn_blocking(move || {
                let _runtime = runtime.enter();
                AdvertReceiver::open_probed(
                    &interface,
                    &vrids,
                    path,
                    pin_root.as_deref(),
                    SteadyAdverts::MapOnly,
                )
            })
            .await
            .map_err(|e| DaemonError::Startup(e.to_string()))??
        };
        let Opened { receiver, choice } = opened;
        tracing::info!(
            interface,
            receive_path = receiver.path_name(),
            program = choice.program.name(),
            reason = %choice.reason,
            pinned = receiver.pinned(),
            instances = instances.len(),
            "interface ready"
        );
        telemetry.add_interface(
            interface,
            receiver.path_name(),
            receiver.pinned(),
            (choice.program.name(), &choice.reason),
        );
        if let Some(source) = receiver.last_advert_source() {
            telemetry.set_last_advert_source(interface, source);
        }
        let ipv6 = instances.iter().find(|i| i.family() == config::Family::V6);
        let socket =
            AdvertSocket::open(interface, ipv6.is_some()).map_err(|source| DaemonError::Net {
                instance: ipv6.unwrap_or(&instances[0]).name.clone(),
                source,
            })?;
        let mut runtimes = Vec::new();
        for instance in &instances {
            let net_err = |source| DaemonError::Net {
                instance: instance.name.clone(),
                source,
            };
            // The source: `unicast_src`, else the interface's first IPv4
            // address or (IPv6, RFC 5798 5.1.2.2) its link-local address.
            let src = match (instance.unicast_src, instance.family()) {
                (Some(src), _) => src,
                (None, config::Family::V4) => interface_ipv4(interface)
                    .map_err(|e| net_err(e.into()))?
                    .into(),
                (None, config::Family::V6) => {
                    let vips: Vec<std::net::Ipv6Addr> = instances
                        .iter()
                        .flat_map(|i| &i.virtual_addresses)
                        .filter_map(|v| match v.address {
                            std::net::IpAddr::V6(a) => Some(a),
                            std::net::IpAddr::V4(_) => None,
                        })
                        .collect();
                    interface_ipv6_link_local_except(interface, &vips)
                        .map_err(|e| net_err(e.into()))?
                        .into()
                }
            };
            let sender = AdvertSender::new(src, &instance.unicast_peers);
            telemetry.add_instance(InstanceStatus {
                name: instance.name.clone(),
                interface: instance.interface.clone(),
                vrid: instance.vrid,
                version: instance.version,
                state: "INIT".into(),
                priority: instance.priority,
                configured_priority: instance.priority,
                ..InstanceStatus::default()
            });
            runtimes.push(InstanceRuntime::new(
                instance.clone(),
                sender,
                track_refs(config, instance)?,
            ));
        }
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (commands_tx, commands) = tokio::sync::mpsc::unbounded_channel();
        core.commands.register(
            runtimes.iter().map(|r| r.config.name.as_str()),
            &commands_tx,
        );
        let task = InterfaceTask {
            interface: interface.to_owned(),
            receiver,
            socket,
            outbox: Batch::default(),
            outbox_due: Vec::new(),
            instances: runtimes,
            shared: Shared {
                addresses: addresses.clone(),
                notify: core.notify_tx.clone(),
                checks: core.check_states(),
                links: core.links.clone(),
                shutdown: shutdown_rx,
                mastership: core.mastership(),
                floating_ip_status: core.floating_ip_status(),
                telemetry: telemetry.clone(),
                local: core.local.clone(),
                peers: core.peers.clone(),
                sync: core.sync.clone(),
            },
            commands,
            wakeups: 0,
            counters_published_ns: 0,
        };
        Ok(Self {
            shutdown,
            task: tokio::spawn(task.run()),
        })
    }

    /// Stops the instances (a master resigns) and waits for them.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use lbha_common::event::wire_v4;

    use super::*;

    fn instance(extra: &str) -> config::Instance {
        let text = format!(
            "[[instance]]\nname = \"VI_1\"\ninterface = \"eth0\"\nvrid = 7\nversion = 3\nadvert_interval = 0.1\n{extra}\n"
        );
        config::parse_toml(&text, std::path::Path::new("t.toml"))
            .expect("valid")
            .config
            .instances
            .remove(0)
    }

    const PEERS: &str = "unicast_peers = [\"10.0.0.2\", \"10.0.0.3\"]\n";

    #[test]
    fn the_kernel_accepts_adverts_from_the_peers_only() {
        let table = vrid_config(&instance(PEERS)).unwrap();
        assert_eq!(table.allowed_source_count, 2);
        assert!(table.allows_source(&wire_v4([10, 0, 0, 2])));
        assert!(table.allows_source(&wire_v4([10, 0, 0, 3])));
        assert!(!table.allows_source(&wire_v4([10, 0, 0, 4])));
        assert_eq!((table.enabled, table.version), (1, 3));
    }

    #[test]
    fn an_ipv6_instance_accepts_adverts_from_its_ipv6_peers_only() {
        let table = vrid_config(&instance(
            "unicast_peers = [\"2001:db8::2\"]\nvirtual_addresses = [\"2001:db8::10/64\"]\n",
        ))
        .unwrap();
        let peer: std::net::Ipv6Addr = "2001:db8::2".parse().unwrap();
        let other: std::net::Ipv6Addr = "2001:db8::3".parse().unwrap();
        assert_eq!(table.allowed_source_count, 1);
        assert!(table.allows_source(&peer.octets()));
        assert!(!table.allows_source(&other.octets()));
    }

    #[test]
    fn without_peers_or_source_checking_any_source_is_accepted() {
        for extra in ["", &format!("{PEERS}check_unicast_src = false")] {
            let table = vrid_config(&instance(extra)).unwrap();
            assert_eq!(table.allowed_source_count, 0, "{extra:?}");
            assert!(table.allows_source(&wire_v4([192, 0, 2, 1])), "{extra:?}");
        }
    }

    #[test]
    fn the_kernel_counts_silence_in_the_instances_down_timer_adverts() {
        assert_eq!(vrid_config(&instance("")).unwrap().silence_intervals(), 3);
        let table = vrid_config(&instance("down_timer_adverts = 7")).unwrap();
        assert_eq!(table.down_timer_adverts, 7);
        assert_eq!(table.silence_intervals(), 7);
    }

    #[test]
    fn too_many_peers_to_check_is_an_error_not_an_open_door() {
        // Validation refuses this; a configuration built past it still
        // never reaches the kernel unfiltered.
        let mut inst = instance(PEERS);
        inst.unicast_peers = (1..=9).map(|i| Ipv4Addr::new(10, 0, 0, i).into()).collect();
        let error = vrid_config(&inst).unwrap_err();
        assert!(
            matches!(error, DaemonError::TooManyPeers { peers: 9, .. }),
            "{error}"
        );
    }
}
