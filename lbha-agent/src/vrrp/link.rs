//! Interface state, as keepalived tracks it by default: an instance whose
//! interface is down cannot hear or be heard, so it goes to FAULT instead of
//! claiming mastership (and the floating IP) on a dead link.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use futures_util::StreamExt;
use rtnetlink::{MulticastGroup, new_multicast_connection};
use tokio::sync::watch;

/// Whether `interface` is operationally up. `unknown` counts as up: it is
/// what drivers without carrier reporting (dummy, some virtual NICs) show.
pub fn is_up(interface: &str) -> bool {
    match std::fs::read_to_string(format!("/sys/class/net/{interface}/operstate")) {
        Ok(state) => matches!(state.trim(), "up" | "unknown"),
        Err(_) => false,
    }
}

/// Up/down of each watched interface.
pub type LinkStates = Arc<BTreeMap<String, bool>>;

/// A link must stay down this long before instances go to FAULT. Attaching
/// XDP resets some drivers and a veth peer's carrier (seen here for over
/// 700 ms under load), and NICs renegotiating take seconds; none of that is
/// a reason to resign mastership. A link that is really gone costs little
/// here: the peers take over after Master_Down_Interval regardless.
pub const LINK_DOWN_GRACE: Duration = Duration::from_secs(3);

/// Reads every interface's operstate (sysfs files) on the blocking pool,
/// as every file read of the daemon.
async fn read(names: &[String]) -> BTreeMap<String, bool> {
    let owned = names.to_vec();
    tokio::task::spawn_blocking(move || owned.iter().map(|n| (n.clone(), is_up(n))).collect())
        .await
        // The read could not run: report nothing as down rather than guess.
        .unwrap_or_else(|_| names.iter().map(|n| (n.clone(), true)).collect())
}

/// Publishes the state of `interfaces` (all up at first, corrected at once
/// unless they are down) and follows the kernel's link events (no polling).
/// Down is published only once it lasted [`LINK_DOWN_GRACE`]; up at once.
pub fn watch_links(interfaces: Vec<String>) -> watch::Receiver<LinkStates> {
    let all_up: BTreeMap<String, bool> = interfaces.iter().map(|n| (n.clone(), true)).collect();
    let (tx, rx) = watch::channel(Arc::new(all_up));
    let mut events = match new_multicast_connection(&[MulticastGroup::Link]) {
        Ok((connection, _handle, messages)) => {
            tokio::spawn(connection);
            Some(messages)
        }
        Err(error) => {
            tracing::error!(%error, "cannot watch link state; assuming it does not change");
            None
        }
    };
    tokio::spawn(async move {
        loop {
            let mut states = read(&interfaces).await;
            let newly_down = states
                .iter()
                .any(|(name, up)| !up && tx.borrow().get(name) == Some(&true));
            if newly_down {
                tokio::time::sleep(LINK_DOWN_GRACE).await;
                states = read(&interfaces).await;
            }
            tx.send_if_modified(|current| {
                let changed = **current != states;
                if changed {
                    for (name, up) in &states {
                        if current.get(name) != Some(up) {
                            tracing::info!(interface = %name, up, "link state changed");
                        }
                    }
                    *current = Arc::new(states);
                }
                changed
            });
            if tx.is_closed() {
                return;
            }
            match &mut events {
                Some(messages) => {
                    if messages.next().await.is_none() {
                        return;
                    }
                }
                None => return,
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_up_and_missing_interfaces_are_down() {
        assert!(is_up("lo"));
        assert!(!is_up("lbha-no-such-if"));
    }
}
