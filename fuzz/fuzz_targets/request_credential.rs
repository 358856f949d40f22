//! libFuzzer target: `livegate_fuzz::request_credential` (its invariants are documented there).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(violation) = livegate_fuzz::request_credential(data) {
        panic!("request_credential: {violation}");
    }
});
