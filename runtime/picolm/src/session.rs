//! A sequence being evaluated: the model, its KV cache, scratch buffers and the logits of the
//! last evaluated position. This is the single-sequence interface used by `a3s-power run`.

use crate::error::{Error, Result};
use crate::forward::{KvCache, Logits, Scratch};
use crate::model::Model;

/// Prompt tokens evaluated per forward call: large enough for matrix-shaped prefill, small
/// enough to bound scratch memory.
pub const PREFILL_CHUNK: usize = 256;

#[derive(Debug)]
pub struct Session<'m> {
    model: &'m Model,
    kv: KvCache,
    scratch: Scratch,
    logits: Vec<f32>,
    tokens: Vec<u32>,
}

impl<'m> Session<'m> {
    /// A session with room for `n_ctx` positions (at most the model's training context).
    pub fn new(model: &'m Model, n_ctx: usize) -> Result<Self> {
        if n_ctx == 0 {
            return Err(Error::Request("context size must be positive".into()));
        }
        Ok(Session {
            model,
            kv: KvCache::new(&model.config, n_ctx),
            scratch: Scratch::default(),
            logits: vec![0.0; model.config.n_vocab],
            tokens: Vec::with_capacity(n_ctx),
        })
    }

    pub fn model(&self) -> &'m Model {
        self.model
    }
    /// Tokens evaluated so far.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }
    pub fn n_ctx(&self) -> usize {
        self.kv.n_ctx()
    }

    /// Evaluate `tokens` after those already in the context; returns the logits of the last.
    pub fn eval(&mut self, tokens: &[u32]) -> Result<&mut [f32]> {
        if self.kv.len() + tokens.len() > self.kv.n_ctx() {
            return Err(Error::Request(format!(
                "{} tokens in context + {} new exceed the context size {}",
                self.kv.len(),
                tokens.len(),
                self.kv.n_ctx()
            )));
        }
        for chunk in tokens.chunks(PREFILL_CHUNK) {
            self.model.forward(
                chunk,
                &mut self.kv,
                &mut self.scratch,
                Logits::Last,
                &mut self.logits,
            )?;
            self.tokens.extend_from_slice(chunk);
        }
        Ok(&mut self.logits)
    }

    /// Evaluate `tokens` and return the logits of every one (`tokens.len() * n_vocab`).
    pub fn eval_all(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        let nv = self.model.config.n_vocab;
        let mut out = vec![0.0; tokens.len() * nv];
        for (i, chunk) in tokens.chunks(PREFILL_CHUNK).enumerate() {
            let o = &mut out[i * PREFILL_CHUNK * nv..][..chunk.len() * nv];
            self.model
                .forward(chunk, &mut self.kv, &mut self.scratch, Logits::All, o)?;
            self.tokens.extend_from_slice(chunk);
        }
        Ok(out)
    }

    /// Forget everything (and wipe the KV cache).
    pub fn reset(&mut self) {
        self.kv.clear();
        self.tokens.clear();
    }
}
