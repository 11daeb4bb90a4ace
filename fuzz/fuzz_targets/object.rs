//! The typed object decoder against the JSON-tree one (`probity_fuzz::object`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| probity_fuzz::object(data));
