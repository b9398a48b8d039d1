//! Sources produce observations: the replay of capture files here, live eBPF capture later.
//! Both decode packets with [`decode`] and aggregate them with [`aggregate`], so the same
//! packets give the same observations whichever source saw them.

pub mod aggregate;
pub mod decode;
pub mod live;
pub mod replay;
