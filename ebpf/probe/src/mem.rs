//! Zeroing and copying of the probe's 8-byte-aligned working structs, one word at a time.
//!
//! Why not `write_bytes` / assignment: for structs this size LLVM's BPF backend emits calls to
//! `memset` / `memcpy`, which compiler-builtins implements one byte per loop iteration (six
//! instructions a byte, run for every packet). Volatile word accesses cannot be merged back
//! into such a call.

/// Words in `T`; a compile-time error unless `T` is whole 8-byte words, 8-byte aligned.
const fn words<T>() -> usize {
    assert!(core::mem::size_of::<T>().is_multiple_of(8) && core::mem::align_of::<T>() >= 8);
    core::mem::size_of::<T>() / 8
}

/// Sets every byte of `t` to zero. Only for plain-data types, for which all zeroes is a value.
#[inline(always)]
pub fn zero<T: Plain>(t: &mut T) {
    let n = const { words::<T>() };
    let p = t as *mut T as *mut u64;
    for i in 0..n {
        // SAFETY: `p` is 8-aligned and `T` is exactly `n` words (checked above).
        unsafe { core::ptr::write_volatile(p.add(i), 0) };
    }
}

/// Word `i` of `t` (`i` below its number of words).
#[inline(always)]
pub fn word<T: Plain>(t: &T, i: usize) -> u64 {
    let n = const { words::<T>() };
    debug_assert!(i < n);
    // SAFETY: `t` is 8-aligned and `T` is `n` whole words; callers stay below `n`.
    unsafe { *(t as *const T as *const u64).add(i % n) }
}

/// Whether `a` and `b` hold the same bytes, compared a word at a time.
#[inline(always)]
pub fn same<T: Plain>(a: &T, b: &T) -> bool {
    let mut diff = 0;
    for i in 0..const { words::<T>() } {
        diff |= word(a, i) ^ word(b, i);
    }
    diff == 0
}

/// A read-only global set at load time (`EbpfLoader::set_global`): read volatile, so LLVM does
/// not fold in the compiled-in default; the verifier then sees the loaded value as a constant.
#[inline(always)]
pub fn load_time<T: Copy>(global: &T) -> T {
    // SAFETY: a plain read of a global.
    unsafe { core::ptr::read_volatile(global) }
}

/// `*dst = *src`, a word at a time.
#[inline(always)]
pub fn copy<T: Plain>(dst: &mut T, src: &T) {
    let n = const { words::<T>() };
    let d = dst as *mut T as *mut u64;
    let s = src as *const T as *const u64;
    for i in 0..n {
        // SAFETY: both are 8-aligned, `n` words long, and do not overlap (`&mut` and `&`).
        unsafe { core::ptr::write_volatile(d.add(i), core::ptr::read_volatile(s.add(i))) };
    }
}

/// Types made only of integers, byte arrays and bools with explicit padding, for which all
/// zeroes is a value and a word-by-word copy is a copy.
///
/// # Safety
/// Implement only for such types.
pub unsafe trait Plain {}

// SAFETY: integers and byte arrays with explicit padding fields (cniscope-common's layout test).
unsafe impl Plain for cniscope_common::FlowStats {}

// SAFETY: a byte array.
unsafe impl Plain for cniscope_common::Addr {}

// SAFETY: integers and addresses with explicit padding (cniscope-common's layout test).
unsafe impl Plain for cniscope_common::FlowKey {}
