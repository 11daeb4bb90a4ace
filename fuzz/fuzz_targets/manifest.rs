//! The manifest reader and the lint pipeline (`probity_fuzz::manifest`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| probity_fuzz::manifest(data));
