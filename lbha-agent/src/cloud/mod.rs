//! The built-in DigitalOcean client: what replaces the seed's `master.sh`.
//! `metadata` asks the droplet metadata service who we are and whether the
//! floating IP is ours, `api` talks to the DO API (assign, action status,
//! holder) with bounded retries, `floating_ip` ties them to VRRP mastership
//! as a single-flight task, and `follow` starts that task for the instance
//! the configuration names.

pub mod api;
pub mod floating_ip;
pub mod follow;
pub mod metadata;
pub mod secret;

#[cfg(test)]
mod test_support;

pub use api::{Action, ActionStatus, ApiCallCounts, ApiClient, ApiError, ApiOptions};
pub use floating_ip::{
    AssignRecord, FloatingIpHandle, FloatingIpManager, FloatingIpStatus, PeerRouter, Router,
    SetupError, VrrpView, api_options, build_clients,
};
pub use follow::{FollowError, Follower, FollowerSetup, Mastership};
pub use metadata::{MetadataClient, MetadataError};
pub use secret::{Secret, TokenError, load_token};
