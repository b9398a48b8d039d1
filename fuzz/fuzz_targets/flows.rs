#![no_main]
//! `cniscope::fuzzing::flows`: see there.
libfuzzer_sys::fuzz_target!(|data: &[u8]| cniscope::fuzzing::flows(data));
