//! `BPF_PROG_TEST_RUN`: runs the loaded probe on a packet we hand it, without a network.
//! The replay/live equivalence test feeds it every packet of the shared captures.

use aya::programs::SchedClassifier;
use pcap_parser::{PcapBlockOwned, PcapError, create_reader};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

const BPF_PROG_TEST_RUN: libc::c_long = 10;

/// The `test` member of `union bpf_attr` (linux/bpf.h).
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

/// Runs `prog` once on `frame` (an Ethernet frame); returns the program's return code.
pub fn run(prog: &SchedClassifier, frame: &[u8]) -> io::Result<u32> {
    run_repeated(prog, frame, 1).map(|(rc, _)| rc)
}

/// Runs `prog` `repeat` times on `frame`; returns the last return code and the kernel's mean
/// time per run in nanoseconds (measured around the whole loop, so without per-run clock
/// reads: the probe's own cost, as `bpf_stats` cannot show it).
pub fn run_repeated(prog: &SchedClassifier, frame: &[u8], repeat: u32) -> io::Result<(u32, u32)> {
    let fd = prog.fd().map_err(|e| io::Error::other(e.to_string()))?;
    run_fd(fd.as_fd(), frame, repeat)
}

/// A loaded program's descriptor of its own, for test runs from other threads while the
/// probe is drained.
pub fn program_fd(prog: &SchedClassifier) -> io::Result<OwnedFd> {
    let fd = prog.fd().map_err(|e| io::Error::other(e.to_string()))?;
    fd.as_fd().try_clone_to_owned()
}

/// [`run_repeated`] on a program's descriptor.
pub fn run_fd(prog: BorrowedFd<'_>, frame: &[u8], repeat: u32) -> io::Result<(u32, u32)> {
    let mut attr = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: frame.len() as u32,
        data_in: frame.as_ptr() as u64,
        repeat: repeat.max(1),
        ..TestRunAttr::default()
    };
    // SAFETY: BPF_PROG_TEST_RUN reads `frame` (len data_size_in) and writes only the attr's
    // output fields; data_out is null so no output buffer is written.
    unsafe { super::sys::bpf(BPF_PROG_TEST_RUN, &mut attr) }?;
    Ok((attr.retval, attr.duration))
}

/// Every frame of a legacy pcap file whose link type is Ethernet (what `run` takes), in file
/// order; a truncated file gives the frames before the damage.
pub fn ethernet_frames(path: &Path) -> io::Result<Vec<Vec<u8>>> {
    let file = std::fs::File::open(path)?;
    let mut reader = create_reader(1 << 20, file)
        .map_err(|e| io::Error::other(format!("{}: {e:?}", path.display())))?;
    let mut frames = Vec::new();
    let mut ethernet = false;
    loop {
        match reader.next() {
            Ok((off, block)) => {
                match block {
                    PcapBlockOwned::LegacyHeader(h) => ethernet = h.network.0 == 1,
                    PcapBlockOwned::Legacy(b) if ethernet => frames.push(b.data.to_vec()),
                    _ => {}
                }
                reader.consume(off);
            }
            Err(PcapError::Incomplete(_)) => {
                if reader.refill().is_err() || reader.reader_exhausted() {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    Ok(frames)
}
