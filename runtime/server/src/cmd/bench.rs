//! `a3s-power bench`: llama-bench-style throughput of one model, as JSON on stdout.
//!
//! `pp` evaluates a prompt of `--prompt-tokens` fixed pseudo-random token ids as a batch;
//! `tg` then decodes `--gen-tokens` tokens one at a time (greedy). bench/bench.py runs this and
//! llama.cpp on the same file in the same run and prints the ratios.
//!
//! `--sequences K` decodes K sequences together (K prompts, then one token per sequence per
//! forward pass, as the server's engine batches them); `tg_tok_s` is then the aggregate.
//! `--ctx-size` sizes each KV cache (default: prompt + generated + 1), so that peak RSS can be
//! compared at a fixed context.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use picolm::Model;
use picolm::forward::{BatchEntry, KvCache, Logits, OutputKind, Scratch};
use picolm::session::PREFILL_CHUNK;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Path to a GGUF model file (or an encrypted `.enc` one, with --key).
    #[arg(long, short)]
    pub model: PathBuf,
    /// Prompt length for the prefill measurement.
    #[arg(long, default_value_t = 512)]
    pub prompt_tokens: usize,
    /// Tokens decoded one by one for the decode measurement.
    #[arg(long, default_value_t = 128)]
    pub gen_tokens: usize,
    /// Worker threads.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Stream weights one layer at a time (O(layer) resident memory instead of O(model)).
    #[arg(long)]
    pub layer_streaming: bool,
    /// KV cache positions per sequence (default: prompt + generated tokens + 1).
    #[arg(long)]
    pub ctx_size: Option<usize>,
    /// Sequences decoded together, one token each per forward pass; tg is their aggregate.
    #[arg(long, default_value_t = 1)]
    pub sequences: usize,
    #[command(flatten)]
    pub decrypt: super::model_file::DecryptArgs,
}

/// Peak resident set size of this process (VmHWM), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

pub fn run(a: BenchArgs) -> Result<()> {
    if a.threads == 0 || a.prompt_tokens == 0 || a.sequences == 0 {
        bail!("--threads, --prompt-tokens and --sequences must be at least 1");
    }
    let n_ctx = a.ctx_size.unwrap_or(a.prompt_tokens + a.gen_tokens + 1);
    if n_ctx < a.prompt_tokens + a.gen_tokens {
        bail!(
            "--ctx-size {n_ctx} is smaller than --prompt-tokens + --gen-tokens ({})",
            a.prompt_tokens + a.gen_tokens
        );
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(a.threads)
        .build_global()
        .context("starting the worker threads")?;
    let opened = super::model_file::open(&a.model, &a.decrypt)?;
    let model = Model::load(opened.file.clone())?.with_layer_streaming(a.layer_streaming);
    let (k, nv) = (a.sequences, model.config.n_vocab);
    // A fixed LCG: the same ids every run, spread over the vocabulary; each sequence its own.
    let mut s = 0x2545_f491_4f6c_dd1du64;
    let prompts: Vec<Vec<u32>> = (0..k)
        .map(|_| {
            (0..a.prompt_tokens)
                .map(|_| {
                    s = s
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((s >> 33) % nv as u64) as u32
                })
                .collect()
        })
        .collect();
    let mut caches: Vec<KvCache> = (0..k).map(|_| KvCache::new(&model.config, n_ctx)).collect();
    let mut scratch = Scratch::default();
    let mut logits = vec![0f32; k * nv];
    let mut next = vec![0u32; k];
    let entries: Vec<BatchEntry> = (0..k)
        .map(|i| BatchEntry {
            cache: i,
            tokens: i..i + 1,
            output: Logits::Last,
        })
        .collect();
    // Prefill: each sequence's prompt in chunks, as `Session::eval` does.
    let t = Instant::now();
    for (i, p) in prompts.iter().enumerate() {
        let row = &mut logits[i * nv..(i + 1) * nv];
        for chunk in p.chunks(PREFILL_CHUNK) {
            model.forward(chunk, &mut caches[i], &mut scratch, Logits::Last, row)?;
        }
        next[i] = picolm::sampler::argmax(row);
    }
    let pp_s = t.elapsed().as_secs_f64();
    // Decode: one token of every sequence per forward pass.
    let t = Instant::now();
    for _ in 0..a.gen_tokens {
        model.forward_batch(
            &mut caches,
            &next,
            &entries,
            &mut scratch,
            OutputKind::Logits,
            &mut logits,
        )?;
        for (i, n) in next.iter_mut().enumerate() {
            *n = picolm::sampler::argmax(&logits[i * nv..(i + 1) * nv]);
        }
    }
    let tg_s = t.elapsed().as_secs_f64();
    let out = serde_json::json!({
        "engine": "picolm",
        "model": a.model.display().to_string(),
        "threads": a.threads,
        "isa": format!("{:?}", picolm::quant::isa()),
        "layer_streaming": model.layer_streaming,
        "huge_page_share": model.huge_page_share(),
        "encrypted": a.decrypt.key.is_some(),
        "decrypt": a.decrypt.key.is_some().then(|| a.decrypt.decrypt.clone()),
        "prompt_tokens": a.prompt_tokens,
        "gen_tokens": a.gen_tokens,
        "ctx_size": n_ctx,
        "sequences": k,
        "pp_tok_s": (k * a.prompt_tokens) as f64 / pp_s,
        "tg_tok_s": (k * a.gen_tokens) as f64 / tg_s,
        "ttft_ms": pp_s * 1e3 / k as f64,
        "last_tokens": next,
        "peak_rss_bytes": peak_rss_bytes(),
    });
    println!("{out}");
    Ok(())
}
