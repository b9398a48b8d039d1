#![no_main]
//! `cniscope::fuzzing::config`: see there.
libfuzzer_sys::fuzz_target!(|data: &[u8]| cniscope::fuzzing::config(data));
