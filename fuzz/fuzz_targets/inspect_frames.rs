//! libFuzzer target: `livegate_fuzz::inspect_frames` (its invariants are documented there).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(violation) = livegate_fuzz::inspect_frames(data) {
        panic!("inspect_frames: {violation}");
    }
});
