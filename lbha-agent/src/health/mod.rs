//! Health checks that instances track: what a check is (a procfs process
//! watch, a probe or a script), how its results are debounced, and the task
//! that runs each one.

pub mod debounce;
pub mod haproxy;
pub mod probe;
pub mod process;
pub mod runner;
pub mod script;
