//! Where adverts come from: the XDP fast path when the kernel allows it, the
//! raw-socket fallback otherwise. Both apply `lbha_common::vrrp`'s rules and
//! yield the same [`AdvertEvent`].

pub mod raw;

use std::path::Path;

use lbha_common::{AdvertEvent, VridConfig};
use lbha_config::ReceivePathChoice;
use thiserror::Error;

pub use crate::bpf::SteadyAdverts;
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

pub enum AdvertReceiver {
    // Boxed: both are large (map handles, counter arrays) and moved around.
    Xdp(Box<XdpProgram>),
    Raw(Box<RawSocketReceiver>),
}

impl AdvertReceiver {
    /// Opens the receive path for `interface` and the configured VRIDs.
    /// `pin_root`: where the XDP program is pinned to survive restarts
    /// (`None`: detached when lbha stops). Must run inside a tokio runtime.
    pub fn open(
        interface: &str,
        vrids: &[(u8, VridConfig)],
        choice: ReceivePathChoice,
        pin_root: Option<&Path>,
        steady: SteadyAdverts,
    ) -> Result<Self, ReceiveError> {
        match choice {
            ReceivePathChoice::Raw => Ok(Self::Raw(Box::new(RawSocketReceiver::open(
                interface, vrids,
            )?))),
            ReceivePathChoice::Xdp => Ok(Self::Xdp(Box::new(XdpProgram::attach(
                interface, vrids, pin_root, steady,
            )?))),
            ReceivePathChoice::Auto => match XdpProgram::attach(interface, vrids, pin_root, steady)
            {
                Ok(program) => Ok(Self::Xdp(Box::new(program))),
                Err(error) => {
                    tracing::warn!(
                        interface,
                        %error,
                        "XDP unavailable (old kernel or no BPF permission); receiving adverts on a raw socket instead"
                    );
                    Ok(Self::Raw(Box::new(RawSocketReceiver::open(
                        interface, vrids,
                    )?)))
                }
            },
        }
    }

    /// "xdp", "xdp-skb" or "raw-socket".
    pub fn path_name(&self) -> &'static str {
        match self {
            AdvertReceiver::Xdp(program) => program.mode().name(),
            AdvertReceiver::Raw(_) => "raw-socket",
        }
    }

    /// For status: the kernel's last accepted advert per VRID (XDP path
    /// only; the raw socket path wakes for every advert anyway).
    pub fn last_advert_source(&self) -> Option<crate::status::LastAdvertSource> {
        match self {
            AdvertReceiver::Xdp(program) => {
                let read = program.tables().last_advert_reader();
                Some(std::sync::Arc::new(move |vrid| {
                    read(vrid).map(|e| (std::net::Ipv4Addr::from(e.src_addr), e.timestamp_ns))
                }))
            }
            AdvertReceiver::Raw(_) => None,
        }
    }

    /// Whether the XDP program stays attached when the agent exits.
    pub fn pinned(&self) -> bool {
        match self {
            AdvertReceiver::Xdp(program) => program.pinned(),
            AdvertReceiver::Raw(_) => false,
        }
    }

    /// Whether the receive path reports a VRID falling silent (events with
    /// [`lbha_common::event::change::SILENCE`]): the XDP path's kernel timer.
    pub fn reports_silence(&self) -> bool {
        matches!(self, AdvertReceiver::Xdp(_))
    }

    /// Waits for an advert that changes something for the state machine (the
    /// XDP path queues repeats silently; see [`Self::try_next`]).
    pub async fn next(&mut self) -> Result<AdvertEvent, ReceiveError> {
        match self {
            AdvertReceiver::Xdp(program) => program
                .next()
                .await
                .map_err(|e| ReceiveError::Bpf(BpfError::Reactor(e))),
            AdvertReceiver::Raw(socket) => socket.next().await,
        }
    }

    /// Returns an already queued advert without waiting.
    pub fn try_next(&mut self) -> Option<AdvertEvent> {
        match self {
            AdvertReceiver::Xdp(program) => program.try_next(),
            AdvertReceiver::Raw(socket) => socket.try_next(),
        }
    }

    pub fn counters(&self) -> Result<Counters, ReceiveError> {
        match self {
            AdvertReceiver::Xdp(program) => Ok(program.tables().counters()?),
            AdvertReceiver::Raw(socket) => Ok(socket.counters()),
        }
    }

    /// The last advert accepted for `vrid`, without draining anything.
    pub fn last_advert(&self, vrid: u8) -> Result<Option<AdvertEvent>, ReceiveError> {
        match self {
            AdvertReceiver::Xdp(program) => Ok(program.tables().last_advert(vrid)?),
            AdvertReceiver::Raw(socket) => Ok(socket.last_advert(vrid)),
        }
    }
}
