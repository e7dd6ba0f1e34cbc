//! `a3s-power inspect`: what a GGUF file is, without running it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use clap::Args;
use picolm::tokenizer::Tokenizer;
use picolm::{GgufFile, Model};

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Path to a GGUF model file.
    pub file: PathBuf,
    /// Context size for the KV-cache estimate.
    #[arg(long, default_value_t = 2048)]
    pub ctx_size: usize,
    /// Also list every tensor.
    #[arg(long)]
    pub tensors: bool,
}

const MIB: f64 = 1024.0 * 1024.0;

/// `println!` that ends the command quietly when stdout is closed (`inspect ... | head`)
/// instead of panicking on the broken pipe.
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write;
        if let Err(e) = writeln!(std::io::stdout(), $($t)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return Ok(());
            }
            return Err(e.into());
        }
    }};
}

pub fn run(a: InspectArgs) -> Result<()> {
    let file = Arc::new(GgufFile::open(&a.file)?);
    let md = file.metadata();
    outln!(
        "file:          {} ({:.1} MiB, GGUF v{})",
        a.file.display(),
        file.len() as f64 / MIB,
        file.header().version
    );
    if let Some(name) = md.get_str("general.name")? {
        outln!("name:          {name}");
    }
    let mut by_type: BTreeMap<&str, (usize, u64)> = BTreeMap::new();
    for t in file.tensors() {
        let e = by_type.entry(t.ty.name()).or_default();
        e.0 += 1;
        e.1 += t.size;
    }
    let types: Vec<String> = by_type
        .iter()
        .map(|(k, (n, b))| format!("{k}: {n} tensors, {:.1} MiB", *b as f64 / MIB))
        .collect();
    outln!("tensor types:  {}", types.join("; "));

    match Model::load(file.clone()) {
        Ok(m) => {
            let c = &m.config;
            outln!("architecture:  {}", c.arch.name());
            outln!(
                "shape:         n_embd {}, layers {}, heads {} (kv {}), head dim {}, ffn {}, vocab {}, trained context {}",
                c.n_embd,
                c.n_layer,
                c.n_head,
                c.n_head_kv,
                c.head_dim,
                c.n_ff,
                c.n_vocab,
                c.n_ctx_train
            );
            outln!(
                "rope:          {:?}, theta {}, dims {}, freq scale {}; rms eps {:e}; lm head {}",
                c.rope_style,
                c.rope_theta,
                c.rope_dim,
                c.rope_freq_scale,
                c.rms_eps,
                if file.tensor("output.weight").is_some() {
                    "output.weight"
                } else {
                    "tied to token_embd"
                }
            );
            let kv = c.kv_bytes(a.ctx_size) as f64;
            let per_tok = m.weight_bytes_per_token() as f64;
            outln!(
                "memory:        weights {:.1} MiB (mapped) + KV cache {:.1} MiB at context {} (FP16) ≈ {:.1} MiB; {:.1} MiB read per decoded token",
                file.len() as f64 / MIB,
                kv / MIB,
                a.ctx_size,
                (file.len() as f64 + kv) / MIB,
                per_tok / MIB
            );
        }
        Err(e) => outln!("model:         cannot run: {e}"),
    }
    match Tokenizer::from_metadata(md) {
        Ok(t) => outln!(
            "tokenizer:     {:?} ({}), {} tokens, bos {:?}, eos {:?}",
            t.kind(),
            md.get_str("tokenizer.ggml.pre")?.unwrap_or("-"),
            t.vocab_size(),
            t.bos(),
            t.eos()
        ),
        Err(e) => outln!("tokenizer:     unusable: {e}"),
    }
    outln!(
        "chat template: {}",
        if md.get("tokenizer.chat_template").is_some() {
            "from the file"
        } else {
            "none (ChatML)"
        }
    );
    if a.tensors {
        for t in file.tensors() {
            outln!("  {:<32} {:>6} {:?}", t.name, t.ty.name(), t.shape);
        }
    }
    Ok(())
}
