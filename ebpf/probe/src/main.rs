//! cniscope's TC probes: observe every packet on the interfaces they are attached to, never
//! change or drop one (always TC_ACT_OK), and aggregate per flow per interface in kernel maps.
//!
//! **Invariant:** the probe never drops a packet, only observations, and counts each one it
//! could not record (`COUNTERS`).
#![no_std]
#![no_main]

mod parse;

use aya_ebpf::bindings::{BPF_NOEXIST, TC_ACT_OK};
use aya_ebpf::helpers::bpf_ktime_get_ns;
use aya_ebpf::macros::{classifier, map};
use aya_ebpf::maps::{Array, PerCpuArray, PerCpuHashMap, RingBuf};
use aya_ebpf::programs::TcContext;
use cniscope_common::{FlowKey, FlowStats, NewFlow, ProbeConfig, counter, direction, fp};
use parse::{Parsed, Skip};

/// Flows, double-buffered: the probe writes to the map `ACTIVE` names while the agent drains
/// the other, so no packet is counted in a map being drained. Not LRU: a full map must fail
/// an insert (and be counted), never silently evict.
#[map]
static FLOWS_A: PerCpuHashMap<FlowKey, FlowStats> = PerCpuHashMap::with_max_entries(16384, 0);
#[map]
static FLOWS_B: PerCpuHashMap<FlowKey, FlowStats> = PerCpuHashMap::with_max_entries(16384, 0);
#[map]
static ACTIVE: Array<u32> = Array::with_max_entries(1, 0);
/// New flows, as they appear.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);
#[map]
static CONFIG: Array<ProbeConfig> = Array::with_max_entries(1, 0);
/// Working memory, one per CPU: the BPF stack (512 bytes) cannot hold a parsed packet.
#[map]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

#[repr(C)]
pub struct Scratch {
    parsed: Parsed,
    key: FlowKey,
    stats: FlowStats,
}

/// Interfaces without a link-layer header (TUN, IPIP): 1 at their ifindex. An array, not a
/// hash: the verifier inlines array lookups, and this one runs for every packet. Interfaces
/// with an ifindex past the end are read as Ethernet.
#[map]
static L3_IFACES: Array<u8> = Array::with_max_entries(cniscope_common::MAX_L3_IFINDEX, 0);

#[classifier]
pub fn cniscope_ingress(ctx: TcContext) -> i32 {
    observe(&ctx, direction::INGRESS);
    TC_ACT_OK
}

#[classifier]
pub fn cniscope_egress(ctx: TcContext) -> i32 {
    observe(&ctx, direction::EGRESS);
    TC_ACT_OK
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
    let Some(cfg) = CONFIG.get(0) else { return };
    // SAFETY: ctx.skb is the kernel's sk_buff for this program invocation.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let l3 = L3_IFACES.get(ifindex) == Some(&1);
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else { return };
    // SAFETY: this CPU's scratch slot; a TC program runs to completion on one CPU.
    let scratch = unsafe { &mut *scratch };
    match parse::packet(ctx, cfg, l3, &mut scratch.parsed) {
        Ok(()) => record(ifindex, dir, scratch),
        Err(Skip::NotIp) => bump(counter::NOT_IP),
        Err(Skip::Bad) => bump(counter::PARSE_FAILED),
    }
}

/// The fingerprint of a packet, as `Decoded::fingerprint` in decode.rs.
#[inline(always)]
fn fingerprint(p: &parse::Hdr) -> (u8, u32) {
    if p.protocol == 6 {
        if p.tcp_flags & 0x12 == 0x02 {
            return (fp::TCP_SYN_ISN, p.tcp_seq);
        }
        if p.tcp_flags & 0x12 == 0x12 {
            return (fp::TCP_SYNACK_ISN, p.tcp_seq);
        }
        return (fp::TCP_SEQ, p.tcp_seq);
    }
    if p.is_v4 {
        (fp::IPV4_ID, (p.ip_id as u32) << 16 | p.payload_len as u32)
    } else {
        (fp::PAYLOAD_HASH, p.payload_hash ^ p.payload_len as u32)
    }
}

#[inline(always)]
fn record(ifindex: u32, dir: u8, scratch: &mut Scratch) {
    let p = &scratch.parsed;
    let i = &p.inner;
    let tunnelled = p.tunnel != 0;
    let key = &mut scratch.key;
    key.ifindex = ifindex;
    key.direction = dir;
    key.tunnel = p.tunnel;
    key.protocol = i.protocol;
    key._pad = 0;
    key.vni = p.vni;
    key.src_port = i.src_port;
    key.dst_port = i.dst_port;
    key.src = i.src;
    key.dst = i.dst;
    if tunnelled {
        key.outer_src_port = p.outer.src_port;
        key.outer_dst_port = p.outer.dst_port;
        key.outer_src = p.outer.src;
        key.outer_dst = p.outer.dst;
    } else {
        key.outer_src_port = 0;
        key.outer_dst_port = 0;
        key.outer_src = [0; 16];
        key.outer_dst = [0; 16];
    }
    // SAFETY: `bpf_ktime_get_ns` has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let (kind, value) = fingerprint(i);
    let flows = match ACTIVE.get(0) {
        Some(1) => &FLOWS_B,
        _ => &FLOWS_A,
    };
    if let Some(s) = flows.get_ptr_mut(&*key) {
        // SAFETY: this CPU's slot of the entry; only this CPU writes it.
        let s = unsafe { &mut *s };
        if s.packets == 0 {
            // The entry was created on another CPU: this CPU's slot starts here.
            init(s, p, now, kind, value);
        }
        // A SYN seen after other packets still gives the ISN (as the replay aggregator).
        if i.protocol == 6 && i.tcp_flags & 0x02 != 0 && s.fp_kind != fp::TCP_SYN_ISN && s.fp_kind != fp::TCP_SYNACK_ISN {
            s.fp_kind = kind;
            s.fingerprint = value;
        }
        s.packets += 1;
        s.bytes += i.ip_len as u64;
        s.last_ns = now;
        s.tcp_flags |= i.tcp_flags;
        return;
    }
    let s = &mut scratch.stats;
    // SAFETY: FlowStats is plain integers and byte arrays: all zeroes is valid.
    unsafe { core::ptr::write_bytes(s as *mut FlowStats, 0, 1) };
    init(s, p, now, kind, value);
    s.packets = 1;
    s.bytes = i.ip_len as u64;
    s.tcp_flags = i.tcp_flags;
    if flows.insert(&*key, &*s, BPF_NOEXIST as u64).is_err() {
        bump(counter::MAP_FULL);
        return;
    }
    match EVENTS.reserve::<NewFlow>(0) {
        Some(mut e) => {
            let ev = NewFlow { key: *key, fingerprint: value, fp_kind: kind, _pad: [0; 7], ts_ns: now };
            e.write(ev);
            e.submit(0);
        }
        None => bump(counter::RINGBUF_FULL),
    }
}

#[inline(always)]
fn init(s: &mut FlowStats, p: &Parsed, now: u64, kind: u8, value: u32) {
    s.first_ns = now;
    s.last_ns = now;
    s.fp_kind = kind;
    s.fingerprint = value;
    s.src_mac = p.inner.src_mac;
    s.dst_mac = p.inner.dst_mac;
    if p.tunnel != 0 {
        s.outer_src_mac = p.outer.src_mac;
        s.outer_dst_mac = p.outer.dst_mac;
    }
    s.geneve_class = p.geneve_class;
    s.geneve_type = p.geneve_type;
    s.geneve_len = p.geneve_len;
    s.geneve_data = p.geneve_data;
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
