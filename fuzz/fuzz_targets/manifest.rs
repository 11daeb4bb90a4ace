//! The manifest reader and the whole lint pipeline: any bytes give
//! findings, notes or located errors, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use probity::lint::input::Input;
use probity::lint::policies::Policy;
use probity::lint::{lint, report};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let inputs = [Input {
        name: "fuzz.yaml".to_owned(),
        text: text.to_owned(),
    }];
    let result = lint(&inputs, &[Policy::builtin()]);
    let _ = report::to_json(&result);
    let _ = report::to_sarif(&result);
});
