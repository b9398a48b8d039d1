//! Types shared between the eBPF programs and the host (`#[repr(C)]`, `no_std`).
//!
//! Empty until live capture lands (the live-capture issue): the eBPF crate and its flow-key and
//! event types go here, so both sides agree on layouts at compile time.
#![no_std]
