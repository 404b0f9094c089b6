//! Where adverts come from: the XDP fast path when the kernel allows it, the
//! raw-socket fallback otherwise. Both apply `lbha_common::vrrp`'s rules and
//! yield the same [`AdvertEvent`].

pub mod ah;
pub mod raw;

use std::path::Path;

use lbha_common::{AdvertEvent, VridConfig, event::VridKey};
use lbha_config::ReceivePathChoice;
use thiserror::Error;

pub use crate::bpf::SteadyAdverts;
pub use crate::bpf::variant::{self, Choice, KernelFeatures, Program, Variant};
use crate::bpf::{BpfError, Counters, XdpProgram};
pub use raw::RawSocketReceiver;

#[derive(Debug, Error)]
pub enum ReceiveError {
    #[error(transparent)]
    Bpf(#[from] BpfError),
    #[error("raw VRRP socket on {interface}")]
    RawSocket {
        interface: String,
        #[source]
        source: std::io::Error,
    },
    #[error("unknown interface {0}")]
    UnknownInterface(String),
}

pub struct AdvertReceiver {
    path: Via,
    /// The protocol-51 socket, when an instance on the interface uses AH
    /// ([`Self::with_ah`]): next to either path, since the kernel hands
    /// AH adverts on to the stack.
    ah: Option<Box<ah::AhReceiver>>,
}

enum Via {
    // Boxed: both are large (map handles, counter arrays) and moved around.
    Xdp(Box<XdpProgram>),
    Raw(Box<RawSocketReceiver>),
}

impl From<Via> for AdvertReceiver {
    fn from(path: Via) -> Self {
        Self { path, ah: None }
    }
}

/// An opened receive path with the program choice that led to it.
pub struct Opened {
    pub receiver: AdvertReceiver,
    /// Which program runs (`full`, `no-timer`, `raw-socket`) and why.
    pub choice: Choice,
}

impl AdvertReceiver {
    /// Opens the receive path for `interface` and the configured VRIDs.
    /// `pin_root`: where the XDP program is pinned to survive restarts
    /// (`None`: detached when lbha stops). Must run inside a tokio runtime.
    pub fn open(
        interface: &str,
        vrids: &[(VridKey, VridConfig)],
        choice: ReceivePathChoice,
        pin_root: Option<&Path>,
        steady: SteadyAdverts,
    ) -> Result<Self, ReceiveError> {
        Self::open_probed(interface, vrids, choice, pin_root, steady).map(|opened| opened.receiver)
    }

    /// As [`Self::open`], probing the kernel for the best XDP program
    /// ([`variant::choose`]) and falling back to the next when one fails to
    /// load or attach: full, no-timer, then (`auto` only) the raw socket.
    pub fn open_probed(
        interface: &str,
        vrids: &[(VridKey, VridConfig)],
        choice: ReceivePathChoice,
        pin_root: Option<&Path>,
        steady: SteadyAdverts,
    ) -> Result<Opened, ReceiveError> {
        let raw = |reason: String| -> Result<Opened, ReceiveError> {
            Ok(Opened {
                receiver: Via::Raw(Box::new(RawSocketReceiver::open(interface, vrids)?)).into(),
                choice: Choice {
                    program: Program::RawSocket,
                    reason,
                },
            })
        };
        if choice == ReceivePathChoice::Raw {
            return raw("receive_path = \"raw\" in the configuration".to_owned());
        }
        if choice == ReceivePathChoice::XdpNoTimer {
            let program = XdpProgram::attach(interface, vrids, pin_root, Variant::NoTimer, steady)?;
            return Ok(Opened {
                receiver: Via::Xdp(Box::new(program)).into(),
                choice: Choice {
                    program: Program::Xdp(Variant::NoTimer),
                    reason: "receive_path = \"xdp-no-timer\" in the configuration".to_owned(),
                },
            });
        }
        let features = KernelFeatures::probe();
        let probed = variant::choose(&features);
        tracing::info!(
            interface,
            ?features,
            program = probed.program.name(),
            reason = %probed.reason,
            "probed the kernel's BPF features"
        );
        // Forced XDP still tries the timerless program when the probe
        // found no ring buffer: the load then says exactly what is missing.
        let mut variant = match probed.program {
            Program::Xdp(variant) => variant,
            Program::RawSocket if choice == ReceivePathChoice::Xdp => Variant::NoTimer,
            Program::RawSocket => {
                tracing::warn!(interface, reason = %probed.reason, "XDP unavailable; receiving adverts on a raw socket instead");
                return raw(probed.reason);
            }
        };
        let mut reason = probed.reason;
        loop {
            let error = match XdpProgram::attach(interface, vrids, pin_root, variant, steady) {
                Ok(program) => {
                    return Ok(Opened {
                        receiver: Via::Xdp(Box::new(program)).into(),
                        choice: Choice {
                            program: Program::Xdp(variant),
                            reason,
                        },
                    });
                }
                Err(error) => error,
            };
            let failed = format!(
                "the {} XDP program failed: {}",
                variant.name(),
                crate::error_chain(&error)
            );
            match (variant.fallback(), choice) {
                (Some(fallback), _) => {
                    tracing::warn!(interface, %failed, "trying the {} program", fallback.name());
                    variant = fallback;
                    reason = failed;
                }
                (None, ReceivePathChoice::Auto) => {
                    tracing::warn!(
                        interface,
                        %failed,
                        "XDP unavailable (old kernel or no BPF permission); receiving adverts on a raw socket instead"
                    );
                    return raw(failed);
                }
                (None, _) => return Err(error.into()),
            }
        }
    }
}

impl AdvertReceiver {
    /// Adds the AH socket for `verifiers` (the interface's AH instances;
    /// none: nothing to open).
    pub fn with_ah(
        mut self,
        interface: &str,
        verifiers: Vec<ah::AhVerifier>,
    ) -> Result<Self, ReceiveError> {
        if !verifiers.is_empty() {
            self.ah = Some(Box::new(ah::AhReceiver::open(interface, verifiers)?));
        }
        Ok(self)
    }

    /// "xdp", "xdp-skb" or "raw-socket".
    pub fn path_name(&self) -> &'static str {
        match &self.path {
            Via::Xdp(program) => program.mode().name(),
            Via::Raw(_) => "raw-socket",
        }
    }

    /// For status: the kernel's last accepted advert per VRID (XDP path
    /// only; the raw socket path wakes for every advert anyway).
    pub fn last_advert_source(&self) -> Option<crate::status::LastAdvertSource> {
        match &self.path {
            Via::Xdp(program) => {
                let read = program.tables().last_advert_reader();
                Some(std::sync::Arc::new(move |key| {
                    read(key).map(|e| (e.src_ip(), e.timestamp_ns))
                }))
            }
            Via::Raw(_) => None,
        }
    }

    /// Whether the XDP program stays attached when the agent exits.
    pub fn pinned(&self) -> bool {
        match &self.path {
            Via::Xdp(program) => program.pinned(),
            Via::Raw(_) => false,
        }
    }

    /// Whether the kernel keeps each VRID's last accepted advert where status
    /// reads it when asked (the XDP program's `LAST_ADVERT`, the map behind
    /// [`Self::last_advert_source`]), so that a backup's driver need not copy
    /// every advert's time into telemetry.
    pub fn kernel_keeps_last_advert(&self) -> bool {
        matches!(self.path, Via::Xdp(_))
    }

    /// Whether the receive path reports a VRID falling silent (events with
    /// [`lbha_common::event::change::SILENCE`]): the full XDP program's
    /// kernel timer. Otherwise a backup wakes at its master-down deadlines
    /// and reads the last advert the kernel kept (see `vrrp::driver`).
    pub fn reports_silence(&self) -> bool {
        match &self.path {
            Via::Xdp(program) => program.variant().reports_silence(),
            Via::Raw(_) => false,
        }
    }

    /// Waits for an advert that changes something for the state machine (the
    /// XDP path queues repeats silently; see [`Self::try_next`]), or for a
    /// verified AH advert.
    pub async fn next(&mut self) -> Result<AdvertEvent, ReceiveError> {
        let path = async {
            match &mut self.path {
                Via::Xdp(program) => program
                    .next()
                    .await
                    .map_err(|e| ReceiveError::Bpf(BpfError::Reactor(e))),
                Via::Raw(socket) => socket.next().await,
            }
        };
        match &mut self.ah {
            None => path.await,
            Some(ah) => tokio::select! {
                event = path => event,
                event = ah.next() => event.map_err(|source| ReceiveError::RawSocket {
                    interface: "AH socket".to_owned(),
                    source,
                }),
            },
        }
    }

    /// Returns an already queued advert without waiting.
    pub fn try_next(&mut self) -> Option<AdvertEvent> {
        let queued = match &mut self.path {
            Via::Xdp(program) => program.try_next(),
            Via::Raw(socket) => socket.try_next(),
        };
        queued.or_else(|| self.ah.as_mut().and_then(|ah| ah.try_next()))
    }

    /// The receive path's counters, with the AH socket's added in.
    pub fn counters(&self) -> Result<Counters, ReceiveError> {
        let mut counters = match &self.path {
            Via::Xdp(program) => program.tables().counters()?,
            Via::Raw(socket) => socket.counters(),
        };
        if let Some(ah) = &self.ah {
            for (total, more) in counters.0.iter_mut().zip(ah.counters().0) {
                *total += more;
            }
        }
        Ok(counters)
    }

    /// The last advert accepted for `key`, without draining anything.
    pub fn last_advert(&self, key: VridKey) -> Result<Option<AdvertEvent>, ReceiveError> {
        match &self.path {
            Via::Xdp(program) => Ok(program.tables().last_advert(key)?),
            Via::Raw(socket) => Ok(socket.last_advert(key)),
        }
    }
}
