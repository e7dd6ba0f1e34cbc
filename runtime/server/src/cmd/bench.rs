//! `a3s-power bench`: llama-bench-style throughput of one model, as JSON on stdout.
//!
//! `pp` evaluates a prompt of `--prompt-tokens` fixed pseudo-random token ids as a batch;
//! `tg` then decodes `--gen-tokens` tokens one at a time (greedy). bench/bench.py runs this and
//! llama.cpp on the same file in the same run and prints the ratios.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use picolm::{Model, Session};

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
    if a.threads == 0 || a.prompt_tokens == 0 {
        bail!("--threads and --prompt-tokens must be at least 1");
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(a.threads)
        .build_global()
        .context("starting the worker threads")?;
    let opened = super::model_file::open(&a.model, &a.decrypt)?;
    let model = Model::load(opened.file.clone())?.with_layer_streaming(a.layer_streaming);
    let nv = model.config.n_vocab as u64;
    // A fixed LCG: the same ids every run, spread over the vocabulary.
    let mut s = 0x2545_f491_4f6c_dd1du64;
    let prompt: Vec<u32> = (0..a.prompt_tokens)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 33) % nv) as u32
        })
        .collect();
    let mut session = Session::new(&model, a.prompt_tokens + a.gen_tokens + 1)?;
    let t = Instant::now();
    let logits = session.eval(&prompt)?;
    let mut tok = picolm::sampler::argmax(logits);
    let pp_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for _ in 0..a.gen_tokens {
        let logits = session.eval(&[tok])?;
        tok = picolm::sampler::argmax(logits);
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
        "pp_tok_s": a.prompt_tokens as f64 / pp_s,
        "tg_tok_s": a.gen_tokens as f64 / tg_s,
        "ttft_ms": pp_s * 1e3,
        "peak_rss_bytes": peak_rss_bytes(),
    });
    println!("{out}");
    Ok(())
}
