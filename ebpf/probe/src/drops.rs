//! cniscope's kernel drop program: on the `kfree_skb` tracepoint (every packet the kernel
//! frees without delivering it), keeps the drops in the network namespaces the agent watches
//! for reasons it did not filter out, and hands each one's headers to the agent through a ring
//! buffer: the agent decodes them by the probes' rules (its replay decoder, equivalent to the
//! probe's parser) and joins them to their connection. A raw tracepoint: no tracefs needed.
//!
//! Nothing here is compiled for one kernel: where `sk_buff`, `net_device` and `net` keep their
//! fields, and which tracepoint argument is the reason, come from the running kernel's BTF at
//! load time (`DROP_LAYOUT`); the reasons' values too (`IGNORED_REASONS`).
//!
//! **Invariant:** every matched drop it could not hand over is counted (`DROP_COUNTERS`).
#![no_std]
#![no_main]

use aya_ebpf::EbpfContext;
use aya_ebpf::helpers::generated::bpf_probe_read_kernel as read_bytes;
use aya_ebpf::helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel};
use aya_ebpf::macros::{map, raw_tracepoint};
use aya_ebpf::maps::{Array, HashMap, PerCpuArray, RingBuf};
use aya_ebpf::programs::RawTracePointContext;
use cniscope_common::{DROP_SNAP, DropEvent, DropLayout, MAX_DROP_REASON, drop_counter};

/// Set at load time from BTF (a read-only global: the verifier knows every offset).
#[unsafe(no_mangle)]
static DROP_LAYOUT: DropLayout = DropLayout {
    skb_arg: 0,
    reason_arg: 0,
    skb_head: 0,
    skb_tail: 0,
    skb_network_header: 0,
    skb_protocol: 0,
    skb_dev: 0,
    skb_sk: 0,
    skb_len: 0,
    dev_ifindex: 0,
    dev_net: 0,
    sk_net: 0,
    net_inum: 0,
    tail_is_offset: 0,
};

#[map]
static DROP_EVENTS: RingBuf = RingBuf::with_byte_size(512 * 1024, 0);
#[map]
static DROP_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(drop_counter::COUNT, 0);
/// 1 at a reason the agent does not want (not a loss: NOT_SPECIFIED, the consumed and the
/// like). An array: the verifier inlines its lookup.
#[map]
static IGNORED_REASONS: Array<u8> = Array::with_max_entries(MAX_DROP_REASON, 0);
/// The network namespaces (their inode numbers) of the nodes the agent watches.
#[map]
static WATCHED_NETNS: HashMap<u32, u8> = HashMap::with_max_entries(1024, 0);

#[raw_tracepoint(tracepoint = "kfree_skb")]
pub fn cniscope_kfree_skb(ctx: RawTracePointContext) -> i32 {
    record(&ctx);
    0
}

#[inline(always)]
fn bump(index: u32) {
    if let Some(c) = DROP_COUNTERS.get_ptr_mut(index) {
        // SAFETY: a per-CPU slot: no other CPU writes it.
        unsafe { *c += 1 };
    }
}

/// Tracepoint arguments 0 to 2 (kfree_skb's skb and reason have been among its first three
/// since reasons exist; the agent checks that). Each read at its own constant offset: the
/// verifier refuses a context pointer moved before the load, which is what `match n` on one
/// read compiled to.
#[inline(always)]
fn first_args(ctx: &RawTracePointContext) -> [u64; 3] {
    let args = ctx.as_ptr() as *const u64;
    // SAFETY: a raw tracepoint's context is its arguments, as u64s; kfree_skb has at least
    // three (volatile: one load each, at a fixed offset).
    unsafe {
        [
            core::ptr::read_volatile(args),
            core::ptr::read_volatile(args.add(1)),
            core::ptr::read_volatile(args.add(2)),
        ]
    }
}

#[inline(always)]
fn pick(args: &[u64; 3], n: u32) -> u64 {
    match n {
        0 => args[0],
        1 => args[1],
        _ => args[2],
    }
}

/// The `T` at `base + off` in kernel memory, if it can be read.
#[inline(always)]
fn field<T>(base: u64, off: u32) -> Option<T> {
    // SAFETY: bpf_probe_read_kernel checks the address; a bad one fails, it does not fault.
    unsafe { bpf_probe_read_kernel((base + off as u64) as *const T).ok() }
}

#[inline(always)]
fn record(ctx: &RawTracePointContext) {
    bump(drop_counter::EVENTS);
    // SAFETY: a plain read of a global (volatile: the loaded value, not the compiled default).
    let l = unsafe { core::ptr::read_volatile(&DROP_LAYOUT) };
    let args = first_args(ctx);
    let reason = pick(&args, l.reason_arg) as u32;
    if reason < MAX_DROP_REASON && IGNORED_REASONS.get(reason) == Some(&1) {
        return;
    }
    let skb = pick(&args, l.skb_arg);
    if skb == 0 {
        return;
    }
    // The namespace: the device's, else (a drop past the device, in a socket) the socket's.
    let dev: u64 = field(skb, l.skb_dev).unwrap_or(0);
    let net: u64 = if dev != 0 {
        field(dev, l.dev_net).unwrap_or(0)
    } else {
        match field::<u64>(skb, l.skb_sk) {
            Some(sk) if sk != 0 => field(sk, l.sk_net).unwrap_or(0),
            _ => 0,
        }
    };
    if net == 0 {
        return;
    }
    let Some(netns) = field::<u32>(net, l.net_inum) else {
        return;
    };
    // SAFETY: the value is only compared with None.
    if unsafe { WATCHED_NETNS.get(netns) }.is_none() {
        return;
    }
    bump(drop_counter::MATCHED);
    let ifindex = if dev != 0 {
        field::<u32>(dev, l.dev_ifindex).unwrap_or(0)
    } else {
        0
    };
    let head: u64 = field(skb, l.skb_head).unwrap_or(0);
    let network: u16 = field(skb, l.skb_network_header).unwrap_or(0xffff);
    let tail: u64 = if l.tail_is_offset != 0 {
        field::<u32>(skb, l.skb_tail).unwrap_or(0) as u64
    } else {
        field::<u64>(skb, l.skb_tail)
            .unwrap_or(0)
            .wrapping_sub(head)
    };
    // 0xffff: no network header set (the stack had not got that far).
    if head == 0 || network == 0xffff || tail <= network as u64 {
        bump(drop_counter::UNREADABLE);
        return;
    }
    let mut n = tail - network as u64;
    if n > DROP_SNAP as u64 {
        n = DROP_SNAP as u64;
    }
    let Some(mut entry) = DROP_EVENTS.reserve::<DropEvent>(0) else {
        bump(drop_counter::RINGBUF_FULL);
        return;
    };
    let e = entry.as_mut_ptr();
    // SAFETY: `e` is the reserved entry, DropEvent-sized; `data` has DROP_SNAP bytes and `n`
    // is at most that (and at least 1: tail > network above).
    let copied = unsafe {
        (*e).ts_ns = bpf_ktime_get_ns();
        (*e).netns = netns;
        (*e).ifindex = ifindex;
        (*e).reason = reason;
        (*e).skb_len = field::<u32>(skb, l.skb_len).unwrap_or(0);
        (*e).protocol = field::<u16>(skb, l.skb_protocol).unwrap_or(0);
        (*e).captured = n as u16;
        (*e)._pad = 0;
        read_bytes(
            (*e).data.as_mut_ptr().cast(),
            n as u32,
            (head + network as u64) as *const _,
        )
    };
    if copied != 0 {
        entry.discard(0);
        bump(drop_counter::UNREADABLE);
        return;
    }
    entry.submit(0);
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
