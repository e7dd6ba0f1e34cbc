//! Steady-state decoding allocates nothing, with the weights resident or layer-streamed: a
//! counting global allocator watches every thread while the engine decodes, after a warm-up
//! that sizes its buffers.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure should panic loudly

use std::sync::Arc;
use std::sync::atomic::Ordering;

mod support;

use picolm::engine::{Engine, EngineConfig, SequenceRequest};
use picolm::tokenizer::Tokenizer;
use picolm::{GgufFile, Model, SamplingParams};

#[global_allocator]
static GLOBAL: support::Counting = support::Counting;

/// The allocation count is process-wide: the tests of this file run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn load(preset: &str, ty: &str, streaming: bool) -> (Arc<Model>, Tokenizer) {
    let file = Arc::new(GgufFile::open(support::model_path(preset, ty)).unwrap());
    let tok = Tokenizer::from_metadata(file.metadata()).unwrap();
    let model = Model::load(file).unwrap().with_layer_streaming(streaming);
    (Arc::new(model), tok)
}

#[test]
fn decoding_does_not_allocate_per_token() {
    decode_allocates_nothing("tiny-llama", false);
}

#[test]
fn layer_streamed_decoding_does_not_allocate_per_token() {
    // small-llama spans many huge pages: each token maps and drops every layer's.
    decode_allocates_nothing("small-llama", true);
}

fn decode_allocates_nothing(preset: &str, streaming: bool) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (model, tok) = load(preset, "q4_k_m", streaming);
    // The engine runs inside a pool, as the server's worker does: rayon's own job queues are
    // then per-worker deques that are reused, not the global injector.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    let (warm, measured, per_step) = pool.install(|| {
        let cfg = EngineConfig {
            n_ctx: 256,
            max_sequences: 2,
            max_batch_tokens: 64,
            zero_on_finish: false,
        };
        let mut e = Engine::new(model, tok.clone(), cfg).unwrap();
        for seed in [1, 2] {
            e.add(SequenceRequest {
                prompt: tok
                    .encode("A steady state needs no allocation", true, false)
                    .unwrap(),
                params: SamplingParams {
                    seed: Some(seed),
                    ..Default::default()
                },
                max_tokens: 200,
                ignore_eos: true,
                stop_tokens: vec![],
                processor: None,
            })
            .unwrap();
        }
        let mut events = Vec::with_capacity(16);
        // Warm-up: prefill plus the first decode steps grow every buffer to its size.
        for _ in 0..8 {
            events.clear();
            e.step_into(&mut events).unwrap();
        }
        let warm = support::ALLOCS.load(Ordering::SeqCst);
        let steps = 64;
        for _ in 0..steps {
            events.clear();
            e.step_into(&mut events).unwrap();
            assert_eq!(events.len(), 2, "both sequences decode one token per step");
        }
        let measured = support::ALLOCS.load(Ordering::SeqCst) - warm;
        (warm, measured, measured as f64 / steps as f64)
    });
    eprintln!(
        "{preset} (streaming: {streaming}): warm-up allocations {warm}; 64 decode steps × 2 sequences: {measured} allocations ({per_step:.2}/step)"
    );
    assert_eq!(
        measured, 0,
        "steady-state decode allocated {measured} times in 64 steps"
    );
}
