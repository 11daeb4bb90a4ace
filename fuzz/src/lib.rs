//! The fuzz targets' bodies, one function per target. `cargo fuzz` calls them
//! from `fuzz_targets/`, and the ordinary test build replays every committed
//! input through the same functions (`tests/cli/fuzz_corpus.rs`), so each
//! `cargo test` proves the corpora without a fuzzer or sanitizer build.
//!
//! A function returns normally for any input; a panic or a failed assertion
//! is the finding.

use std::collections::BTreeMap;

use probity::admission::{mutate, review, validate};
use probity::image::Reference;
use probity::lint::{lint, report};
use probity::manifest::Input;
use probity::policy::Policy;
use probity::policy::pod::{MAX_ELEMENTS, with_element_budget};
use probity::policy::{Classified, Mode, PinMode, Workload};

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
/// findings, notes or located errors, and wherever the fast reader takes a
/// document it reads it exactly as saphyr does.
pub fn manifest(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(disagreement) = probity::manifest::yaml::cross_check(text) {
        panic!("{disagreement}");
    }
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

/// The typed one-pass object decoder the webhooks use: any text gives a
/// classification or a located error, and whatever it reads as a workload
/// it reads the same as the JSON-tree decoder (`probity lint`, the
/// operator's caches) does: kind, name, labels, exemptions, controller,
/// every container with its digest.
pub fn object(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let typed = with_element_budget(MAX_ELEMENTS, || Workload::classify_json(text));
    let Ok(Classified::Workload(typed)) = typed else {
        return;
    };
    // The tree keeps the last of duplicate keys where the typed decoder
    // refuses them, so only inputs both read are compared.
    let Ok(tree) = serde_json::from_str::<serde_json::Value>(text) else {
        return;
    };
    let Ok(Classified::Workload(from_tree)) = Workload::classify(&tree) else {
        panic!("read as a workload from text only: {text:?}");
    };
    assert_eq!(typed.kind, from_tree.kind);
    assert_eq!(typed.name, from_tree.name);
    assert_eq!(typed.namespace, from_tree.namespace);
    assert_eq!(typed.labels, from_tree.labels);
    assert_eq!(typed.exemptions, from_tree.exemptions);
    assert_eq!(typed.controller, from_tree.controller);
    assert_eq!(typed.pod, from_tree.pod, "{text:?}");
}
