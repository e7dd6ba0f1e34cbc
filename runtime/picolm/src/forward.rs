//! The transformer forward pass: embeddings, RMSNorm, RoPE, grouped-query attention over an
//! FP16 KV cache, SwiGLU, output head.
//!
//! A call processes a batch of consecutive tokens of one sequence as matrices (batched
//! prefill); decode is the batch of one. Arithmetic follows llama.cpp's CPU backend where it
//! matters for agreement: activations are quantized to the weight's `vec_dot_type` before each
//! matrix product, sums of squares and softmax normalisers are accumulated in f64, queries are
//! rounded to f16 before the dot with the f16 keys, and the RoPE angles are built by the same
//! iterated f32 product.
//!
//! Buffers live in [`Scratch`] and only grow, so a steady-state decode step does not allocate.

use std::cell::RefCell;

use half::f16;
use rayon::prelude::*;
use zeroize::Zeroize;

use crate::error::{Error, Result};
use crate::model::{Config, Model, RopeStyle, Weight};
use crate::quant::{self, GgmlType};
use crate::stream::Staging;

/// The FP16 key/value cache of one sequence: `[layer][position][kv_dim]` for K and for V.
pub struct KvCache {
    n_ctx: usize,
    kv_dim: usize,
    k: Vec<f16>,
    v: Vec<f16>,
    /// Positions filled.
    len: usize,
}

impl std::fmt::Debug for KvCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvCache")
            .field("n_ctx", &self.n_ctx)
            .field("len", &self.len)
            .finish()
    }
}

impl KvCache {
    pub fn new(config: &Config, n_ctx: usize) -> Self {
        let n = config.n_layer * n_ctx * config.kv_dim();
        KvCache {
            n_ctx,
            kv_dim: config.kv_dim(),
            k: vec![f16::ZERO; n],
            v: vec![f16::ZERO; n],
            len: 0,
        }
    }
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Forget positions from `len` on, wiping them (used to roll back or reuse a prefix).
    pub fn truncate(&mut self, len: usize) {
        if len >= self.len {
            return;
        }
        let layers = self.k.len() / (self.n_ctx * self.kv_dim).max(1);
        for l in 0..layers {
            let a = (l * self.n_ctx + len) * self.kv_dim;
            let b = (l * self.n_ctx + self.len) * self.kv_dim;
            self.k[a..b].fill(f16::ZERO);
            self.v[a..b].fill(f16::ZERO);
        }
        self.len = len;
    }
    /// Wipe everything: a finished sequence leaves no trace of its prompt in memory.
    pub fn clear(&mut self) {
        for x in self.k.iter_mut().chain(self.v.iter_mut()) {
            *x = f16::ZERO;
        }
        // Make sure the compiler keeps the wipe.
        std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
        self.len = 0;
    }
    fn layer_range(&self, layer: usize, upto: usize) -> std::ops::Range<usize> {
        let a = layer * self.n_ctx * self.kv_dim;
        a..a + upto * self.kv_dim
    }
}

impl Drop for KvCache {
    fn drop(&mut self) {
        self.clear();
    }
}

/// Precomputed RoPE cos/sin, `[position][rope_dim / 2]`, grown on demand.
#[derive(Debug, Default)]
struct RopeTable {
    cos: Vec<f32>,
    sin: Vec<f32>,
    half: usize,
    n_pos: usize,
}

impl RopeTable {
    fn ensure(&mut self, c: &Config, n_pos: usize) {
        if n_pos <= self.n_pos {
            return;
        }
        let half = c.rope_dim / 2;
        self.half = half;
        // llama.cpp: theta_scale = base^(-2/n_dims); theta_i = p * freq_scale * theta_scale^i,
        // accumulated by repeated f32 multiplication.
        let theta_scale = c.rope_theta.powf(-2.0 / c.rope_dim as f32);
        self.cos.resize(n_pos * half, 0.0);
        self.sin.resize(n_pos * half, 0.0);
        for p in self.n_pos..n_pos {
            let mut theta = p as f32 * c.rope_freq_scale;
            for i in 0..half {
                self.cos[p * half + i] = theta.cos();
                self.sin[p * half + i] = theta.sin();
                theta *= theta_scale;
            }
        }
        self.n_pos = n_pos;
    }

    fn apply(&self, style: RopeStyle, head: &mut [f32], pos: usize) {
        let half = self.half;
        let cos = &self.cos[pos * half..(pos + 1) * half];
        let sin = &self.sin[pos * half..(pos + 1) * half];
        match style {
            RopeStyle::Normal => {
                for i in 0..half {
                    let (a, b) = (head[2 * i], head[2 * i + 1]);
                    head[2 * i] = a * cos[i] - b * sin[i];
                    head[2 * i + 1] = a * sin[i] + b * cos[i];
                }
            }
            RopeStyle::Neox => {
                for i in 0..half {
                    let (a, b) = (head[i], head[i + half]);
                    head[i] = a * cos[i] - b * sin[i];
                    head[i + half] = a * sin[i] + b * cos[i];
                }
            }
        }
    }
}

/// Reusable buffers for the forward pass. They only grow.
#[derive(Debug, Default)]
pub struct Scratch {
    x: Vec<f32>,
    xn: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    att: Vec<f32>,
    tmp: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    /// Activations quantized for one `vec_dot_type`, and a second for mixed-type projections.
    xq: QuantBuf,
    xq2: QuantBuf,
    mm: MatmulScratch,
    rope: RopeTable,
    row_cache: Vec<u32>,
    row_pos: Vec<u32>,
    head: Vec<f32>,
    /// Context the workers' attention buffers are sized for.
    attn_ctx: usize,
    /// Plaintext weights staged from a streaming source, wiped after each use.
    stage: Staging,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for b in [
            &mut self.x,
            &mut self.xn,
            &mut self.q,
            &mut self.k,
            &mut self.v,
            &mut self.att,
            &mut self.gate,
            &mut self.up,
        ] {
            b.zeroize();
        }
        self.xq.data.zeroize();
        self.xq2.data.zeroize();
        self.mm.tmp.zeroize();
    }
}

/// What [`matmul`] reuses between calls: results before their transposition, and the
/// activation rows prepared for the decode kernels.
#[derive(Debug, Default)]
struct MatmulScratch {
    tmp: Vec<f32>,
    acts: quant::PreparedActs,
}

#[derive(Debug, Default)]
struct QuantBuf {
    ty: Option<GgmlType>,
    row_bytes: usize,
    data: Vec<u8>,
}

impl QuantBuf {
    /// Quantize `n` rows of `cols` activations for weights of type `wty`.
    fn load(&mut self, wty: GgmlType, x: &[f32], n: usize, cols: usize) -> Result<()> {
        let vdt = wty.vec_dot_type();
        let rb = vdt.row_bytes(cols).ok_or_else(|| {
            Error::Unsupported(format!("{} activations of width {cols}", vdt.name()))
        })?;
        grow(&mut self.data, n * rb);
        for b in 0..n {
            quant::quantize_activation(
                vdt,
                &x[b * cols..(b + 1) * cols],
                &mut self.data[b * rb..(b + 1) * rb],
            )
            .map_err(|e| Error::Quant(e.to_string()))?;
        }
        self.ty = Some(vdt);
        self.row_bytes = rb;
        Ok(())
    }
    fn matches(&self, wty: GgmlType) -> bool {
        self.ty == Some(wty.vec_dot_type())
    }
}

fn grow<T: Default + Clone>(v: &mut Vec<T>, n: usize) {
    if v.len() < n {
        v.resize(n, T::default());
    }
}

/// Which positions of a batch need logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// Only the last token (generation).
    Last,
    /// Every token (evaluation, tests).
    All,
}

thread_local! {
    static ATTN_SCRATCH: RefCell<(Vec<f32>, Vec<f32>, Vec<f32>)> =
        const { RefCell::new((Vec::new(), Vec::new(), Vec::new())) };
}

/// Rows per parallel task in a matrix product: enough work to amortise scheduling, enough
/// tasks to balance two to a few dozen threads.
fn row_chunk(rows: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    (rows / (threads * 8)).clamp(8, 256)
}

/// `out[b * w.rows + r] = w.row(r) · x[b]` for `n` activation rows quantized in `xq`.
fn matmul(
    file: &[u8],
    w: &Weight,
    xq: &QuantBuf,
    n: usize,
    out: &mut [f32],
    mm: &mut MatmulScratch,
) {
    debug_assert!(xq.matches(w.ty));
    let wb = w.bytes(file);
    let (rows, cols, rb) = (w.rows, w.cols, w.row_bytes);
    let xrb = xq.row_bytes;
    let MatmulScratch { tmp, acts } = mm;
    if n < GEMM_MIN_ACTS {
        // Decode of one or a few sequences: the activation rows are prepared once, then each
        // chunk of weight rows streams once against all of them. Results come out row-major
        // per weight row (transposed below for several sequences).
        quant::prepare_acts(w.ty, cols, &xq.data, xrb, n, acts);
        let acts = &*acts;
        let chunk = row_chunk(rows);
        let dst = if n == 1 {
            &mut out[..rows]
        } else {
            grow(tmp, rows * n);
            &mut tmp[..rows * n]
        };
        dst.par_chunks_mut(chunk * n)
            .enumerate()
            .for_each(|(ci, o)| {
                let r0 = ci * chunk;
                let nr = o.len() / n;
                let ws = &wb[r0 * rb..(r0 + nr) * rb];
                quant::vec_dot_multi_rows(w.ty, cols, ws, rb, nr, &xq.data, xrb, n, acts, o);
            });
        if n > 1 {
            for b in 0..n {
                for r in 0..rows {
                    out[b * rows + r] = tmp[r * n + b];
                }
            }
        }
        return;
    }
    // Prefill: a GEMM of each chunk of weight rows with the activation rows (register-blocked
    // tiles of GEMM_ROWS rows where the format has them, packed once per GEMM_ACTS activation
    // rows). Chunk c's results land in `tmp` as [activation][row of the chunk] and are copied
    // to `out` in contiguous runs; nothing is allocated once `tmp` has grown.
    let chunk = row_chunk(rows).next_multiple_of(quant::GEMM_ROWS);
    grow(tmp, rows * n);
    tmp[..rows * n]
        .par_chunks_mut(chunk * n)
        .enumerate()
        .for_each(|(ci, o)| {
            let r0 = ci * chunk;
            let nr = o.len() / n;
            let mut views = o.chunks_mut(nr);
            for j0 in (0..n).step_by(GEMM_ACTS) {
                let g = (n - j0).min(GEMM_ACTS);
                let mut v: [&mut [f32]; GEMM_ACTS] =
                    std::array::from_fn(|_| views.next().unwrap_or_default());
                let acts = &xq.data[j0 * xrb..];
                quant::gemm(w.ty, cols, &wb[r0 * rb..], rb, nr, acts, xrb, &mut v[..g]);
            }
        });
    let tmp = &tmp[..rows * n];
    out[..n * rows]
        .par_chunks_mut(rows)
        .enumerate()
        .for_each(|(b, orow)| {
            for (ci, o) in orow.chunks_mut(chunk).enumerate() {
                let nr = o.len();
                let src = ci * chunk * n + b * nr;
                o.copy_from_slice(&tmp[src..src + nr]);
            }
        });
}

/// Fewest activation rows for which the prefill GEMM (which packs every weight tile first)
/// beats the per-row tiles of `vec_dot_multi`.
const GEMM_MIN_ACTS: usize = 8;
/// Most activation rows per GEMM call: the output views live in a stack array.
const GEMM_ACTS: usize = 256;

/// RMSNorm of each `dim`-row of `x` into `out`, times `weight`.
fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let dim = weight.len();
    for (xr, or) in x.chunks_exact(dim).zip(out.chunks_exact_mut(dim)) {
        // f32 squares summed in f64, as ggml_compute_forward_rms_norm_f32 does.
        let ss: f64 = xr.iter().map(|&v| f64::from(v * v)).sum();
        let mean = (ss / dim as f64) as f32;
        let scale = 1.0 / (mean + eps).sqrt();
        for ((o, &v), &w) in or.iter_mut().zip(xr).zip(weight) {
            *o = v * scale * w;
        }
    }
}

/// One sequence's part of a batch: `tokens[range]` of the shared token buffer, appended to
/// `caches[cache]` at its current length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchEntry {
    pub cache: usize,
    pub tokens: std::ops::Range<usize>,
    pub output: Logits,
}

/// What a forward pass produces for the rows that ask for output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputKind {
    /// `n_vocab` logits per row.
    Logits,
    /// The final normalised hidden state (`n_embd` floats) per row, for embeddings.
    Hidden,
}

impl Model {
    /// Run `tokens` (consecutive positions starting at `kv.len()`) through the model, append
    /// their keys and values to `kv`, and write logits to `logits` (`n_vocab` floats for
    /// [`Logits::Last`], `tokens.len() * n_vocab` for [`Logits::All`]).
    pub fn forward(
        &self,
        tokens: &[u32],
        kv: &mut KvCache,
        scratch: &mut Scratch,
        which: Logits,
        logits: &mut [f32],
    ) -> Result<()> {
        let entry = BatchEntry {
            cache: 0,
            tokens: 0..tokens.len(),
            output: which,
        };
        self.forward_batch(
            std::slice::from_mut(kv),
            tokens,
            std::slice::from_ref(&entry),
            scratch,
            OutputKind::Logits,
            logits,
        )
    }

    /// Number of output rows a batch produces.
    pub fn output_rows(entries: &[BatchEntry]) -> usize {
        entries
            .iter()
            .map(|e| match e.output {
                Logits::Last => 1,
                Logits::All => e.tokens.len(),
            })
            .sum()
    }

    /// One forward pass over several sequences at once (continuous batching): every weight
    /// matrix is read once for all the batch's rows; attention runs per row against its own
    /// sequence's cache. Output rows come in entry order (`Last`: one, `All`: one per token).
    pub fn forward_batch(
        &self,
        caches: &mut [KvCache],
        tokens: &[u32],
        entries: &[BatchEntry],
        scratch: &mut Scratch,
        kind: OutputKind,
        out: &mut [f32],
    ) -> Result<()> {
        let c = &self.config;
        let mut n = 0;
        for (i, e) in entries.iter().enumerate() {
            let kv = caches
                .get(e.cache)
                .ok_or_else(|| Error::Request(format!("batch entry {i}: no cache {}", e.cache)))?;
            if e.tokens.is_empty() || e.tokens.end > tokens.len() {
                return Err(Error::Request(format!(
                    "batch entry {i}: bad token range {:?}",
                    e.tokens
                )));
            }
            if entries[..i].iter().any(|o| o.cache == e.cache) {
                return Err(Error::Request(format!(
                    "batch entry {i}: cache {} used twice",
                    e.cache
                )));
            }
            if kv.len + e.tokens.len() > kv.n_ctx {
                return Err(Error::Request(format!(
                    "context overflow: {} cached + {} new tokens exceed the context of {}",
                    kv.len,
                    e.tokens.len(),
                    kv.n_ctx
                )));
            }
            if let Some(&bad) = tokens[e.tokens.clone()]
                .iter()
                .find(|&&t| t as usize >= c.n_vocab)
            {
                return Err(Error::Request(format!(
                    "token id {bad} is outside the vocabulary of {}",
                    c.n_vocab
                )));
            }
            n += e.tokens.len();
        }
        if n == 0 {
            return Err(Error::Request("no tokens to evaluate".into()));
        }
        let n_out = Self::output_rows(entries);
        let width = match kind {
            OutputKind::Logits => c.n_vocab,
            OutputKind::Hidden => c.n_embd,
        };
        if out.len() != n_out * width {
            return Err(Error::Request(format!(
                "output buffer holds {} floats, expected {}",
                out.len(),
                n_out * width
            )));
        }
        // Run the pass on a worker of the thread pool: every matrix product below splits into
        // parallel chunks, and from a thread outside the pool each split would be a hand-off
        // and a wake-up (two context switches per product, ~170 per token). On a worker the
        // caller's share runs inline and only idle workers are woken, once per pass.
        if rayon::current_thread_index().is_some() {
            self.forward_rows(caches, tokens, entries, n, n_out, scratch, kind, out)
        } else {
            rayon::scope(|_| {
                self.forward_rows(caches, tokens, entries, n, n_out, scratch, kind, out)
            })
        }
    }

    /// [`Model::forward_batch`] after validation: `n` rows in, `n_out` rows out.
    #[allow(clippy::too_many_arguments)]
    fn forward_rows(
        &self,
        caches: &mut [KvCache],
        tokens: &[u32],
        entries: &[BatchEntry],
        n: usize,
        n_out: usize,
        scratch: &mut Scratch,
        kind: OutputKind,
        out: &mut [f32],
    ) -> Result<()> {
        let c = &self.config;
        let file = self.bytes();
        let (d, qd, kvd, hd, ff) = (c.n_embd, c.q_dim(), c.kv_dim(), c.head_dim, c.n_ff);
        let s = scratch;
        grow(&mut s.x, n * d);
        grow(&mut s.xn, n * d);
        grow(&mut s.q, n * qd);
        grow(&mut s.k, n * kvd);
        grow(&mut s.v, n * kvd);
        grow(&mut s.att, n * qd);
        grow(&mut s.gate, n * ff);
        grow(&mut s.up, n * ff);
        grow(&mut s.tmp, n * d);
        // Which cache and position each row belongs to.
        s.row_cache.clear();
        s.row_pos.clear();
        let mut max_pos = 0;
        for e in entries {
            let pos0 = caches[e.cache].len;
            for i in 0..e.tokens.len() {
                s.row_cache.push(e.cache as u32);
                s.row_pos.push((pos0 + i) as u32);
            }
            // Size the tables for the whole context at once: decode then never grows them.
            max_pos = max_pos.max(caches[e.cache].n_ctx);
        }
        s.rope.ensure(c, max_pos);
        let kv_group = c.n_head / c.n_head_kv;
        if s.attn_ctx < max_pos {
            // Size every worker's attention buffers now, not lazily on the first task a
            // worker happens to steal (which would allocate mid-decode).
            rayon::broadcast(|_| {
                ATTN_SCRATCH.with_borrow_mut(|(scores, qh, inv)| {
                    grow(scores, kv_group * max_pos);
                    grow(qh, kv_group * hd);
                    grow(inv, kv_group);
                })
            });
            s.attn_ctx = max_pos;
        }

        // Token embeddings: dequantize the rows.
        let mut r = 0;
        for e in entries {
            for &t in &tokens[e.tokens.clone()] {
                self.embed_token(t as usize, &mut s.x[r * d..(r + 1) * d], file, &mut s.stage)?;
                r += 1;
            }
        }

        let scale = 1.0 / (hd as f32).sqrt();
        for l in 0..self.layers.len() {
            // The file and the layer, or the layer staged from a streaming source.
            let (file, layer) = self.layer_weights(l, file, &mut s.stage)?;
            // Attention block.
            rms_norm(
                &s.x[..n * d],
                &layer.attn_norm,
                c.rms_eps,
                &mut s.xn[..n * d],
            );
            s.xq.load(layer.wq.ty, &s.xn, n, d)?;
            matmul(file, &layer.wq, &s.xq, n, &mut s.q, &mut s.mm);
            let xq_kv = if s.xq.matches(layer.wk.ty) {
                &s.xq
            } else {
                s.xq2.load(layer.wk.ty, &s.xn, n, d)?;
                &s.xq2
            };
            matmul(file, &layer.wk, xq_kv, n, &mut s.k, &mut s.mm);
            let xq_v = if s.xq.matches(layer.wv.ty) {
                &s.xq
            } else if s.xq2.matches(layer.wv.ty) {
                &s.xq2
            } else {
                s.xq2.load(layer.wv.ty, &s.xn, n, d)?;
                &s.xq2
            };
            matmul(file, &layer.wv, xq_v, n, &mut s.v, &mut s.mm);
            for (buf, bias, dim) in [
                (&mut s.q, &layer.bq, qd),
                (&mut s.k, &layer.bk, kvd),
                (&mut s.v, &layer.bv, kvd),
            ] {
                if let Some(b) = bias {
                    for row in buf[..n * dim].chunks_exact_mut(dim) {
                        row.iter_mut().zip(b).for_each(|(x, &b)| *x += b);
                    }
                }
            }
            for i in 0..n {
                let pos = s.row_pos[i] as usize;
                for h in s.q[i * qd..(i + 1) * qd].chunks_exact_mut(hd) {
                    s.rope.apply(c.rope_style, &mut h[..c.rope_dim], pos);
                }
                for h in s.k[i * kvd..(i + 1) * kvd].chunks_exact_mut(hd) {
                    s.rope.apply(c.rope_style, &mut h[..c.rope_dim], pos);
                }
            }
            // Append K and V to each row's cache.
            for i in 0..n {
                let kv = &mut caches[s.row_cache[i] as usize];
                let base = (l * kv.n_ctx + s.row_pos[i] as usize) * kvd;
                for (dst, src) in kv.k[base..base + kvd]
                    .iter_mut()
                    .zip(&s.k[i * kvd..(i + 1) * kvd])
                {
                    *dst = f16::from_f32(*src);
                }
                for (dst, src) in kv.v[base..base + kvd]
                    .iter_mut()
                    .zip(&s.v[i * kvd..(i + 1) * kvd])
                {
                    *dst = f16::from_f32(*src);
                }
            }
            let caches_ro: &[KvCache] = caches;
            let (q, row_cache, row_pos) = (&s.q, &s.row_cache, &s.row_pos);
            // One task per (row, KV head): causal attention over the row's own sequence for
            // the query heads that share the KV head, each cached key and value row read once
            // for all of them.
            s.att[..n * qd]
                .par_chunks_mut(kv_group * hd)
                .enumerate()
                .for_each(|(idx, out)| {
                    let (i, kvh) = (idx / c.n_head_kv, idx % c.n_head_kv);
                    let kv = &caches_ro[row_cache[i] as usize];
                    let n_pos = row_pos[i] as usize + 1;
                    let kc = &kv.k[kv.layer_range(l, n_pos)][kvh * hd..];
                    let vc = &kv.v[kv.layer_range(l, n_pos)][kvh * hd..];
                    let h0 = kvh * kv_group;
                    ATTN_SCRATCH.with_borrow_mut(|(scores, qh, inv)| {
                        grow(scores, kv_group * kv.n_ctx);
                        grow(qh, kv_group * hd);
                        grow(inv, kv_group);
                        // Round the queries to f16 as llama.cpp does before its f16 K·Q product.
                        let qs = &q[i * qd + h0 * hd..i * qd + (h0 + kv_group) * hd];
                        for (d, &x) in qh.iter_mut().zip(qs) {
                            *d = f16::from_f32(x).to_f32();
                        }
                        let qh = &qh[..kv_group * hd];
                        let scores = &mut scores[..kv_group * n_pos];
                        quant::attn_scores(kc, kvd, n_pos, qh, hd, scores);
                        for (sc, inv) in scores.chunks_exact_mut(n_pos).zip(inv.iter_mut()) {
                            *inv = quant::attn_softmax(sc, scale);
                        }
                        // llama.cpp multiplies f16 V by the probabilities converted to f16.
                        quant::attn_values(scores, &inv[..kv_group], vc, kvd, n_pos, hd, out);
                    });
                });
            s.xq.load(layer.wo.ty, &s.att, n, qd)?;
            matmul(file, &layer.wo, &s.xq, n, &mut s.tmp[..n * d], &mut s.mm);
            add_tmp(&mut s.x[..n * d], &s.tmp[..n * d]);

            // Feed-forward block.
            rms_norm(
                &s.x[..n * d],
                &layer.ffn_norm,
                c.rms_eps,
                &mut s.xn[..n * d],
            );
            s.xq.load(layer.w_gate.ty, &s.xn, n, d)?;
            matmul(file, &layer.w_gate, &s.xq, n, &mut s.gate, &mut s.mm);
            let xq_up = if s.xq.matches(layer.w_up.ty) {
                &s.xq
            } else {
                s.xq2.load(layer.w_up.ty, &s.xn, n, d)?;
                &s.xq2
            };
            matmul(file, &layer.w_up, xq_up, n, &mut s.up, &mut s.mm);
            quant::silu_mul(&mut s.gate[..n * ff], &s.up[..n * ff]);
            s.xq.load(layer.w_down.ty, &s.gate, n, ff)?;
            matmul(
                file,
                &layer.w_down,
                &s.xq,
                n,
                &mut s.tmp[..n * d],
                &mut s.mm,
            );
            add_tmp(&mut s.x[..n * d], &s.tmp[..n * d]);
            self.finish_layer(l, &mut s.stage);
        }
        for e in entries {
            caches[e.cache].len += e.tokens.len();
        }

        // Output rows: gather the rows that asked for output, normalise, project.
        let mut o = 0;
        let mut r = 0;
        for e in entries {
            let len = e.tokens.len();
            let rows = match e.output {
                Logits::Last => r + len - 1..r + len,
                Logits::All => r..r + len,
            };
            for row in rows {
                rms_norm(
                    &s.x[row * d..(row + 1) * d],
                    &self.output_norm,
                    c.rms_eps,
                    &mut s.xn[o * d..(o + 1) * d],
                );
                o += 1;
            }
            r += len;
        }
        match kind {
            OutputKind::Hidden => out.copy_from_slice(&s.xn[..n_out * d]),
            OutputKind::Logits => {
                s.xq.load(self.output.ty, &s.xn, n_out, d)?;
                if self.layer_streaming {
                    let (xq, head, mm) = (&s.xq, &mut s.head, &mut s.mm);
                    self.output_head_streaming(file, xq, n_out, out, head, mm, &mut s.stage)?;
                } else {
                    matmul(file, &self.output, &s.xq, n_out, out, &mut s.mm);
                }
            }
        }
        Ok(())
    }
}

/// Output-head bytes processed between releases in layer-streaming mode: the head is the
/// largest matrix of a small model (51 MiB for a 1B llama), larger than a layer.
const HEAD_CHUNK_BYTES: usize = 4 << 20;

impl Model {
    /// The LM head in row chunks, each released (or, staged from a streaming source, wiped)
    /// as soon as it has been used.
    #[allow(clippy::too_many_arguments)]
    fn output_head_streaming(
        &self,
        file: &[u8],
        xq: &QuantBuf,
        n_out: usize,
        out: &mut [f32],
        head: &mut Vec<f32>,
        mm: &mut MatmulScratch,
        stage: &mut Staging,
    ) -> Result<()> {
        let w = &self.output;
        let nv = w.rows;
        let rows_per = (HEAD_CHUNK_BYTES / w.row_bytes.max(1)).clamp(64, nv.max(64));
        let mut r0 = 0;
        while r0 < nv {
            let rows = rows_per.min(nv - r0);
            let (bytes, part) = self.head_rows(r0, rows, file, stage)?;
            grow(head, n_out * rows);
            matmul(bytes, &part, xq, n_out, &mut head[..n_out * rows], mm);
            for b in 0..n_out {
                out[b * nv + r0..b * nv + r0 + rows]
                    .copy_from_slice(&head[b * rows..(b + 1) * rows]);
            }
            self.finish_head_rows(&part, stage);
            r0 += rows;
        }
        Ok(())
    }
}

fn add_tmp(x: &mut [f32], t: &[f32]) {
    x.iter_mut().zip(t).for_each(|(a, &b)| *a += b);
}
