//! cniscope: sources -> plugins -> topology -> sinks. See ARCHITECTURE.md.

#[cfg(feature = "live")]
pub mod agent;
pub mod cluster;
pub mod compose;
pub mod config;
pub mod diagnose;
pub mod fuzzing;
pub mod health;
pub mod inventory;
#[cfg(feature = "lab")]
pub mod lab;
pub mod modes;
pub mod pipeline;
pub mod plugins;
#[cfg(feature = "server")]
pub mod server;
pub mod sinks;
pub mod sources;
pub mod synth;
pub mod topology;
