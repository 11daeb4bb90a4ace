//! Image reference parse and print round trip (`probity_fuzz::reference`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| probity_fuzz::reference(data));
