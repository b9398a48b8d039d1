//! cniscope's TC probes: observe every packet on the interfaces they are attached to, never
//! change or drop one, and aggregate per flow per interface in kernel maps. Every program
//! returns TC_ACT_UNSPEC (TCX_NEXT): the packet goes on to the next program on the hook (a
//! CNI's own, another observer's) and, after the last, passes. TC_ACT_OK would end the chain
//! there and skip the programs attached after ours.
//!
//! **Invariant:** the probe never drops a packet, only observations, and counts each one it
//! could not record (`COUNTERS`).
#![no_std]
#![no_main]
// Single load instructions for packet fields (wire.rs).
#![feature(asm_experimental_arch)]

mod fast;
mod mem;
mod parse;
mod wire;

use aya_ebpf::bindings::{BPF_F_NO_PREALLOC, BPF_NOEXIST, TC_ACT_UNSPEC};
use aya_ebpf::helpers::{bpf_jiffies64, bpf_ktime_get_ns};
use aya_ebpf::macros::{classifier, map};
use aya_ebpf::maps::{Array, HashMap, PerCpuArray, RingBuf};
use aya_ebpf::programs::TcContext;
use cniscope_common::{
    CacheSlot, FlowKey, FlowStats, NewFlow, ProbeConfig, SPLIT_GENERATION, counter, direction, fp,
};
use parse::{Parsed, Skip};

/// Flows, double-buffered: `ACTIVE` holds the window's number, and the probe writes to the
/// half (of `CACHE`) and the map (`FLOWS_A` / `FLOWS_B`) its parity names while the agent
/// drains the others, so no packet is counted in a map being drained. Each packet tries its
/// flow's slot in this CPU's cache first (an array: the verifier inlines its lookup, where a
/// hash lookup costs a call, a hash of the 88-byte key and a compare); a flow whose slot
/// another flow holds goes to the hash map. Not LRU: a full hash map must fail an insert (and
/// be counted), never silently evict.
///
/// The hash maps are shared by the CPUs (atomic counters) and not preallocated: a flow costs
/// one key and one value whatever the number of CPUs, and only while it is in the map (the
/// agent deletes what it drains). Per-CPU preallocated maps cost `max_entries` x (key +
/// value x CPUs) x 2 from the start: 0.7 GB at 1 M flows on two CPUs, 13 GB on 64.
///
/// One cache map with both halves, not two maps: a lookup whose map differs by path is not
/// inlined by the verifier but made an indirect call (a retpoline here).
#[map]
static CACHE: PerCpuArray<CacheSlot> = PerCpuArray::with_max_entries(2 * 1024, 0);
/// Slots in each half of the cache minus one (a power of two minus one); set at load time
/// with the cache's size, read-only, so the verifier knows it.
#[unsafe(no_mangle)]
static CACHE_MASK: u32 = 1023;
#[map]
static FLOWS_A: HashMap<FlowKey, FlowStats> = HashMap::with_max_entries(16384, BPF_F_NO_PREALLOC);
#[map]
static FLOWS_B: HashMap<FlowKey, FlowStats> = HashMap::with_max_entries(16384, BPF_F_NO_PREALLOC);
#[map]
static ACTIVE: Array<u32> = Array::with_max_entries(1, 0);
/// New flows, as they appear.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);
/// The tunnel ports, set at load time: a read-only global, so the verifier knows every port
/// and each packet is compared with constants, without a map lookup.
#[unsafe(no_mangle)]
static PROBE_CONFIG: ProbeConfig = ProbeConfig {
    vxlan_ports: [0; 8],
    geneve_ports: [0; 4],
    udp_encap_ports: [0; 4],
    geneve_classes: [0; cniscope_common::MAX_GENEVE_CLASSES],
};

/// Working memory, one per CPU: the BPF stack (512 bytes) cannot hold a parsed packet. The
/// tick clock lives here too: one per-CPU area touched per packet, not two.
#[map]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

#[repr(C)]
pub struct Scratch {
    parsed: Parsed,
    key: FlowKey,
    stats: FlowStats,
    /// The tick (`bpf_jiffies64`) and the monotonic time read when it began on this CPU.
    clock_jiffies: u64,
    clock_ns: u64,
}

/// Interfaces without a link-layer header (TUN, IPIP): 1 at their ifindex. An array, not a
/// hash: the verifier inlines array lookups, and this one runs for every packet. Interfaces
/// with an ifindex past the end are read as Ethernet.
#[map]
static L3_IFACES: Array<u8> = Array::with_max_entries(cniscope_common::MAX_L3_IFINDEX, 0);

#[classifier]
pub fn cniscope_ingress(ctx: TcContext) -> i32 {
    observe(&ctx, direction::INGRESS);
    TC_ACT_UNSPEC
}

#[classifier]
pub fn cniscope_egress(ctx: TcContext) -> i32 {
    observe(&ctx, direction::EGRESS);
    TC_ACT_UNSPEC
}

/// Does nothing: attached instead of the probes (agent setting `baseline_probe`), it shows
/// what the hook and bpf_stats' own clock reads cost, the floor under the probes' figure.
#[classifier]
pub fn cniscope_baseline(_ctx: TcContext) -> i32 {
    TC_ACT_UNSPEC
}

#[inline(always)]
fn bump(index: u32) {
    if let Some(c) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: a per-CPU slot: no other CPU writes it.
        unsafe { *c += 1 };
    }
}

#[inline(always)]
fn observe(ctx: &TcContext, dir: u8) {
    bump(counter::PACKETS);
    // SAFETY: ctx.skb is the kernel's sk_buff for this program invocation.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let l3 = L3_IFACES.get(ifindex) == Some(&1);
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's scratch slot; a TC program runs to completion on one CPU.
    let scratch = unsafe { &mut *scratch };
    match parse::packet(ctx, &PROBE_CONFIG, l3, &mut scratch.parsed) {
        Ok(()) => record(ifindex, dir, scratch),
        Err(Skip::NotIp) => bump(counter::NOT_IP),
        Err(Skip::Bad) => bump(counter::PARSE_FAILED),
    }
}

/// The fingerprint of a packet: the shared rule (`cniscope_common::fp::of`), as decode.rs.
#[inline(always)]
fn fingerprint(p: &parse::Hdr) -> (u8, u32) {
    let ipv4_id = if p.is_v4 { Some(p.ip_id) } else { None };
    fp::of(
        p.protocol,
        p.tcp_flags,
        p.tcp_seq,
        ipv4_id,
        p.payload_len,
        p.payload_hash,
    )
}

#[inline(always)]
fn record(ifindex: u32, dir: u8, scratch: &mut Scratch) {
    let p = &scratch.parsed;
    let i = &p.inner;
    let key = &mut scratch.key;
    mem::zero(key);
    key.ifindex = ifindex;
    key.direction = dir;
    key.tunnel = p.tunnel.kind;
    key.protocol = i.protocol;
    key.vni = p.tunnel.vni;
    key.src_port = i.src_port;
    key.dst_port = i.dst_port;
    mem::copy(&mut key.src, &i.src);
    mem::copy(&mut key.dst, &i.dst);
    if p.tunnel.kind != 0 {
        key.outer_src_port = p.outer.src_port;
        key.outer_dst_port = p.outer.dst_port;
        mem::copy(&mut key.outer_src, &p.outer.src);
        mem::copy(&mut key.outer_dst, &p.outer.dst);
    }
    let (kind, value) = fingerprint(i);
    let tick = tick_now(&mut scratch.clock_jiffies, &mut scratch.clock_ns);
    let window = ACTIVE.get(0).copied().unwrap_or(0);
    let flows = if window & 1 == 1 { &FLOWS_B } else { &FLOWS_A };
    let mask = mem::load_time(&CACHE_MASK);
    let half = (window & 1) * (mask + 1);
    if let Some(slot) = CACHE.get_ptr_mut(half + (slot_hash(key) & mask)) {
        // SAFETY: this CPU's copy of the slot; a TC program runs to completion on one CPU.
        let slot = unsafe { &mut *slot };
        let taken = slot.generation == window && slot.stats.packets != 0;
        if taken && mem::same(&slot.key, key) {
            if !reopens(p, kind, value, &slot.stats, tick) {
                update(&mut slot.stats, p, kind, value, tick);
                return;
            }
            // Another connection on this key: the slot's record goes to the hash map under
            // the next generation, and the slot starts over with this packet.
            slot.reopened += 1;
            if slot.reopened < SPLIT_GENERATION as u32 {
                key.generation = slot.reopened as u8;
                #[allow(clippy::needless_borrows_for_generic_args)]
                let moved = flows.insert(&*key, &slot.stats, BPF_NOEXIST as u64).is_ok();
                key.generation = 0;
                if moved {
                    let now = precise_now();
                    first(&mut slot.stats, p, now, kind, value);
                    new_flow(key, now, kind, value);
                    return;
                }
            }
            bump(counter::REOPEN_MERGED);
            update(&mut slot.stats, p, kind, value, tick);
            return;
        }
        if !taken {
            let now = precise_now();
            mem::copy(&mut slot.key, key);
            slot.generation = window;
            slot.reopened = 0;
            first(&mut slot.stats, p, now, kind, value);
            new_flow(key, now, kind, value);
            return;
        }
    }
    // By reference (the lint would pass the 88-byte key by value, a copy on the stack).
    #[allow(clippy::needless_borrows_for_generic_args)]
    if let Some(head) = flows.get_ptr_mut(&*key) {
        // A key whose later connections the map split off: its packets go to the newest.
        // SAFETY: the map's value, valid while this program runs (RCU).
        let successor = unsafe { (*head).successor };
        let mut s = head;
        if successor != 0 {
            key.generation = successor;
            #[allow(clippy::needless_borrows_for_generic_args)]
            match flows.get_ptr_mut(&*key) {
                Some(newest) => s = newest,
                None => key.generation = 0,
            }
        }
        // SAFETY: as above; a torn read of another CPU's concurrent update only makes the
        // test err either way (a split too many, or a merge, which is counted).
        if reopens(p, kind, value, unsafe { &*s }, tick) {
            // Other CPUs add to this record at any moment, so it stays as it is: the new
            // connection gets a record of its own under the next split generation, and the
            // key's generation-0 record points there.
            let next = if key.generation < SPLIT_GENERATION {
                SPLIT_GENERATION
            } else {
                key.generation.wrapping_add(1)
            };
            if next != 0 {
                key.generation = next;
                let now = precise_now();
                first(&mut scratch.stats, p, now, kind, value);
                #[allow(clippy::needless_borrows_for_generic_args)]
                let split = flows.insert(&*key, &scratch.stats, BPF_NOEXIST as u64);
                match split {
                    Ok(()) => {
                        new_flow(key, now, kind, value);
                        // SAFETY: a byte no atomic operation touches; the last split wins.
                        unsafe { (*head).successor = next };
                        key.generation = 0;
                        return;
                    }
                    // Another CPU split it at the same moment: add to its record.
                    Err(EEXIST) => {
                        #[allow(clippy::needless_borrows_for_generic_args)]
                        let other = flows.get_ptr_mut(&*key);
                        if let Some(other) = other {
                            shared_update(other, p, kind, value, tick);
                            key.generation = 0;
                            return;
                        }
                    }
                    Err(_) => {}
                }
                key.generation = 0;
            }
            bump(counter::REOPEN_MERGED);
        }
        shared_update(s, p, kind, value, tick);
        return;
    }
    let now = precise_now();
    let s = &mut scratch.stats;
    first(s, p, now, kind, value);
    #[allow(clippy::needless_borrows_for_generic_args)]
    match flows.insert(&*key, &*s, BPF_NOEXIST as u64) {
        Ok(()) => new_flow(key, now, kind, value),
        // Another CPU made the entry between our lookup and insert: add to it.
        Err(EEXIST) => match flows.get_ptr_mut(&*key) {
            Some(s) => shared_update(s, p, kind, value, tick),
            None => bump(counter::MAP_FULL),
        },
        // Full (E2BIG) or no memory for the entry (ENOMEM): the packet is not recorded.
        Err(_) => bump(counter::MAP_FULL),
    }
}

/// `bpf_map_update_elem`'s answer when `BPF_NOEXIST` finds the key (-EEXIST).
const EEXIST: i32 = -17;

/// One more packet of a flow in a hash map every CPU writes: the counters and flags by atomic
/// operations (a packet of the flow on another CPU may be adding at the same moment); the
/// last time and a late handshake's fingerprint by plain stores (either CPU's value is right).
#[inline(always)]
fn shared_update(s: *mut FlowStats, p: &Parsed, kind: u8, value: u32, last_ns: u64) {
    let i = &p.inner;
    // SAFETY: `s` is the map's value for this key, valid while this program runs (RCU); the
    // fields other CPUs may write at the same time are only touched atomically here.
    unsafe {
        if fp::upgrades(i.protocol, i.tcp_flags, (*s).fp_kind) {
            (*s).fp_kind = kind;
            (*s).fingerprint = value;
        }
        atomic_add(&raw mut (*s).packets, 1);
        atomic_add(&raw mut (*s).bytes, i.ip_len as u64);
        (*s).last_ns = last_ns;
        if (*s).tcp_flags & i.tcp_flags != i.tcp_flags {
            // The flags byte sits in an aligned 64-bit word of the value (little-endian BPF):
            // OR-ing its bits into that word leaves the other bytes alone.
            const AT: usize = core::mem::offset_of!(FlowStats, tcp_flags);
            let word = s.cast::<u8>().add(AT & !7).cast::<u64>();
            atomic_or(word, (i.tcp_flags as u64) << ((AT & 7) * 8));
        }
    }
}

/// `*p += v` as one atomic instruction (BPF_ATOMIC | BPF_ADD). Inline assembly: the BPF
/// target has no compare-and-swap, so core's atomics offer no `fetch_add` here.
///
/// # Safety
/// `p` is valid and 8-aligned.
#[inline(always)]
unsafe fn atomic_add(p: *mut u64, v: u64) {
    // SAFETY: the caller's.
    unsafe {
        core::arch::asm!(
            "lock *(u64 *)({p} + 0) += {v}",
            p = in(reg) p,
            v = in(reg) v,
            options(nostack, preserves_flags),
        )
    };
}

/// `*p |= v` as one atomic instruction (BPF_ATOMIC | BPF_OR, kernels from 5.12).
///
/// # Safety
/// `p` is valid and 8-aligned.
#[inline(always)]
unsafe fn atomic_or(p: *mut u64, v: u64) {
    // SAFETY: the caller's.
    unsafe {
        core::arch::asm!(
            "lock *(u64 *)({p} + 0) |= {v}",
            p = in(reg) p,
            v = in(reg) v,
            options(nostack, preserves_flags),
        )
    };
}

/// A slot in the flow cache for `key`: FNV-style mixing of its eleven words.
#[inline(always)]
fn slot_hash(key: &FlowKey) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for i in 0..core::mem::size_of::<FlowKey>() / 8 {
        h = (h ^ mem::word(key, i)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h ^ (h >> 32)) as u32
}

/// `s` as the first packet of its flow (on this CPU, in this window) makes it.
#[inline(always)]
fn first(s: &mut FlowStats, p: &Parsed, now: u64, kind: u8, value: u32) {
    mem::zero(s);
    s.first_ns = now;
    s.fp_kind = kind;
    s.fingerprint = value;
    (s.dst_mac, s.src_mac) = p.inner.mac_bytes();
    if p.tunnel.kind != 0 {
        (s.outer_dst_mac, s.outer_src_mac) = p.outer.mac_bytes();
    }
    s.geneve_class = p.tunnel.geneve_class;
    s.geneve_type = p.tunnel.geneve_type;
    s.geneve_len = p.tunnel.geneve_len;
    s.geneve_data = p.tunnel.geneve_data.to_ne_bytes();
    s.packets = 1;
    s.bytes = p.inner.ip_len as u64;
    s.last_ns = now;
    s.tcp_flags = p.inner.tcp_flags;
}

/// The time of a flow's first packet: the monotonic clock, to the nanosecond (time joins
/// compare first packets).
#[inline(always)]
fn precise_now() -> u64 {
    // SAFETY: no preconditions.
    unsafe { bpf_ktime_get_ns() }
}

/// The same clock to the tick, for a flow's later packets (their time only says when the flow
/// was last seen): read precisely once per tick per CPU, when `bpf_jiffies64` (which the
/// verifier inlines into one load) moves on. A helper call costs tens of nanoseconds here
/// (return thunks), so this saves one on nearly every packet. It can lag a first packet's
/// precise time by up to a tick; the agent clamps it.
#[inline(always)]
fn tick_now(jiffies: &mut u64, ns: &mut u64) -> u64 {
    // SAFETY: no preconditions.
    let j = unsafe { bpf_jiffies64() };
    if *jiffies != j {
        *jiffies = j;
        *ns = precise_now();
    }
    *ns
}

/// Whether this packet opens another connection on the key whose record is `s`
/// ([`fp::opens_another`], as the replay aggregator decides it).
#[inline(always)]
fn reopens(p: &Parsed, kind: u8, value: u32, s: &FlowStats, now: u64) -> bool {
    fp::opens_another(
        p.inner.protocol,
        kind,
        value,
        s.fp_kind,
        s.fingerprint,
        s.tcp_flags,
        (s.first_ns, s.last_ns),
        now,
    )
}

/// One more packet of a flow already in `s`.
#[inline(always)]
fn update(s: &mut FlowStats, p: &Parsed, kind: u8, value: u32, last_ns: u64) {
    let i = &p.inner;
    // A SYN seen after other packets still gives the ISN (as the replay aggregator).
    if fp::upgrades(i.protocol, i.tcp_flags, s.fp_kind) {
        s.fp_kind = kind;
        s.fingerprint = value;
    }
    s.packets += 1;
    s.bytes += i.ip_len as u64;
    s.last_ns = last_ns;
    s.tcp_flags |= i.tcp_flags;
}

/// The new-flow event: a flow's first packet at an interface, on this CPU, in this window.
#[inline(always)]
fn new_flow(key: &FlowKey, now: u64, kind: u8, value: u32) {
    match EVENTS.reserve::<NewFlow>(0) {
        Some(mut e) => {
            let ev = NewFlow {
                key: *key,
                fingerprint: value,
                fp_kind: kind,
                _pad: [0; 3],
                ts_ns: now,
            };
            e.write(ev);
            e.submit(0);
        }
        None => bump(counter::RINGBUF_FULL),
    }
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
