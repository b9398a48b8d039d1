//! The `bpf(2)` calls aya does not make, and what the kernel says of a map's memory.
//!
//! `BPF_MAP_LOOKUP_AND_DELETE_BATCH` reads and deletes a hash map's entries many at a time.
//! aya offers only one element per system call (next key, lookup, delete: three calls per
//! flow, ~3 M calls for 1 M flows); a batch moves thousands of entries per call and deletes
//! them as it goes, so the drain never holds more than one batch besides its observations.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// `bpf(cmd, attr, sizeof attr)`: the system call's result, or the error it set.
///
/// # Safety
/// `attr` is the `union bpf_attr` member `cmd` reads, and every pointer in it is valid for
/// what the kernel reads or writes through it.
pub unsafe fn bpf<A>(cmd: libc::c_long, attr: &mut A) -> io::Result<libc::c_long> {
    // SAFETY: the caller's; the kernel reads and writes at most `size_of::<A>()` of `attr`.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut A, std::mem::size_of::<A>()) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// The `memlock:` line of a BPF map descriptor's fdinfo, in bytes: the kernel's own account
/// of the map's memory (for maps that are not preallocated, the elements in use).
pub fn memlock(fd: BorrowedFd<'_>) -> Option<u64> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("memlock:"))
        .and_then(|v| v.trim().parse().ok())
}

const BPF_MAP_LOOKUP_AND_DELETE_BATCH: libc::c_long = 25;

/// The `batch` member of `union bpf_attr` (linux/bpf.h).
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Entries per system call. A hash bucket's entries come whole, so a batch must hold the
/// fullest bucket (a few with the kernel's hash); ENOSPC doubles it.
const BATCH: usize = 4096;

/// Empties the hash map `fd` (keys `K`, values `V`, both plain data of the map's sizes),
/// handing each entry to `each` as it comes. Entries written while it runs may be missed
/// (the probes write the other buffer meanwhile).
pub fn drain<K: Copy + Default, V: Copy + Default>(
    fd: BorrowedFd<'_>,
    mut each: impl FnMut(&K, &V),
) -> io::Result<usize> {
    let mut size = BATCH;
    let mut keys = vec![K::default(); size];
    let mut values = vec![V::default(); size];
    // The kernel's position between calls (a bucket index for hash maps: 4 bytes; a key's
    // room to be safe).
    let token = std::mem::size_of::<K>().max(8);
    let (mut pos_in, mut pos_out) = (vec![0u8; token], vec![0u8; token]);
    let mut first = true;
    let mut total = 0;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { pos_in.as_ptr() as u64 },
            out_batch: pos_out.as_mut_ptr() as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: size as u32,
            map_fd: fd.as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        // SAFETY: the kernel writes at most `count` keys and values into buffers that hold
        // `size` of each (K and V are the map's key and value types), and `token` bytes of
        // position into `pos_out`; it reads `pos_in`, written by the previous call.
        let err = unsafe { bpf(BPF_MAP_LOOKUP_AND_DELETE_BATCH, &mut attr) }.err();
        if let Some(e) = &err
            && e.raw_os_error() == Some(libc::ENOSPC)
            && attr.count == 0
        {
            // One bucket holds more entries than a batch: a bigger batch, the same position.
            size *= 2;
            keys.resize(size, K::default());
            values.resize(size, V::default());
            continue;
        }
        let n = attr.count as usize;
        for i in 0..n.min(size) {
            each(&keys[i], &values[i]);
        }
        total += n;
        match err {
            None => {}
            // The end: the last entries (if any) came with it.
            Some(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(total),
            Some(e) => return Err(e),
        }
        std::mem::swap(&mut pos_in, &mut pos_out);
        first = false;
    }
}
