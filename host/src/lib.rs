//! cniscope: sources -> plugins -> topology -> sinks. See ARCHITECTURE.md.

pub mod agent;
pub mod config;
pub mod inventory;
pub mod lab;
pub mod pipeline;
pub mod plugins;
pub mod sinks;
pub mod sources;
pub mod topology;
