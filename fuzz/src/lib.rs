//! The fuzz targets' bodies, one function per target. `cargo fuzz` calls them
//! from `fuzz_targets/`, and the ordinary test build replays every committed
//! input through the same functions (`tests/cli/fuzz_corpus.rs`), so each
//! `cargo test` proves the corpora without a fuzzer or sanitizer build.
//!
//! A function returns normally for any input; a panic or a failed assertion
//! is the finding.

use std::collections::BTreeMap;

use probity::admission::{mutate, review, validate};
use probity::lint::input::Input;
use probity::lint::policies::Policy;
use probity::lint::{lint, report};
use probity::policy::{Mode, PinMode, Reference};

/// AdmissionReview decoding and both webhook decisions: any body gives a
/// decode error or a response echoing the request uid.
pub fn admission(data: &[u8]) {
    let Ok(request) = review::decode(data) else {
        return;
    };
    let mut enforce = Policy::builtin();
    enforce.spec.mode = Mode::Enforce;
    let mut pin = Policy::builtin();
    pin.spec.images.pin = PinMode::Admission;
    let policies = [enforce, pin];
    let labels = BTreeMap::new();
    let response = validate::validate(&request, &policies, &labels, &validate::NoOwners)
        .into_review(&request.uid);
    assert_eq!(response["response"]["uid"], request.uid.as_str());
    // Without a resolver every pin fails, through the policy's failure mode.
    let mutated = futures::executor::block_on(mutate::mutate(
        &request,
        &policies,
        &labels,
        None,
        &validate::NoOwners,
    ));
    let _ = mutated.into_review(&request.uid);
}

/// The manifest reader and the whole lint pipeline: any UTF-8 text gives
/// findings, notes or located errors.
pub fn manifest(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let inputs = [Input {
        name: "fuzz.yaml".to_owned(),
        text: text.to_owned(),
        path: None,
    }];
    let result = lint(&inputs, &[Policy::builtin()]);
    let _ = report::to_json(&result);
    let _ = report::to_sarif(&result);
}

/// Image references: whatever parses prints back to the same reference.
/// The input is the bytes' longest UTF-8 prefix.
pub fn reference(data: &[u8]) {
    let input = match std::str::from_utf8(data) {
        Ok(text) => text,
        Err(e) => std::str::from_utf8(&data[..e.valid_up_to()]).unwrap_or_default(),
    };
    if let Ok(reference) = Reference::parse(input) {
        let printed = reference.to_string();
        let again = Reference::parse(&printed);
        assert_eq!(
            again.as_ref(),
            Ok(&reference),
            "{input:?} printed as {printed:?}"
        );
    }
}
