//! The built-in DigitalOcean client: what replaces the seed's `master.sh`.
//! `metadata` asks the droplet metadata service who we are and whether the
//! floating IP is ours, `api` talks to the DO API (assign, action status,
//! holder) with bounded retries, and `floating_ip` ties them to VRRP
//! mastership as a single-flight task.

pub mod api;
pub mod floating_ip;
pub mod metadata;
pub mod secret;

#[cfg(test)]
mod dosim_interop;
#[cfg(test)]
mod mock;

pub use api::{Action, ActionStatus, ApiCallCounts, ApiClient, ApiError, ApiOptions, PathFamily};
pub use floating_ip::{
    AssignRecord, FloatingIpConfig, FloatingIpHandle, FloatingIpManager, FloatingIpStatus,
    SetupError,
};
pub use metadata::{MetadataClient, MetadataError};
pub use secret::{Secret, TokenError, TokenSource};
