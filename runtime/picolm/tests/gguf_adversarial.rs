//! The GGUF reader on hostile files: truncations, bit flips and extreme counts/offsets
//! applied to real (generated) files from the fuzz seed corpus. Every outcome must be `Ok` or
//! an `Err` with a message; a panic fails the test. This is the stable-toolchain companion of
//! the `gguf_header` cargo-fuzz target, run in CI.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure should panic loudly

use std::path::Path;

use picolm::gguf::GgufHeader;
use picolm::model::Config;
use picolm::tokenizer::Tokenizer;

fn seeds() -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/gguf_header");
    let mut out = vec![];
    for e in std::fs::read_dir(&dir).unwrap() {
        out.push(std::fs::read(e.unwrap().path()).unwrap());
    }
    assert!(out.len() >= 2, "seed corpus missing in {}", dir.display());
    out
}

/// Interpret the bytes as far as they go, as loading a model would.
fn exercise(bytes: &[u8]) -> Result<(), String> {
    let h = GgufHeader::parse(bytes).map_err(|e| e.to_string())?;
    let _ = Config::from_metadata(&h.metadata);
    if let Ok(t) = Tokenizer::from_metadata(&h.metadata) {
        let ids = t
            .encode("Hello, world! 你好 🦀 <s>", true, true)
            .map_err(|e| e.to_string())?;
        let _ = t.decode(&ids, true);
    }
    Ok(())
}

struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn seeds_parse_cleanly() {
    for s in seeds() {
        exercise(&s).unwrap();
    }
}

#[test]
fn every_prefix_is_handled() {
    for s in seeds() {
        // Every prefix of the header region, then a stride through the data.
        let h = GgufHeader::parse(&s).unwrap();
        let header_end = h.data_offset as usize;
        for n in (0..header_end).chain((header_end..s.len()).step_by(97)) {
            let r = exercise(&s[..n]);
            assert!(
                r.is_err(),
                "a {n}-byte prefix of a {}-byte file was accepted",
                s.len()
            );
        }
    }
}

#[test]
fn random_mutations_never_panic() {
    let seeds = seeds();
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let extremes = [
        0u64,
        1,
        0x7f,
        0xff,
        u32::MAX as u64,
        u64::MAX,
        u64::MAX / 2,
        1 << 40,
    ];
    let (mut ok, mut err) = (0, 0);
    for i in 0..20_000 {
        let mut b = seeds[i % seeds.len()].clone();
        // Mutate mostly in the header region, where counts and offsets live.
        let hot = GgufHeader::parse(&b)
            .map(|h| h.data_offset as usize)
            .unwrap_or(b.len())
            .min(b.len());
        for _ in 0..1 + rng.below(4) {
            let hot = hot.min(b.len());
            match rng.below(4) {
                0 => {
                    let at = rng.below(hot);
                    b[at] ^= 1 << rng.below(8);
                }
                1 => {
                    let at = rng.below(hot.saturating_sub(8).max(1));
                    let v = extremes[rng.below(extremes.len())].to_le_bytes();
                    let n = (b.len() - at).min(8);
                    b[at..at + n].copy_from_slice(&v[..n]);
                }
                2 => {
                    let at = rng.below(hot);
                    b[at] = rng.next() as u8;
                }
                _ => {
                    let n = rng.below(b.len());
                    b.truncate(n);
                }
            }
            if b.is_empty() {
                break;
            }
        }
        match exercise(&b) {
            Ok(()) => ok += 1,
            Err(e) => {
                assert!(!e.is_empty());
                err += 1;
            }
        }
    }
    eprintln!("20000 mutants: {ok} accepted, {err} rejected with an error, 0 panics");
    assert!(err > 1000, "mutations should mostly be rejected");
}
