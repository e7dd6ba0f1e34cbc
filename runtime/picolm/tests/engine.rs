//! The multi-sequence engine: batched decoding must give exactly what decoding each sequence
//! alone gives, prefixes are reused, and every way a sequence ends is reported.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure should panic loudly

use std::sync::Arc;

mod support;

use picolm::engine::{Engine, EngineConfig, FinishReason, SequenceRequest, StepEvent};
use picolm::tokenizer::Tokenizer;
use picolm::{GgufFile, Model, SamplingParams, Session};

fn model(preset: &str, ty: &str) -> (Arc<Model>, Tokenizer) {
    let file = Arc::new(GgufFile::open(support::model_path(preset, ty)).unwrap());
    let tok = Tokenizer::from_metadata(file.metadata()).unwrap();
    (Arc::new(Model::load(file).unwrap()), tok)
}

/// Greedy tokens of one prompt, decoded alone with a `Session`.
fn alone(model: &Model, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut s = Session::new(model, 256).unwrap();
    let mut out = vec![];
    let mut logits = s.eval(prompt).unwrap().to_vec();
    for _ in 0..n {
        let t = picolm::sampler::argmax(&logits);
        out.push(t);
        logits = s.eval(&[t]).unwrap().to_vec();
    }
    out
}

fn greedy(prompt: Vec<u32>, max_tokens: usize) -> SequenceRequest {
    SequenceRequest {
        prompt,
        params: SamplingParams::greedy(),
        max_tokens,
        ignore_eos: true,
        stop_tokens: vec![],
        processor: None,
    }
}

fn run_to_end(e: &mut Engine) -> Vec<StepEvent> {
    let mut all = vec![];
    let mut steps = 0;
    while e.has_work() {
        all.extend(e.step().unwrap());
        steps += 1;
        assert!(steps < 10_000, "engine does not terminate");
    }
    all
}

fn tokens_of(events: &[StepEvent], id: u64) -> Vec<u32> {
    events
        .iter()
        .filter_map(|e| match e {
            StepEvent::Token { seq, token } if *seq == id => Some(*token),
            _ => None,
        })
        .collect()
}

fn finish_of(events: &[StepEvent], id: u64) -> (FinishReason, usize, usize, usize) {
    events
        .iter()
        .find_map(|e| match e {
            StepEvent::Finished {
                seq,
                reason,
                prompt_tokens,
                completion_tokens,
                cached_tokens,
            } if *seq == id => Some((*reason, *prompt_tokens, *completion_tokens, *cached_tokens)),
            _ => None,
        })
        .expect("no Finished event")
}

#[test]
fn batched_sequences_decode_exactly_as_alone() {
    for (preset, ty) in [("tiny-llama", "q4_k_m"), ("tiny-qwen2", "q8_0")] {
        let (m, tok) = model(preset, ty);
        let prompts: Vec<Vec<u32>> = [
            "The capital of France",
            "Once upon a time there was a",
            "fn main() {",
        ]
        .iter()
        .map(|p| tok.encode(p, true, false).unwrap())
        .collect();
        let cfg = EngineConfig {
            n_ctx: 128,
            max_sequences: 4,
            max_batch_tokens: 7,
            zero_on_finish: false,
        };
        let mut e = Engine::new(m.clone(), tok.clone(), cfg).unwrap();
        // Staggered arrivals: the third joins while the others are decoding.
        let a = e.add(greedy(prompts[0].clone(), 20)).unwrap();
        let b = e.add(greedy(prompts[1].clone(), 12)).unwrap();
        let mut events = vec![];
        for _ in 0..5 {
            events.extend(e.step().unwrap());
        }
        let c = e.add(greedy(prompts[2].clone(), 16)).unwrap();
        events.extend(run_to_end(&mut e));
        for (id, p, n) in [
            (a, &prompts[0], 20),
            (b, &prompts[1], 12),
            (c, &prompts[2], 16),
        ] {
            assert_eq!(
                tokens_of(&events, id),
                alone(&m, p, n),
                "{preset}-{ty}: sequence {id} differs from decoding alone"
            );
            assert_eq!(
                finish_of(&events, id),
                (FinishReason::Length, p.len(), n, 0)
            );
        }
    }
}

#[test]
fn prefix_is_reused_and_output_unchanged() {
    let (m, tok) = model("tiny-llama", "q8_0");
    let cfg = EngineConfig {
        n_ctx: 128,
        max_sequences: 2,
        max_batch_tokens: 64,
        zero_on_finish: false,
    };
    let mut e = Engine::new(m.clone(), tok.clone(), cfg).unwrap();
    let first = tok
        .encode(
            "System: be brief. User: hello there, how are you",
            true,
            false,
        )
        .unwrap();
    let id = e.add(greedy(first.clone(), 6)).unwrap();
    let ev = run_to_end(&mut e);
    let reply = tokens_of(&ev, id);
    // The next turn starts with the whole first exchange.
    let mut second = first.clone();
    second.extend_from_slice(&reply[..5]);
    second.extend(tok.encode(" and then?", false, false).unwrap());
    let id2 = e.add(greedy(second.clone(), 8)).unwrap();
    let ev2 = run_to_end(&mut e);
    let (_, _, _, cached) = finish_of(&ev2, id2);
    // The cache holds the prompt and the 5 evaluated reply tokens (the 6th was never evaluated).
    assert_eq!(
        cached,
        first.len() + 5,
        "prefix reuse should skip the shared prefix"
    );
    assert_eq!(tokens_of(&ev2, id2), alone(&m, &second, 8));
}

#[test]
fn stop_cancel_and_limits() {
    let (m, tok) = model("tiny-qwen2", "q8_0");
    let cfg = EngineConfig {
        n_ctx: 48,
        max_sequences: 2,
        max_batch_tokens: 16,
        zero_on_finish: true,
    };
    let mut e = Engine::new(m.clone(), tok.clone(), cfg).unwrap();
    let p = tok.encode("hello world", true, false).unwrap();

    // A stop token: the first greedy token stops the sequence and is not emitted.
    let first = alone(&m, &p, 1)[0];
    let mut r = greedy(p.clone(), 10);
    r.ignore_eos = false;
    r.stop_tokens = vec![first];
    let id = e.add(r).unwrap();
    let ev = run_to_end(&mut e);
    assert!(tokens_of(&ev, id).is_empty());
    assert_eq!(finish_of(&ev, id).0, FinishReason::Stop);

    // Cancel mid-way.
    let id = e.add(greedy(p.clone(), 30)).unwrap();
    let mut ev = e.step().unwrap();
    ev.extend(e.step().unwrap());
    e.cancel(id);
    ev.extend(run_to_end(&mut e));
    assert_eq!(finish_of(&ev, id).0, FinishReason::Cancelled);
    assert!(tokens_of(&ev, id).len() <= 2);

    // The context bounds generation: prompt + generated ≤ n_ctx.
    let id = e.add(greedy(p.clone(), 1000)).unwrap();
    let ev = run_to_end(&mut e);
    let (reason, pt, ct, _) = finish_of(&ev, id);
    assert_eq!(reason, FinishReason::Length);
    assert_eq!(pt + ct, 48);

    // Too long a prompt, and all slots busy, are errors that say so.
    let long = vec![p[1]; 48];
    assert!(
        e.add(greedy(long, 1))
            .unwrap_err()
            .to_string()
            .contains("context")
    );
    e.add(greedy(p.clone(), 5)).unwrap();
    e.add(greedy(p.clone(), 5)).unwrap();
    assert!(
        e.add(greedy(p.clone(), 5))
            .unwrap_err()
            .to_string()
            .contains("busy")
    );
    assert!(e.add(greedy(vec![], 5)).is_err());
    assert!(
        e.add(greedy(vec![u32::MAX], 5))
            .unwrap_err()
            .to_string()
            .contains("vocabulary")
    );
}

#[test]
fn sampled_sequences_are_reproducible_in_a_batch() {
    let (m, tok) = model("tiny-llama", "q4_0");
    let run = |others: usize| {
        let cfg = EngineConfig {
            n_ctx: 96,
            max_sequences: 4,
            max_batch_tokens: 32,
            zero_on_finish: false,
        };
        let mut e = Engine::new(m.clone(), tok.clone(), cfg).unwrap();
        let p = tok.encode("Tell me a story", true, false).unwrap();
        let req = |seed| SequenceRequest {
            prompt: p.clone(),
            params: SamplingParams {
                seed: Some(seed),
                temperature: 0.9,
                ..Default::default()
            },
            max_tokens: 24,
            ignore_eos: true,
            stop_tokens: vec![],
            processor: None,
        };
        let id = e.add(req(5)).unwrap();
        for k in 0..others {
            e.add(req(100 + k as u64)).unwrap();
        }
        tokens_of(&run_to_end(&mut e), id)
    };
    assert_eq!(
        run(0),
        run(3),
        "a seeded sequence must not depend on its batch neighbours"
    );
}

#[test]
fn embeddings_are_normalised_and_deterministic() {
    let (m, tok) = model("tiny-qwen2", "q8_0");
    let mut e = Engine::new(m, tok.clone(), EngineConfig::default()).unwrap();
    let a = e
        .embed(&tok.encode("confidential computing", false, false).unwrap())
        .unwrap();
    let b = e
        .embed(&tok.encode("confidential computing", false, false).unwrap())
        .unwrap();
    let c = e
        .embed(
            &tok.encode("a completely different sentence", false, false)
                .unwrap(),
        )
        .unwrap();
    assert_eq!(a.len(), 256);
    assert_eq!(a, b);
    let norm: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4);
    let cos: f32 = a.iter().zip(&c).map(|(x, y)| x * y).sum();
    assert!(cos < 0.999, "different inputs should embed differently");
}
