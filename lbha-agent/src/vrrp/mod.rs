//! VRRP: the state machine (pure), tracked-check rules (pure), and the
//! driver that connects them to the network.

pub mod driver;
pub mod garp;
pub mod link;
pub mod machine;
pub mod net;
pub mod notify;
pub mod notify_fifo;
pub mod routes;
pub mod sync;
pub mod track;
pub mod track_file;
pub mod vmac;
