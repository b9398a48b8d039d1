#![no_main]
//! `cniscope::fuzzing::capture`: see there.
libfuzzer_sys::fuzz_target!(|data: &[u8]| cniscope::fuzzing::capture(data));
