//! cniscope: sources -> plugins -> topology -> sinks. See ARCHITECTURE.md.

pub mod sources;
