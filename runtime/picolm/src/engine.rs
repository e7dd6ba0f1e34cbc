//! Several sequences decoded together: the scheduler-facing interface of picolm.
//!
//! An [`Engine`] owns a fixed number of KV-cache slots. Each [`Engine::step`] builds one batch
//! from every running sequence's next token plus prompt chunks of newly added ones (within a
//! token budget), runs one forward pass — so each weight matrix is read once per step for all
//! sequences — and samples a token for every sequence that produced logits. New requests join
//! the running batch at the next step (continuous batching).
//!
//! Prefix reuse: a finished sequence's KV cache stays in its slot, tagged with its tokens. A
//! new request is placed in the free slot sharing the longest token prefix with its prompt,
//! and only the rest of the prompt is evaluated. Set [`EngineConfig::zero_on_finish`] to wipe
//! a slot as soon as its sequence ends instead; slots are also wiped whenever they are reused
//! for a different prefix and when the engine is dropped.
//!
//! The engine is synchronous and meant to be owned by one worker thread; callers talk to that
//! thread over channels. Step-time work reuses its buffers.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::forward::{BatchEntry, KvCache, Logits, OutputKind, Scratch};
use crate::model::Model;
use crate::sampler::{Sampler, SamplingParams};
use crate::tokenizer::Tokenizer;

/// Limits of an engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    /// Context (prompt + generated tokens) of each sequence.
    pub n_ctx: usize,
    /// Sequences decoded together (KV-cache slots).
    pub max_sequences: usize,
    /// Tokens evaluated per step, all sequences together (bounds step latency and scratch).
    pub max_batch_tokens: usize,
    /// Wipe a sequence's KV cache when it ends (no prefix reuse).
    pub zero_on_finish: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            n_ctx: 2048,
            max_sequences: 4,
            max_batch_tokens: 256,
            zero_on_finish: false,
        }
    }
}

pub type SeqId = u64;

/// Constrains sampling (grammars, JSON schemas): masks logits before each draw and is told
/// which token was drawn.
pub trait LogitsProcessor: Send {
    fn process(&mut self, logits: &mut [f32]);
    fn accept(&mut self, token: u32);
    /// The constraint is satisfied and nothing more may follow.
    fn is_complete(&self) -> bool {
        false
    }
}

/// A generation request.
pub struct SequenceRequest {
    pub prompt: Vec<u32>,
    pub params: SamplingParams,
    /// Tokens to generate at most (clamped to what the context leaves).
    pub max_tokens: usize,
    /// Keep going through end-of-generation tokens.
    pub ignore_eos: bool,
    /// Extra tokens that end the sequence (not emitted).
    pub stop_tokens: Vec<u32>,
    pub processor: Option<Box<dyn LogitsProcessor>>,
}

impl std::fmt::Debug for SequenceRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Prompts are private: show their size, not their tokens.
        f.debug_struct("SequenceRequest")
            .field("prompt_tokens", &self.prompt.len())
            .field("max_tokens", &self.max_tokens)
            .field("ignore_eos", &self.ignore_eos)
            .field("constrained", &self.processor.is_some())
            .finish()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-generation or stop token, or the constraint completed.
    Stop,
    /// `max_tokens` or the context is exhausted.
    Length,
    Cancelled,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepEvent {
    Token {
        seq: SeqId,
        token: u32,
    },
    Finished {
        seq: SeqId,
        reason: FinishReason,
        prompt_tokens: usize,
        completion_tokens: usize,
        /// Prompt tokens whose KV came from a previous request (not evaluated again).
        cached_tokens: usize,
    },
}

/// A KV-cache slot and the tokens whose keys and values it holds.
#[derive(Debug)]
struct Slot {
    tokens: Vec<u32>,
    seq: Option<SeqId>,
}

struct Sequence {
    id: SeqId,
    slot: usize,
    prompt: Vec<u32>,
    /// Prompt tokens already in the cache.
    evaluated: usize,
    cached: usize,
    generated: usize,
    /// The last sampled token, to be evaluated at the next step.
    pending: Option<u32>,
    max_tokens: usize,
    ignore_eos: bool,
    stop_tokens: Vec<u32>,
    sampler: Sampler,
    processor: Option<Box<dyn LogitsProcessor>>,
    cancelled: bool,
}

/// Continuous-batching engine over one model.
pub struct Engine {
    model: Arc<Model>,
    tokenizer: Tokenizer,
    cfg: EngineConfig,
    caches: Vec<KvCache>,
    slots: Vec<Slot>,
    seqs: Vec<Sequence>,
    next_id: SeqId,
    scratch: Scratch,
    batch_tokens: Vec<u32>,
    entries: Vec<BatchEntry>,
    /// Index into `seqs` of each entry.
    entry_seq: Vec<usize>,
    logits: Vec<f32>,
    done: Vec<(usize, FinishReason)>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("cfg", &self.cfg)
            .field("active", &self.seqs.len())
            .finish()
    }
}

impl Engine {
    pub fn new(model: Arc<Model>, tokenizer: Tokenizer, cfg: EngineConfig) -> Result<Self> {
        if cfg.n_ctx < 2 || cfg.max_sequences == 0 || cfg.max_batch_tokens == 0 {
            return Err(Error::Request(format!(
                "engine limits must be positive (n_ctx {}, max_sequences {}, max_batch_tokens {})",
                cfg.n_ctx, cfg.max_sequences, cfg.max_batch_tokens
            )));
        }
        let caches = (0..cfg.max_sequences)
            .map(|_| KvCache::new(&model.config, cfg.n_ctx))
            .collect();
        let slots = (0..cfg.max_sequences)
            .map(|_| Slot {
                tokens: Vec::with_capacity(cfg.n_ctx),
                seq: None,
            })
            .collect();
        let nv = model.config.n_vocab;
        Ok(Engine {
            logits: Vec::with_capacity(cfg.max_sequences * nv),
            batch_tokens: Vec::with_capacity(cfg.max_batch_tokens + cfg.max_sequences),
            entries: Vec::with_capacity(cfg.max_sequences),
            entry_seq: Vec::with_capacity(cfg.max_sequences),
            seqs: Vec::with_capacity(cfg.max_sequences),
            model,
            tokenizer,
            cfg,
            caches,
            slots,
            next_id: 1,
            scratch: Scratch::default(),
            done: Vec::with_capacity(8),
        })
    }

    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }
    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }
    /// Sequences added and not yet finished.
    pub fn active(&self) -> usize {
        self.seqs.len()
    }
    pub fn free_slots(&self) -> usize {
        self.slots.iter().filter(|s| s.seq.is_none()).count()
    }
    pub fn has_work(&self) -> bool {
        !self.seqs.is_empty()
    }

    /// Queue a sequence; it starts at the next [`step`](Self::step).
    pub fn add(&mut self, req: SequenceRequest) -> Result<SeqId> {
        if req.prompt.is_empty() {
            return Err(Error::Request("the prompt is empty".into()));
        }
        let nv = self.model.config.n_vocab;
        if let Some(&bad) = req.prompt.iter().find(|&&t| t as usize >= nv) {
            return Err(Error::Request(format!(
                "token id {bad} is outside the vocabulary of {nv}"
            )));
        }
        if req.prompt.len() + 1 > self.cfg.n_ctx {
            return Err(Error::Request(format!(
                "the prompt has {} tokens; the context holds {} (prompt + at least one generated token)",
                req.prompt.len(),
                self.cfg.n_ctx
            )));
        }
        req.params.validate()?;
        // The free slot sharing the longest prefix; at least one prompt token is evaluated
        // so the request gets its own logits.
        let (slot, lcp) = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.seq.is_none())
            .map(|(i, s)| {
                (
                    i,
                    common_prefix(&s.tokens, &req.prompt).min(req.prompt.len() - 1),
                )
            })
            .max_by_key(|&(i, l)| (l, std::cmp::Reverse(i)))
            .ok_or_else(|| {
                Error::Request(format!(
                    "all {} sequence slots are busy",
                    self.cfg.max_sequences
                ))
            })?;
        self.caches[slot].truncate(lcp);
        self.slots[slot].tokens.truncate(lcp);
        let id = self.next_id;
        self.next_id += 1;
        self.slots[slot].seq = Some(id);
        let mut sampler = Sampler::new(req.params);
        for &t in &req.prompt {
            sampler.accept(t);
        }
        let max_tokens = req.max_tokens.min(self.cfg.n_ctx - req.prompt.len());
        self.seqs.push(Sequence {
            id,
            slot,
            evaluated: lcp,
            cached: lcp,
            prompt: req.prompt,
            generated: 0,
            pending: None,
            max_tokens,
            ignore_eos: req.ignore_eos,
            stop_tokens: req.stop_tokens,
            sampler,
            processor: req.processor,
            cancelled: false,
        });
        Ok(id)
    }

    /// Stop a sequence; its `Finished { Cancelled }` event comes with the next step.
    pub fn cancel(&mut self, seq: SeqId) {
        if let Some(s) = self.seqs.iter_mut().find(|s| s.id == seq) {
            s.cancelled = true;
        }
    }

    /// One batched forward pass; returns the tokens sampled and the sequences finished.
    pub fn step(&mut self) -> Result<Vec<StepEvent>> {
        let mut events = Vec::new();
        self.step_into(&mut events)?;
        Ok(events)
    }

    /// [`step`](Self::step) appending to a caller-owned buffer (no allocation per step).
    pub fn step_into(&mut self, events: &mut Vec<StepEvent>) -> Result<()> {
        // Cancellations first.
        let mut i = 0;
        while i < self.seqs.len() {
            if self.seqs[i].cancelled || self.seqs[i].max_tokens == 0 {
                let reason = if self.seqs[i].cancelled {
                    FinishReason::Cancelled
                } else {
                    FinishReason::Length
                };
                self.finish(i, reason, events);
            } else {
                i += 1;
            }
        }
        // Plan the batch: one token for every decoding sequence, then prompt chunks.
        self.batch_tokens.clear();
        self.entries.clear();
        self.entry_seq.clear();
        let mut budget = self.cfg.max_batch_tokens;
        for (si, s) in self.seqs.iter().enumerate() {
            if let Some(t) = s.pending {
                let at = self.batch_tokens.len();
                self.batch_tokens.push(t);
                self.entries.push(BatchEntry {
                    cache: s.slot,
                    tokens: at..at + 1,
                    output: Logits::Last,
                });
                self.entry_seq.push(si);
                budget = budget.saturating_sub(1);
            }
        }
        for (si, s) in self.seqs.iter().enumerate() {
            if s.pending.is_none() && budget > 0 {
                let rest = &s.prompt[s.evaluated..];
                let take = rest.len().min(budget);
                let at = self.batch_tokens.len();
                self.batch_tokens.extend_from_slice(&rest[..take]);
                self.entries.push(BatchEntry {
                    cache: s.slot,
                    tokens: at..at + take,
                    output: Logits::Last,
                });
                self.entry_seq.push(si);
                budget -= take;
            }
        }
        if self.entries.is_empty() {
            return Ok(());
        }
        let nv = self.model.config.n_vocab;
        let n_out = self.entries.len();
        self.logits.resize(n_out * nv, 0.0);
        self.model.forward_batch(
            &mut self.caches,
            &self.batch_tokens,
            &self.entries,
            &mut self.scratch,
            OutputKind::Logits,
            &mut self.logits,
        )?;
        // Bookkeeping and sampling, in entry order; finished sequences are removed after.
        self.done.clear();
        for (k, e) in self.entries.iter().enumerate() {
            let si = self.entry_seq[k];
            let s = &mut self.seqs[si];
            let toks = &self.batch_tokens[e.tokens.clone()];
            self.slots[s.slot].tokens.extend_from_slice(toks);
            if s.pending.take().is_none() {
                s.evaluated += toks.len();
                if s.evaluated < s.prompt.len() {
                    continue; // more prompt to go: these logits are not a prediction we need
                }
            }
            let logits = &mut self.logits[k * nv..(k + 1) * nv];
            if let Some(p) = s.processor.as_mut() {
                p.process(logits);
            }
            let tok = s.sampler.sample(logits);
            s.sampler.accept(tok);
            if let Some(p) = s.processor.as_mut() {
                p.accept(tok);
            }
            let is_stop =
                !s.ignore_eos && (self.tokenizer.is_eog(tok) || s.stop_tokens.contains(&tok));
            if is_stop {
                self.done.push((si, FinishReason::Stop));
                continue;
            }
            events.push(StepEvent::Token {
                seq: s.id,
                token: tok,
            });
            s.generated += 1;
            let ctx_full = self.caches[s.slot].len() + 1 > self.cfg.n_ctx;
            if s.processor.as_ref().is_some_and(|p| p.is_complete()) {
                self.done.push((si, FinishReason::Stop));
            } else if s.generated >= s.max_tokens || ctx_full {
                self.done.push((si, FinishReason::Length));
            } else {
                s.pending = Some(tok);
            }
        }
        // Remove from the back so indices stay valid.
        self.done
            .sort_unstable_by_key(|&(si, _)| std::cmp::Reverse(si));
        for k in 0..self.done.len() {
            let (si, reason) = self.done[k];
            self.finish(si, reason, events);
        }
        Ok(())
    }

    fn finish(&mut self, si: usize, reason: FinishReason, events: &mut Vec<StepEvent>) {
        let s = self.seqs.swap_remove(si);
        let slot = &mut self.slots[s.slot];
        slot.seq = None;
        if self.cfg.zero_on_finish || reason == FinishReason::Cancelled {
            self.caches[s.slot].clear();
            slot.tokens.clear();
        } else {
            // Keep only what the cache really holds (the last sampled token was never
            // evaluated), so a follow-up request can reuse the prefix.
            let held = self.caches[s.slot].len();
            slot.tokens.truncate(held);
        }
        events.push(StepEvent::Finished {
            seq: s.id,
            reason,
            prompt_tokens: s.prompt.len(),
            completion_tokens: s.generated,
            cached_tokens: s.cached,
        });
    }

    /// Mean-pooled, L2-normalised final hidden state of `tokens` (for `/v1/embeddings`). Runs
    /// in a private cache, so it does not disturb the running sequences' slots.
    pub fn embed(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        if tokens.is_empty() {
            return Err(Error::Request("nothing to embed".into()));
        }
        if tokens.len() > self.cfg.n_ctx {
            return Err(Error::Request(format!(
                "the input has {} tokens; the context holds {}",
                tokens.len(),
                self.cfg.n_ctx
            )));
        }
        let d = self.model.config.n_embd;
        let mut cache = [KvCache::new(&self.model.config, tokens.len())];
        let mut sum = vec![0f64; d];
        let mut hidden = Vec::new();
        let mut at = 0;
        for chunk in tokens.chunks(self.cfg.max_batch_tokens) {
            let entry = BatchEntry {
                cache: 0,
                tokens: 0..chunk.len(),
                output: Logits::All,
            };
            hidden.resize(chunk.len() * d, 0.0);
            self.model.forward_batch(
                &mut cache,
                chunk,
                std::slice::from_ref(&entry),
                &mut self.scratch,
                OutputKind::Hidden,
                &mut hidden,
            )?;
            for row in hidden.chunks_exact(d) {
                sum.iter_mut()
                    .zip(row)
                    .for_each(|(s, &x)| *s += f64::from(x));
            }
            at += chunk.len();
        }
        let mean: Vec<f64> = sum.iter().map(|s| s / at as f64).collect();
        let norm = mean.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
        Ok(mean.iter().map(|x| (x / norm) as f32).collect())
    }
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl Drop for Engine {
    fn drop(&mut self) {
        // KvCache wipes itself on drop; the token records are prompts too.
        for s in &mut self.slots {
            s.tokens.iter_mut().for_each(|t| *t = 0);
        }
    }
}
