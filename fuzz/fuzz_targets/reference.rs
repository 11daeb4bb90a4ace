//! Image references: never panic, and whatever parses prints back to the
//! same reference.
#![no_main]

use libfuzzer_sys::fuzz_target;
use probity::policy::Reference;

fuzz_target!(|input: &str| {
    if let Ok(reference) = Reference::parse(input) {
        let printed = reference.to_string();
        let again = Reference::parse(&printed);
        assert_eq!(again.as_ref(), Ok(&reference), "{input:?} printed as {printed:?}");
    }
});
