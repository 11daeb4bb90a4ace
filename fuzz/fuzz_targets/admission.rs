//! AdmissionReview decoding and both webhook decisions: any body gives a
//! decode error or a response echoing the request uid, never a panic.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use probity::admission::{mutate, review, validate};
use probity::lint::policies::Policy;
use probity::policy::{Mode, PinMode};

fuzz_target!(|data: &[u8]| {
    let Ok(request) = review::decode(data) else {
        return;
    };
    let mut enforce = Policy::builtin();
    enforce.spec.mode = Mode::Enforce;
    let mut pin = Policy::builtin();
    pin.spec.images.pin = PinMode::Admission;
    let policies = [enforce, pin];
    let labels = BTreeMap::new();
    let response = validate::validate(&request, &policies, &labels).into_review(&request.uid);
    assert_eq!(response["response"]["uid"], request.uid.as_str());
    // Without a resolver every pin fails, through the policy's failure mode.
    let mutated = futures::executor::block_on(mutate::mutate(&request, &policies, &labels, None));
    let _ = mutated.into_review(&request.uid);
});
