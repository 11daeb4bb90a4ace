//! AdmissionReview decoding and both webhook decisions (`probity_fuzz::admission`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| probity_fuzz::admission(data));
