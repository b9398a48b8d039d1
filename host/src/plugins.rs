//! The plugin chain: sandboxed Wasm components, one per CNI, behind `wit/plugin.wit`.
//!
//! **Invariant:** a plugin that traps, loops or runs out of memory never stops the pipeline.
//! Its Store is dropped, the fault is logged and counted, the batch it was handling is counted
//! as lost *for that plugin*, and it is restarted (up to a limit, then disabled). The other
//! plugins' output is untouched.

pub mod bindings;
pub mod convert;
pub mod engine;
pub mod instance;
pub mod policy;
pub mod watch;

pub use engine::{PluginEngine, PluginError};
pub use instance::{PluginHealth, PluginInstance, PluginSettings, PluginState};
