//! Starting and stopping the instances of one interface: its receive path,
//! an advert sender per instance, and the task that runs them.

use lbha_common::{
    VridConfig,
    event::{DEFAULT_DOWN_TIMER_ADVERTS, MAX_ALLOWED_SOURCES, TooManySources},
    vrrp::{AUTH_AH, AUTH_NONE, AUTH_PASS, encode::auth_data},
};
use tokio::sync::watch;

use super::{DaemonError, core::Core};
use crate::{
    config::{self, Config},
    recv::{
        AdvertReceiver, Opened, SteadyAdverts,
        ah::{AhCounter, AhVerifier, counter_for},
    },
    status::{InstanceStatus, Telemetry},
    sys::iface::{interface_ipv4, interface_ipv6_link_local_except},
    vrrp::{
        driver::{InstanceRuntime, InterfaceTask, Shared, TrackRefs, vrid_key},
        net::{Addresses, AdvertSender, AdvertSocket, Batch},
        vmac::{RpFilter, Vmac},
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
            let auth_type = match instance.auth_type {
                config::AuthType::Pass => AUTH_PASS,
                config::AuthType::Ah => AUTH_AH,
            };
            VridConfig::new(2, auth_type, auth_data(pass.as_bytes()))
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

/// An instance's AH key, when it uses keepalived's `auth_type AH`
/// (VRRPv2 over IPv4 with a password).
pub fn ah_key(instance: &config::Instance) -> Option<[u8; 8]> {
    match &instance.auth_pass {
        Some(pass)
            if instance.auth_type == config::AuthType::Ah
                && instance.version == 2
                && instance.family() == config::Family::V4 =>
        {
            Some(auth_data(pass.as_bytes()))
        }
        _ => None,
    }
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

/// An instance's track files with their weights resolved; one naming no
/// `[[track_file]]` (validation refuses that) weighs nothing.
fn file_refs(config: &Config, instance: &config::Instance) -> Vec<(String, i32, bool)> {
    instance
        .track_files
        .iter()
        .filter_map(|t| {
            let file = config.track_files.iter().find(|f| f.name == t.name)?;
            let (weight, reverse) = t.resolve(file);
            Some((t.name.clone(), weight, reverse))
        })
        .collect()
}

/// The instances of one interface, running in their own task.
pub(super) struct Group {
    shutdown: watch::Sender<bool>,
    pub task: tokio::task::JoinHandle<()>,
    /// The `use_vmac` macvlans created for these instances, deleted when
    /// they stop.
    vmacs: Vec<Vmac>,
    /// keepalived's `all.rp_filter` change for them.
    rp_filter: Option<RpFilter>,
    addresses: Addresses,
}

/// An interface's receive path, loaded (the XDP verifier has run) with no
/// instance started yet: see [`Group::load`].
pub struct LoadedPath {
    instances: Vec<config::Instance>,
    opened: Opened,
}

impl Group {
    pub async fn start(
        config: &Config,
        interface: &str,
        core: &Core,
        addresses: &Addresses,
        telemetry: &Telemetry,
    ) -> Result<Self, DaemonError> {
        let path = Self::load(config, interface).await?;
        Self::start_loaded(config, interface, path, core, addresses, telemetry).await
    }

    /// Loads `interface`'s receive path (the XDP program, verified and
    /// attached, or the raw socket) for its instances, starting none.
    pub async fn load(config: &Config, interface: &str) -> Result<LoadedPath, DaemonError> {
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
        Ok(LoadedPath { instances, opened })
    }

    /// Creates the instances' `use_vmac` macvlans and starts the instances
    /// of a loaded interface.
    pub async fn start_loaded(
        config: &Config,
        interface: &str,
        path: LoadedPath,
        core: &Core,
        addresses: &Addresses,
        telemetry: &Telemetry,
    ) -> Result<Self, DaemonError> {
        let LoadedPath { instances, opened } = path;
        // The macvlans first: the instances' sockets bind to them. `all`'s
        // rp_filter before them, or they would be raised with the others.
        let rp_filter = instances
            .iter()
            .any(|i| i.vmac.is_some())
            .then(RpFilter::clear);
        let mut vmacs = Vec::new();
        for instance in &instances {
            let Some(vmac) = &instance.vmac else { continue };
            match Vmac::create(
                addresses.handle(),
                &vmac.name,
                interface,
                instance.virtual_mac(),
            )
            .await
            {
                Ok(created) => {
                    tracing::info!(instance = %instance.name, vmac = %vmac.name, interface, "VRRP virtual MAC interface created");
                    vmacs.push(created);
                }
                Err(source) => {
                    remove_all(vmacs, addresses).await;
                    if let Some(saved) = rp_filter {
                        saved.restore();
                    }
                    return Err(DaemonError::Vmac {
                        instance: instance.name.clone(),
                        source,
                    });
                }
            }
        }
        match Self::start_instances(
            config, interface, instances, opened, core, addresses, telemetry,
        ) {
            Ok((shutdown, task)) => Ok(Self {
                shutdown,
                task,
                vmacs,
                rp_filter,
                addresses: addresses.clone(),
            }),
            Err(error) => {
                remove_all(vmacs, addresses).await;
                if let Some(saved) = rp_filter {
                    saved.restore();
                }
                Err(error)
            }
        }
    }

    fn start_instances(
        config: &Config,
        interface: &str,
        instances: Vec<config::Instance>,
        opened: Opened,
        core: &Core,
        addresses: &Addresses,
        telemetry: &Telemetry,
    ) -> Result<(watch::Sender<bool>, tokio::task::JoinHandle<()>), DaemonError> {
        let Opened { receiver, choice } = opened;
        // One sequence counter per AH instance, shared by its sender and
        // the AH socket, as keepalived keeps one for both.
        let ah_counters: Vec<Option<AhCounter>> = instances
            .iter()
            .map(|i| ah_key(i).map(|_| counter_for(&core.ah_counters, &i.name)))
            .collect();
        let verifiers = instances
            .iter()
            .zip(&ah_counters)
            .filter_map(|(i, counter)| {
                Some(AhVerifier {
                    vrid: i.vrid,
                    config: vrid_config(i).ok()?,
                    key: ah_key(i)?,
                    unicast: !i.unicast_peers.is_empty(),
                    counter: counter.clone()?,
                })
            })
            .collect();
        let receiver = receiver.with_ah(interface, verifiers)?;
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
        for (instance, ah_counter) in instances.iter().zip(ah_counters) {
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
            let mut sender = AdvertSender::new(src, &instance.unicast_peers);
            if let Some(ttl) = instance.unicast_ttl {
                sender = sender.with_unicast_ttl(ttl);
            }
            // `use_vmac` without `vmac_xmit_base`: from the macvlan, so
            // from the virtual MAC, with the base interface's address as
            // source (keepalived's too: the macvlan has no address).
            if instance.send_interface() != interface {
                let own = AdvertSocket::open(instance.send_interface(), false).map_err(net_err)?;
                sender = sender.with_socket(own);
            }
            if let (Some(key), Some(counter)) = (ah_key(instance), &ah_counter) {
                sender = sender.with_ah(key, counter.clone());
            }
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
            let mut runtime =
                InstanceRuntime::new(instance.clone(), sender, track_refs(config, instance)?)
                    .with_files(file_refs(config, instance));
            runtime.ah = ah_counter;
            runtimes.push(runtime);
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
                files: core.files.clone(),
                fifos: core.fifos.clone(),
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
        Ok((shutdown, tokio::spawn(task.run())))
    }

    /// Stops the instances (a master resigns) and waits for them, then
    /// deletes their macvlans.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
        remove_all(self.vmacs, &self.addresses).await;
        if let Some(saved) = self.rp_filter {
            saved.restore();
        }
    }
}

async fn remove_all(vmacs: Vec<Vmac>, addresses: &Addresses) {
    for vmac in vmacs {
        let name = vmac.name.clone();
        vmac.remove(addresses.handle()).await;
        tracing::info!(vmac = %name, "VRRP virtual MAC interface removed");
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
