//! Sources produce observations: [`replay`] reads capture files and decodes them with
//! [`decode`]; [`live`] (feature `live`) loads the eBPF probes, which parse packets in the
//! kernel by the same rules (`ebpf/probe`, sharing `cniscope_common`'s). Both aggregate into
//! [`aggregate::Observation`]s, and the same packets give the same observations whichever
//! source saw them (tested on every packet of the shared real captures).

pub mod aggregate;
pub mod decode;
#[cfg(feature = "live")]
pub mod live;
pub mod replay;
