//! libFuzzer target: `livegate_fuzz::setup_rewrite` (its invariants are documented there).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(violation) = livegate_fuzz::setup_rewrite(data) {
        panic!("setup_rewrite: {violation}");
    }
});
