#![no_main]
//! `cniscope::fuzzing::inventory`: see there.
libfuzzer_sys::fuzz_target!(|data: &[u8]| cniscope::fuzzing::inventory(data));
