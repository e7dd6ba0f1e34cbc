//! `a3s-power run`: load a GGUF file and stream generated text to stdout.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use picolm::chat::{ChatMessage, ChatTemplate};
use picolm::tokenizer::Tokenizer;
use picolm::{Model, Sampler, SamplingParams, Session};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Path to a GGUF model file (or an encrypted `.enc` one, with --key).
    #[arg(long, short)]
    pub model: PathBuf,
    /// The prompt (raw text, or the user message with --chat).
    #[arg(long, short)]
    pub prompt: String,
    /// Tokens to generate at most.
    #[arg(long, short = 'n', default_value_t = 128)]
    pub max_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, short, default_value_t = 0.8)]
    pub temperature: f32,
    /// Keep only the K most likely tokens (0: off).
    #[arg(long, default_value_t = 40)]
    pub top_k: usize,
    /// Nucleus sampling threshold (1: off).
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    /// Drop tokens less likely than min_p times the most likely (0: off).
    #[arg(long, default_value_t = 0.05)]
    pub min_p: f32,
    /// Repetition penalty over the last 64 tokens (1: off).
    #[arg(long, default_value_t = 1.0)]
    pub repeat_penalty: f32,
    /// Random seed: the same seed gives the same text.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Context size in tokens (default: the model's, at most 4096).
    #[arg(long)]
    pub ctx_size: Option<usize>,
    /// Treat the prompt as a user message and apply the model's chat template.
    #[arg(long)]
    pub chat: bool,
    /// System message, with --chat.
    #[arg(long, requires = "chat")]
    pub system: Option<String>,
    /// Do not stop at end-of-generation tokens: generate exactly --max-tokens (benchmarks).
    #[arg(long)]
    pub ignore_eos: bool,
    /// Stream weights one layer at a time (O(layer) resident memory instead of O(model)).
    #[arg(long)]
    pub layer_streaming: bool,
    #[command(flatten)]
    pub decrypt: super::model_file::DecryptArgs,
}

pub fn run(a: RunArgs) -> Result<()> {
    if let Some(t) = a.threads {
        if t == 0 {
            bail!("--threads must be at least 1");
        }
        rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build_global()
            .context("starting the worker threads")?;
    }
    let t0 = Instant::now();
    let opened = super::model_file::open(&a.model, &a.decrypt)?;
    let file = opened.file.clone();
    let model = Model::load(file.clone())?.with_layer_streaming(a.layer_streaming);
    let tokenizer = Tokenizer::from_metadata(file.metadata())?;
    let c = &model.config;
    let n_ctx = a.ctx_size.unwrap_or(c.n_ctx_train.min(4096));

    let (text, parse_special) = if a.chat {
        let template = ChatTemplate::from_metadata(file.metadata())?;
        let mut messages = Vec::new();
        if let Some(s) = &a.system {
            messages.push(ChatMessage::new("system", s));
        }
        messages.push(ChatMessage::new("user", &a.prompt));
        (template.render(&messages, true, None)?, true)
    } else {
        (a.prompt.clone(), false)
    };
    // Templates that spell out BOS themselves must not get a second one.
    let bos_in_text = tokenizer
        .bos()
        .and_then(|b| tokenizer.piece(b, true).ok())
        .is_some_and(|p| !p.is_empty() && text.as_bytes().starts_with(&p));
    let prompt = tokenizer.encode(&text, !bos_in_text, parse_special)?;
    if prompt.is_empty() {
        bail!("the prompt is empty after tokenization");
    }
    if prompt.len() >= n_ctx {
        bail!(
            "the prompt has {} tokens, the context only {n_ctx}",
            prompt.len()
        );
    }
    let params = SamplingParams {
        temperature: a.temperature,
        top_k: a.top_k,
        top_p: a.top_p,
        min_p: a.min_p,
        repeat_penalty: a.repeat_penalty,
        seed: a.seed,
        ..Default::default()
    };
    params.validate()?;
    let mut sampler = Sampler::new(params);
    let mut session = Session::new(&model, n_ctx)?;
    eprintln!(
        "a3s-power: {} ({}, {} layers, vocab {}), loaded in {:.0} ms; prompt {} tokens; context {n_ctx}; {} threads",
        a.model.display(),
        c.arch.name(),
        c.n_layer,
        c.n_vocab,
        t0.elapsed().as_secs_f64() * 1e3,
        prompt.len(),
        rayon::current_num_threads(),
    );

    for &t in &prompt {
        sampler.accept(t);
    }
    let t_prefill = Instant::now();
    let mut logits = session.eval(&prompt)?;
    let prefill_s = t_prefill.elapsed().as_secs_f64();
    let budget = a.max_tokens.min(n_ctx - prompt.len());
    let mut decoder = tokenizer.stream_decoder();
    let mut out = std::io::stdout().lock();
    let t_decode = Instant::now();
    let mut generated = 0;
    for i in 0..budget {
        let tok = sampler.sample(logits);
        if !a.ignore_eos && tokenizer.is_eog(tok) {
            break;
        }
        sampler.accept(tok);
        generated += 1;
        let piece = decoder.push(tok)?;
        if !piece.is_empty() {
            out.write_all(piece.as_bytes())?;
            out.flush()?;
        }
        if i + 1 == budget {
            break;
        }
        logits = session.eval(&[tok])?;
    }
    let rest = decoder.flush();
    out.write_all(rest.as_bytes())?;
    out.write_all(b"\n")?;
    out.flush()?;
    let decode_s = t_decode.elapsed().as_secs_f64();
    eprintln!(
        "a3s-power: prefill {} tokens in {:.1} ms ({:.1} tok/s); generated {generated} tokens at {:.1} tok/s",
        prompt.len(),
        prefill_s * 1e3,
        prompt.len() as f64 / prefill_s,
        generated as f64 / decode_s.max(1e-9),
    );
    Ok(())
}
