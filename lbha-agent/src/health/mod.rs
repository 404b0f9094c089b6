//! Health checks that instances track.

pub mod probe;
pub mod process;
pub mod script;
