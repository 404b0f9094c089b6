//! Look-ups in the operating system that several concerns need: interfaces
//! (index, addresses, MAC) and users/groups. The bottom layer: it imports
//! nothing from the rest of the agent.

pub mod iface;
pub mod multicast;
pub mod timer;
pub mod users;
