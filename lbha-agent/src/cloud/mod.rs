//! The built-in DigitalOcean client: what replaces the seed's `master.sh`.
//! `metadata` asks the droplet metadata service who we are and whether the
//! floating IP is ours, `api` talks to the DO API (assign, action status,
//! holder) with bounded retries, `floating_ip` ties them to VRRP mastership
//! as a single-flight task, `check` verifies at start (and for
//! `lbha-agent check-cloud`) what failover will need, `follow` starts
//! the task for the instance the configuration names, and `ca` reads the
//! extra CA bundle the API client may trust.

pub mod api;
pub mod ca;
pub mod check;
pub mod floating_ip;
pub mod follow;
pub mod metadata;
pub mod secret;

#[cfg(test)]
mod reserved_ipv6_tests;
#[cfg(test)]
mod test_support;

pub use api::{
    Action, ActionStatus, ApiCallCounts, ApiClient, ApiError, ApiOptions, Assigned, Holder,
    ProbeAnswer,
};
pub use ca::{CaFileError, load_ca_file};
pub use check::{Check, CloudReport, check_cloud};
pub use floating_ip::{
    AssignRecord, FloatingIpHandle, FloatingIpManager, FloatingIpStatus, PeerRouter, Router,
    SetupError, VrrpView, Yielding, api_options, build_clients,
};
pub use follow::{AddressFollower, FollowError, Follower, FollowerSetup, Mastership, MastershipOf};
pub use metadata::{MetadataClient, MetadataError};
pub use secret::{Secret, TokenError, load_token};
