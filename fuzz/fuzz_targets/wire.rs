#![no_main]
//! `cniscope::fuzzing::wire`: see there.
libfuzzer_sys::fuzz_target!(|data: &[u8]| cniscope::fuzzing::wire(data));
