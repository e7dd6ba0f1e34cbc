//! Layer streaming on an mmap (each layer's pages mapped before it runs and dropped after, in
//! huge-page windows; embedding rows and norms read with `pread`) must not change a bit of the
//! output, for one sequence or a batch, and must leave nothing of the file mapped after a pass.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure should panic loudly

use std::sync::Arc;

mod support;

use picolm::forward::{BatchEntry, KvCache, Logits, OutputKind, Scratch};
use picolm::{GgufFile, Model};

const MODELS: [(&str, &str); 4] = [
    ("tiny-llama", "q4_k_m"),
    ("tiny-qwen2", "q8_0"),
    ("tiny-llama", "f16"),
    ("small-llama", "q4_k_m"),
];

fn load(preset: &str, ty: &str, streaming: bool) -> Model {
    let file = Arc::new(GgufFile::open(support::model_path(preset, ty)).unwrap());
    let m = Model::load(file).unwrap().with_layer_streaming(streaming);
    assert_eq!(m.layer_streaming, streaming);
    assert!(!m.is_staged(), "an mmap is read in place");
    m
}

/// Every position's logits for `prompt`, then `steps` greedy decode steps' logits.
fn logits(model: &Model, prompt: &[u32], steps: usize) -> Vec<f32> {
    let nv = model.config.n_vocab;
    let mut kv = KvCache::new(&model.config, prompt.len() + steps + 1);
    let mut scratch = Scratch::default();
    let mut out = vec![0f32; prompt.len() * nv];
    model
        .forward(prompt, &mut kv, &mut scratch, Logits::All, &mut out)
        .unwrap();
    let mut last = vec![0f32; nv];
    for _ in 0..steps {
        let t = picolm::sampler::argmax(&out[out.len() - nv..]);
        model
            .forward(&[t], &mut kv, &mut scratch, Logits::Last, &mut last)
            .unwrap();
        out.extend_from_slice(&last);
    }
    out
}

#[test]
fn streaming_gives_the_resident_logits_bit_for_bit() {
    let prompt = [1u32, 20, 300, 45, 5, 66, 7, 8, 900];
    for (preset, ty) in MODELS {
        let want = logits(&load(preset, ty, false), &prompt, 6);
        let got = logits(&load(preset, ty, true), &prompt, 6);
        assert!(
            got.iter()
                .map(|x| x.to_bits())
                .eq(want.iter().map(|x| x.to_bits())),
            "{preset}-{ty}: streaming logits differ from resident"
        );
    }
}

/// Three sequences of different lengths prefilled, then decoded together, one token each per
/// pass: every pass's logits.
fn batched(model: &Model) -> Vec<f32> {
    let nv = model.config.n_vocab;
    let prompts: [&[u32]; 3] = [&[3, 14, 15, 92], &[65, 35], &[89, 79, 32, 38, 46, 26]];
    let mut caches: Vec<KvCache> = (0..3).map(|_| KvCache::new(&model.config, 32)).collect();
    let mut scratch = Scratch::default();
    let mut out = vec![0f32; 3 * nv];
    let mut tokens: Vec<u32> = prompts.concat();
    let mut entries = Vec::new();
    let mut at = 0;
    for (i, p) in prompts.iter().enumerate() {
        entries.push(BatchEntry {
            cache: i,
            tokens: at..at + p.len(),
            output: Logits::Last,
        });
        at += p.len();
    }
    let mut all = Vec::new();
    for _ in 0..5 {
        model
            .forward_batch(
                &mut caches,
                &tokens,
                &entries,
                &mut scratch,
                OutputKind::Logits,
                &mut out,
            )
            .unwrap();
        all.extend_from_slice(&out);
        tokens = (0..3)
            .map(|i| picolm::sampler::argmax(&out[i * nv..(i + 1) * nv]))
            .collect();
        for (i, e) in entries.iter_mut().enumerate() {
            e.tokens = i..i + 1;
        }
    }
    all
}

#[test]
fn batched_streaming_decode_gives_the_resident_logits_bit_for_bit() {
    for (preset, ty) in MODELS {
        let want = batched(&load(preset, ty, false));
        let got = batched(&load(preset, ty, true));
        assert!(
            got.iter()
                .map(|x| x.to_bits())
                .eq(want.iter().map(|x| x.to_bits())),
            "{preset}-{ty}: batched streaming logits differ from resident"
        );
    }
}

/// Resident bytes of this process's mapping that starts at `start` (`/proc/self/smaps`).
fn mapped_bytes(start: *const u8) -> u64 {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let head = format!("{:x}-", start as usize);
    let mut lines = smaps.lines().skip_while(|l| !l.starts_with(&head));
    lines.next().expect("the model's mapping");
    let rss = lines.find_map(|l| l.strip_prefix("Rss:")).unwrap();
    rss.split_whitespace()
        .next()
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

#[test]
fn nothing_of_the_file_stays_mapped_after_a_streaming_pass() {
    let prompt = [5u32, 6, 7, 8];
    let resident = load("small-llama", "q4_k_m", false);
    let _ = logits(&resident, &prompt, 2);
    let file_len = resident.file.len();
    let held = mapped_bytes(resident.bytes().as_ptr());
    // The measurement itself: resident mode keeps the weights it touched mapped.
    assert!(
        held > file_len / 2,
        "resident mode holds {held} of {file_len} bytes"
    );
    for (preset, ty) in MODELS {
        let m = load(preset, ty, true);
        assert_eq!(
            mapped_bytes(m.bytes().as_ptr()),
            0,
            "{preset}-{ty}: mapped after loading"
        );
        let _ = logits(&m, &prompt, 2);
        assert_eq!(
            mapped_bytes(m.bytes().as_ptr()),
            0,
            "{preset}-{ty}: mapped after streaming passes"
        );
    }
}
