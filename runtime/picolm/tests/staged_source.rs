//! A streaming (non-resident) byte source, as an encrypted model is: weights are staged one
//! layer at a time through `read_at` into a reusable buffer. Here the source is a plain file
//! read with `pread`, so the test isolates the staging machinery from any cipher: logits must be
//! bit-identical to the mmap path, each decode step must read each weight once (and nothing
//! else but one embedding row), steady-state decode must not allocate, and a failing source must
//! be an error naming it, never a panic.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure should panic loudly

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

mod support;

use picolm::engine::{Engine, EngineConfig, SequenceRequest};
use picolm::forward::{KvCache, Logits, Scratch};
use picolm::tokenizer::Tokenizer;
use picolm::{ByteSource, GgufFile, Model, SamplingParams};

#[global_allocator]
static GLOBAL: support::Counting = support::Counting;

/// The allocation count is process-wide: the tests of this file run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A file read with `pread`: nothing is addressable, as with a decrypting source.
#[derive(Debug)]
struct PreadSource {
    file: File,
    len: u64,
    reads: AtomicU64,
    bytes: AtomicU64,
    /// Reads fail once `reads` reaches this.
    fail_at: AtomicU64,
}

impl PreadSource {
    fn open(p: &Path) -> Self {
        let file = File::open(p).unwrap();
        let len = file.metadata().unwrap().len();
        PreadSource {
            file,
            len,
            reads: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            fail_at: AtomicU64::new(u64::MAX),
        }
    }
}

impl ByteSource for PreadSource {
    fn len(&self) -> u64 {
        self.len
    }
    fn resident(&self) -> Option<&[u8]> {
        None
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> picolm::Result<()> {
        let n = self.reads.fetch_add(1, Ordering::SeqCst);
        if n >= self.fail_at.load(Ordering::SeqCst) {
            return Err(picolm::Error::Source(format!(
                "test source: read {n} at offset {offset} refused"
            )));
        }
        self.bytes.fetch_add(buf.len() as u64, Ordering::SeqCst);
        self.file
            .read_exact_at(buf, offset)
            .map_err(|e| picolm::Error::Source(format!("test source at {offset}: {e}")))
    }
}

fn staged(preset: &str, ty: &str) -> (Arc<Model>, Arc<PreadSource>) {
    let path = support::model_path(preset, ty);
    let src = Arc::new(PreadSource::open(&path));
    struct Shared(Arc<PreadSource>);
    impl std::fmt::Debug for Shared {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            self.0.fmt(f)
        }
    }
    impl ByteSource for Shared {
        fn len(&self) -> u64 {
            self.0.len()
        }
        fn resident(&self) -> Option<&[u8]> {
            None
        }
        fn read_at(&self, offset: u64, buf: &mut [u8]) -> picolm::Result<()> {
            self.0.read_at(offset, buf)
        }
    }
    let file = GgufFile::from_source(&path, Box::new(Shared(src.clone()))).unwrap();
    let model = Model::load(Arc::new(file)).unwrap();
    assert!(model.is_staged() && model.layer_streaming);
    (Arc::new(model), src)
}

fn resident(preset: &str, ty: &str) -> Model {
    Model::load(Arc::new(
        GgufFile::open(support::model_path(preset, ty)).unwrap(),
    ))
    .unwrap()
}

fn all_logits(model: &Model, tokens: &[u32]) -> picolm::Result<Vec<f32>> {
    let mut kv = KvCache::new(&model.config, 64);
    let mut scratch = Scratch::default();
    let mut out = vec![0f32; tokens.len() * model.config.n_vocab];
    model.forward(tokens, &mut kv, &mut scratch, Logits::All, &mut out)?;
    let next = picolm::sampler::argmax(&out[out.len() - model.config.n_vocab..]);
    let mut last = vec![0f32; model.config.n_vocab];
    model.forward(&[next], &mut kv, &mut scratch, Logits::Last, &mut last)?;
    out.extend(last);
    Ok(out)
}

#[test]
fn staged_weights_give_the_resident_logits_bit_for_bit() {
    let _serial = serial();
    let prompt = [1u32, 20, 300, 45, 5, 66, 7];
    for (preset, ty) in [
        ("tiny-llama", "q4_k_m"),
        ("tiny-qwen2", "q8_0"),
        ("tiny-llama", "f16"),
    ] {
        let want = all_logits(&resident(preset, ty), &prompt).unwrap();
        let (m, _) = staged(preset, ty);
        let got = all_logits(&m, &prompt).unwrap();
        assert!(got == want, "{preset}-{ty}: staged logits differ");
    }
}

#[test]
fn staged_decode_reads_each_weight_once_and_allocates_nothing() {
    let _serial = serial();
    let (model, src) = staged("tiny-llama", "q4_k_m");
    let tok = Tokenizer::from_metadata(model.file.metadata()).unwrap();
    let per_token = model.weight_bytes_per_token() as u64;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    let (allocs, bytes, reads) = pool.install(|| {
        let cfg = EngineConfig {
            n_ctx: 128,
            max_sequences: 1,
            max_batch_tokens: 64,
            zero_on_finish: false,
        };
        let mut e = Engine::new(model.clone(), tok.clone(), cfg).unwrap();
        e.add(SequenceRequest {
            prompt: tok.encode("Staged weights", true, false).unwrap(),
            params: SamplingParams {
                seed: Some(3),
                ..Default::default()
            },
            max_tokens: 100,
            ignore_eos: true,
            stop_tokens: vec![],
            processor: None,
        })
        .unwrap();
        let mut events = Vec::with_capacity(16);
        for _ in 0..6 {
            events.clear();
            e.step_into(&mut events).unwrap();
        }
        let (a0, b0, r0) = (
            support::ALLOCS.load(Ordering::SeqCst),
            src.bytes.load(Ordering::SeqCst),
            src.reads.load(Ordering::SeqCst),
        );
        let steps = 32u64;
        for _ in 0..steps {
            events.clear();
            e.step_into(&mut events).unwrap();
            assert_eq!(events.len(), 1);
        }
        (
            support::ALLOCS.load(Ordering::SeqCst) - a0,
            (src.bytes.load(Ordering::SeqCst) - b0) / steps,
            (src.reads.load(Ordering::SeqCst) - r0) / steps,
        )
    });
    let layers = model.layers.len() as u64;
    eprintln!(
        "staged decode: {bytes} bytes in {reads} reads per token (weights {per_token}), {allocs} allocations in 32 steps"
    );
    assert_eq!(
        allocs, 0,
        "steady-state staged decode allocated {allocs} times"
    );
    // Each layer's matrices (one run each, alignment padding included), the head's slices and
    // one embedding row: the weights once, plus at most 4 KiB of padding per layer.
    assert!(
        bytes >= per_token && bytes <= per_token + layers * 4096,
        "{bytes} bytes read per token, weights are {per_token}"
    );
    assert!(reads <= 2 * layers + 1 + 16, "{reads} reads per token");
}

#[test]
fn a_failing_source_is_an_error_naming_it_never_a_panic() {
    let _serial = serial();
    let prompt = [1u32, 2, 3];
    let (m, src) = staged("tiny-qwen2", "q8_0");
    src.reads.store(0, Ordering::SeqCst);
    let ok = all_logits(&m, &prompt).unwrap();
    let total = src.reads.load(Ordering::SeqCst);
    assert!(total > 2 * m.layers.len() as u64);
    // Fail at every read of the two passes in turn: embeddings, each layer, the head slices.
    for k in 0..total {
        src.reads.store(0, Ordering::SeqCst);
        src.fail_at.store(k, Ordering::SeqCst);
        let e = all_logits(&m, &prompt)
            .expect_err("refused read")
            .to_string();
        assert!(
            e.starts_with("model source: test source: read") && e.contains("refused"),
            "{e}"
        );
    }
    // And it recovers once the source does.
    src.fail_at.store(u64::MAX, Ordering::SeqCst);
    assert!(all_logits(&m, &prompt).unwrap() == ok);
}
