//! Look-ups in the operating system that several concerns need: interfaces
//! (index, addresses, MAC), users/groups, and the heap. The bottom layer: it imports
//! nothing from the rest of the agent.

pub mod firewall;
pub mod iface;
pub mod memory;
pub mod multicast;
pub mod timer;
pub mod users;
