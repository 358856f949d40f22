//! The fuzz targets' checks (`fuzz/src/lib.rs`, included by path) run inside `cargo test`:
//! every committed seed in `fuzz/corpus/<target>/` and every crash input in
//! `fuzz/regressions/<target>/`, then a fixed number of seeded mutations of the seeds. The
//! coverage-guided search is libFuzzer's (`scripts/fuzz.sh`); this keeps what it found fixed.

#[path = "../../../../fuzz/src/lib.rs"]
mod oracles;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};

type Check = fn(&[u8]) -> Result<(), oracles::Violation>;

const TARGETS: [(&str, Check); 3] = [
    ("setup_rewrite", oracles::setup_rewrite),
    ("inspect_frames", oracles::inspect_frames),
    ("request_credential", oracles::request_credential),
];

/// Mutations per seed file: enough to reach the refusal paths, a few thousand runs in all.
const MUTATIONS_PER_SEED: usize = 300;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// The inputs in `dir` (dotfiles such as `.gitkeep` skipped), by name, in name order.
fn inputs(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.is_file()
                && !p
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with('.'))
        })
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect();
    files.sort();
    files
}

fn run(check: Check, name: &str, input: &[u8]) {
    if let Err(violation) = check(input) {
        panic!(
            "{name}: {violation}\ninput: {:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn seeds_and_regressions_hold_every_invariant() {
    for (target, check) in TARGETS {
        let seeds = inputs(&fuzz_dir().join("corpus").join(target));
        assert!(seeds.len() >= 5, "{target}: seed corpus missing");
        let regressions = inputs(&fuzz_dir().join("regressions").join(target));
        for (name, input) in seeds.iter().chain(&regressions) {
            run(check, name, input);
        }
    }
}

/// Byte strings that steer mutations into the parsers' branches: JSON structure, escapes,
/// the keys they look for, header names and separators.
const TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b",",
    b":",
    b"\\",
    b"\\u0000",
    b"\\ud800",
    b"\\u006f",
    b"1e400",
    b"-0",
    b"null",
    b" ",
    b"\t",
    b"\n",
    b"/",
    b"=",
    b";rate=",
    b"rate=0",
    b"\"setup\":",
    b"\"model\":",
    b"projects/",
    b"/locations/",
    b"\xff",
    b"\xc3\xa9",
    b"authorization: Bearer ",
    b"sec-websocket-protocol: livegate-key.",
    b"&key=",
    b"%20",
    b"\"usageMetadata\":{",
    b"\"tokenCount\":",
    b"\"data\":\"",
    b"\"mimeType\":\"audio/pcm",
];

fn mutate(rng: &mut StdRng, seed: &[u8], other: &[u8]) -> Vec<u8> {
    let mut data = seed.to_vec();
    for _ in 0..rng.gen_range(1..=4) {
        let at = rng.gen_range(0..=data.len());
        match rng.gen_range(0..5) {
            0 if !data.is_empty() => {
                let i = at.min(data.len() - 1);
                data[i] ^= 1 << rng.gen_range(0..8);
            }
            1 => {
                let end = rng.gen_range(at..=data.len());
                data.drain(at..end);
            }
            2 => {
                let token = TOKENS[rng.gen_range(0..TOKENS.len())];
                data.splice(at..at, token.iter().copied());
            }
            3 if !other.is_empty() => {
                let from = rng.gen_range(0..other.len());
                let to = rng.gen_range(from..=other.len());
                data.splice(at..at, other[from..to].iter().copied());
            }
            _ => data.truncate(at),
        }
    }
    data
}

#[test]
fn seeded_mutations_of_the_seeds_hold_every_invariant() {
    let mut rng = StdRng::seed_from_u64(0x11fe_9a7e);
    for (target, check) in TARGETS {
        let seeds = inputs(&fuzz_dir().join("corpus").join(target));
        for (i, (name, seed)) in seeds.iter().enumerate() {
            let other = &seeds[(i + 1) % seeds.len()].1;
            for n in 0..MUTATIONS_PER_SEED {
                let input = mutate(&mut rng, seed, other);
                run(check, &format!("{name} mutation {n}"), &input);
            }
        }
    }
}
