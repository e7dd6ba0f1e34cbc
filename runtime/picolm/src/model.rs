//! Model hyper-parameters and weights, read from GGUF metadata and validated against the
//! tensor shapes before anything runs.
//!
//! Weights are not copied: a [`Weight`] records where a tensor's bytes live in the file. Only
//! the small 1-D tensors (norms, biases) are converted to `f32` at load time. A model on a
//! streaming source (see [`crate::source`]) also keeps, per layer, where its matrices go in the
//! staging buffer ([`crate::stream`]).

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::gguf::{GgufFile, Metadata, TensorInfo};
use crate::quant::{self, GgmlType};
use crate::stream::StagedLayer;

/// Transformer families picolm runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// LLaMA and Mistral-style models.
    Llama,
    /// Qwen2: LLaMA with Q/K/V biases and NeoX RoPE.
    Qwen2,
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
        }
    }
}

/// How RoPE pairs the dimensions of a head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    /// Adjacent pairs (2i, 2i+1): llama.cpp's `LLAMA_ROPE_TYPE_NORM` (GGUF llama weights are
    /// permuted by the converter for this).
    Normal,
    /// Halves (i, i + d/2): `LLAMA_ROPE_TYPE_NEOX`.
    Neox,
}

/// Hyper-parameters, from `<arch>.*` metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub arch: Arch,
    pub n_vocab: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub n_ff: usize,
    pub n_ctx_train: usize,
    pub rms_eps: f32,
    pub rope_theta: f32,
    pub rope_dim: usize,
    pub rope_freq_scale: f32,
    pub rope_style: RopeStyle,
}

impl Config {
    pub fn from_metadata(md: &Metadata) -> Result<Self> {
        let arch_name = md
            .get_str("general.architecture")?
            .ok_or_else(|| Error::metadata("general.architecture", "missing"))?;
        let arch = match arch_name {
            "llama" => Arch::Llama,
            "qwen2" => Arch::Qwen2,
            other => {
                return Err(Error::Unsupported(format!(
                    "architecture `{other}` (picolm runs llama and qwen2)"
                )));
            }
        };
        let key = |k: &str| format!("{arch_name}.{k}");
        let n_embd: usize = md.require_int(&key("embedding_length"))?;
        let n_layer: usize = md.require_int(&key("block_count"))?;
        let n_head: usize = md.require_int(&key("attention.head_count"))?;
        let n_head_kv: usize = md
            .get_int(&key("attention.head_count_kv"))?
            .unwrap_or(n_head);
        let n_ff: usize = md.require_int(&key("feed_forward_length"))?;
        let n_ctx_train: usize = md.get_int(&key("context_length"))?.unwrap_or(2048);
        let positive = |k: &str, v: usize| {
            if v == 0 {
                Err(Error::metadata(&key(k), "must be positive"))
            } else {
                Ok(v)
            }
        };
        positive("embedding_length", n_embd)?;
        positive("block_count", n_layer)?;
        positive("attention.head_count", n_head)?;
        positive("attention.head_count_kv", n_head_kv)?;
        positive("feed_forward_length", n_ff)?;
        if !n_head.is_multiple_of(n_head_kv) {
            return Err(Error::metadata(
                &key("attention.head_count_kv"),
                format!("{n_head_kv} does not divide head_count {n_head}"),
            ));
        }
        let head_dim: usize = match md.get_int(&key("attention.key_length"))? {
            Some(d) => d,
            None if n_embd.is_multiple_of(n_head) => n_embd / n_head,
            None => {
                return Err(Error::metadata(
                    &key("attention.head_count"),
                    format!("{n_head} does not divide embedding_length {n_embd}"),
                ));
            }
        };
        if let Some(vd) = md.get_int::<usize>(&key("attention.value_length"))?
            && vd != head_dim
        {
            return Err(Error::Unsupported(format!(
                "value_length {vd} != key_length {head_dim}"
            )));
        }
        if head_dim == 0 || !head_dim.is_multiple_of(2) {
            return Err(Error::metadata(
                &key("attention.key_length"),
                format!("head dim {head_dim} must be even"),
            ));
        }
        let rms_eps = md
            .get_f32(&key("attention.layer_norm_rms_epsilon"))?
            .unwrap_or(1e-5);
        let rope_theta = md.get_f32(&key("rope.freq_base"))?.unwrap_or(10000.0);
        let rope_dim: usize = md
            .get_int(&key("rope.dimension_count"))?
            .unwrap_or(head_dim);
        if rope_dim > head_dim || !rope_dim.is_multiple_of(2) {
            return Err(Error::metadata(
                &key("rope.dimension_count"),
                format!("{rope_dim} must be even and at most the head dim {head_dim}"),
            ));
        }
        let scaling = md.get_str(&key("rope.scaling.type"))?.unwrap_or("none");
        let rope_freq_scale = match scaling {
            "none" => 1.0,
            "linear" => {
                let f = md.get_f32(&key("rope.scaling.factor"))?.unwrap_or(1.0);
                if f <= 0.0 {
                    return Err(Error::metadata(
                        &key("rope.scaling.factor"),
                        format!("{f} must be positive"),
                    ));
                }
                1.0 / f
            }
            other => {
                return Err(Error::Unsupported(format!(
                    "RoPE scaling `{other}` ({})",
                    key("rope.scaling.type")
                )));
            }
        };
        if rope_theta <= 0.0 {
            return Err(Error::metadata(&key("rope.freq_base"), "must be positive"));
        }
        // The vocabulary size comes from the embedding tensor, checked in `Weights::load`.
        Ok(Config {
            arch,
            n_vocab: 0,
            n_embd,
            n_layer,
            n_head,
            n_head_kv,
            head_dim,
            n_ff,
            n_ctx_train,
            rms_eps,
            rope_theta,
            rope_dim,
            rope_freq_scale,
            rope_style: match arch {
                Arch::Llama => RopeStyle::Normal,
                Arch::Qwen2 => RopeStyle::Neox,
            },
        })
    }

    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim
    }
    pub fn kv_dim(&self) -> usize {
        self.n_head_kv * self.head_dim
    }
    /// Bytes of FP16 KV cache for `n_ctx` positions.
    pub fn kv_bytes(&self, n_ctx: usize) -> usize {
        2 * self.n_layer * n_ctx * self.kv_dim() * 2
    }
}

/// A matrix in the mapped file: `rows` output rows of `cols` elements each.
#[derive(Clone, Debug)]
pub struct Weight {
    pub name: String,
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub offset: usize,
    pub size: usize,
    pub row_bytes: usize,
}

impl Weight {
    fn from_info(t: &TensorInfo, cols: usize, rows: usize) -> Result<Self> {
        if t.shape.len() != 2 || t.shape[0] != cols as u64 || t.shape[1] != rows as u64 {
            return Err(Error::tensor(
                &t.name,
                format!("shape {:?}, expected [{cols}, {rows}]", t.shape),
            ));
        }
        if !t.ty.is_supported() {
            return Err(Error::tensor(
                &t.name,
                format!("type {} is not supported by picolm", t.ty.name()),
            ));
        }
        let row_bytes =
            t.ty.row_bytes(cols)
                .ok_or_else(|| Error::tensor(&t.name, "row size overflows"))?;
        Ok(Weight {
            name: t.name.clone(),
            ty: t.ty,
            rows,
            cols,
            offset: t.offset as usize,
            size: t.size as usize,
            row_bytes,
        })
    }

    /// The weight's bytes within `file`: the resident file, or the staging buffer its offset
    /// was re-addressed into.
    #[inline]
    pub fn bytes<'a>(&self, file: &'a [u8]) -> &'a [u8] {
        &file[self.offset..self.offset + self.size]
    }
}

/// One transformer block.
#[derive(Clone, Debug)]
pub struct Layer {
    pub attn_norm: Vec<f32>,
    pub wq: Weight,
    pub wk: Weight,
    pub wv: Weight,
    pub wo: Weight,
    pub bq: Option<Vec<f32>>,
    pub bk: Option<Vec<f32>>,
    pub bv: Option<Vec<f32>>,
    pub ffn_norm: Vec<f32>,
    pub w_gate: Weight,
    pub w_up: Weight,
    pub w_down: Weight,
}

/// A loaded model: the mapped file, its configuration and where every weight lives.
#[derive(Debug)]
pub struct Model {
    pub file: Arc<GgufFile>,
    pub config: Config,
    pub tok_embd: Weight,
    pub output_norm: Vec<f32>,
    /// The LM head; the token embedding when the file ties them (no `output.weight`).
    pub output: Weight,
    pub layers: Vec<Layer>,
    /// Touch weights one layer at a time and release them after use (O(layer) resident
    /// memory instead of O(model)); see [`Model::with_layer_streaming`]. Always on for a
    /// streaming source.
    pub layer_streaming: bool,
    /// Streaming source only: per layer, its runs in the file and its staged addressing.
    pub(crate) staged: Vec<StagedLayer>,
    /// See [`Model::huge_page_share`].
    huge_page_share: Option<f64>,
}

impl Layer {
    /// The layer's matrices (for residency control).
    pub fn weights(&self) -> [&Weight; 7] {
        [
            &self.wq,
            &self.wk,
            &self.wv,
            &self.wo,
            &self.w_gate,
            &self.w_up,
            &self.w_down,
        ]
    }
}

impl Model {
    /// Layer streaming: each layer's weights are released (`MADV_DONTNEED`) once the layer
    /// has run, and the output head is processed in row chunks released the same way, so the
    /// resident set stays near one layer plus the KV cache however large the file is.
    /// A streaming source (an encrypted file) is always streamed: its layers are staged one at
    /// a time into a wiped buffer whatever `on` says.
    ///
    /// On an mmap each layer is mapped in one `MADV_POPULATE_READ` before it runs, in huge
    /// pages where the kernel can (see [`crate::source::ByteSource::prepare_streaming`]).
    pub fn with_layer_streaming(mut self, on: bool) -> Self {
        let resident_on = on && !self.is_staged() && !self.layer_streaming;
        self.layer_streaming = on || self.is_staged();
        if resident_on {
            self.huge_page_share = self.file.source().prepare_streaming();
        }
        self
    }

    /// Layer streaming on an mmap: the share of the file the page cache serves as huge pages
    /// (`None` when the kernel cannot tell, or the model is not streamed from an mmap).
    pub fn huge_page_share(&self) -> Option<f64> {
        self.huge_page_share
    }

    pub fn load(file: Arc<GgufFile>) -> Result<Self> {
        let mut config = Config::from_metadata(file.metadata())?;
        let c = config.clone();
        let get = |name: &str| {
            file.tensor(name)
                .ok_or_else(|| Error::tensor(name, "missing from the file"))
        };
        let tok_info = get("token_embd.weight")?;
        if tok_info.shape.len() != 2 || tok_info.shape[0] != c.n_embd as u64 {
            return Err(Error::tensor(
                "token_embd.weight",
                format!(
                    "shape {:?}, expected [{}, n_vocab]",
                    tok_info.shape, c.n_embd
                ),
            ));
        }
        let n_vocab = tok_info.shape[1] as usize;
        config.n_vocab = n_vocab;
        let tok_embd = Weight::from_info(tok_info, c.n_embd, n_vocab)?;
        let output = match file.tensor("output.weight") {
            Some(t) => Weight::from_info(t, c.n_embd, n_vocab)?,
            None => tok_embd.clone(),
        };
        let vec = |name: &str, len: usize| -> Result<Vec<f32>> {
            let t = get(name)?;
            if t.shape.len() != 1 || t.shape[0] != len as u64 {
                return Err(Error::tensor(
                    name,
                    format!("shape {:?}, expected [{len}]", t.shape),
                ));
            }
            let mut out = vec![0f32; len];
            // Read, not borrowed from a map: with layer streaming nothing of the file may
            // stay mapped after loading (a norm's page can be a whole 2 MiB huge page).
            let size = usize::try_from(t.size)
                .map_err(|_| Error::tensor(name, "size does not fit in memory"))?;
            let mut bytes = zeroize::Zeroizing::new(vec![0u8; size]);
            file.read_at(t.offset, &mut bytes)?;
            quant::dequantize(t.ty, &bytes, &mut out)
                .map_err(|e| Error::tensor(name, e.to_string()))?;
            Ok(out)
        };
        let opt_vec = |name: &str, len: usize| -> Result<Option<Vec<f32>>> {
            match file.tensor(name) {
                Some(_) => vec(name, len).map(Some),
                None => Ok(None),
            }
        };
        let mat = |name: &str, cols: usize, rows: usize| Weight::from_info(get(name)?, cols, rows);
        let mut layers = Vec::with_capacity(c.n_layer);
        for i in 0..c.n_layer {
            let n = |s: &str| format!("blk.{i}.{s}");
            let layer = Layer {
                attn_norm: vec(&n("attn_norm.weight"), c.n_embd)?,
                wq: mat(&n("attn_q.weight"), c.n_embd, c.q_dim())?,
                wk: mat(&n("attn_k.weight"), c.n_embd, c.kv_dim())?,
                wv: mat(&n("attn_v.weight"), c.n_embd, c.kv_dim())?,
                wo: mat(&n("attn_output.weight"), c.q_dim(), c.n_embd)?,
                bq: opt_vec(&n("attn_q.bias"), c.q_dim())?,
                bk: opt_vec(&n("attn_k.bias"), c.kv_dim())?,
                bv: opt_vec(&n("attn_v.bias"), c.kv_dim())?,
                ffn_norm: vec(&n("ffn_norm.weight"), c.n_embd)?,
                w_gate: mat(&n("ffn_gate.weight"), c.n_embd, c.n_ff)?,
                w_up: mat(&n("ffn_up.weight"), c.n_embd, c.n_ff)?,
                w_down: mat(&n("ffn_down.weight"), c.n_ff, c.n_embd)?,
            };
            if c.arch == Arch::Qwen2
                && (layer.bq.is_none() || layer.bk.is_none() || layer.bv.is_none())
            {
                return Err(Error::tensor(
                    &n("attn_q.bias"),
                    "qwen2 needs Q, K and V biases",
                ));
            }
            layers.push(layer);
        }
        let output_norm = vec("output_norm.weight", c.n_embd)?;
        let streaming = file.resident().is_none();
        let staged = if streaming {
            layers
                .iter()
                .map(StagedLayer::plan)
                .collect::<Result<_>>()?
        } else {
            Vec::new()
        };
        Ok(Model {
            file,
            config,
            tok_embd,
            output_norm,
            output,
            layers,
            layer_streaming: streaming,
            staged,
            huge_page_share: None,
        })
    }

    /// The resident file's bytes; empty for a streaming source, whose weights are staged per
    /// layer instead (see [`crate::stream`]).
    #[inline]
    pub fn bytes(&self) -> &[u8] {
        self.file.resident().unwrap_or(&[])
    }

    /// Bytes of weights read per decoded token (the memory-bandwidth bound of decode).
    pub fn weight_bytes_per_token(&self) -> usize {
        let l: usize = self
            .layers
            .iter()
            .map(|l| {
                l.wq.size
                    + l.wk.size
                    + l.wv.size
                    + l.wo.size
                    + l.w_gate.size
                    + l.w_up.size
                    + l.w_down.size
            })
            .sum();
        l + self.output.size + self.tok_embd.row_bytes
    }
}
