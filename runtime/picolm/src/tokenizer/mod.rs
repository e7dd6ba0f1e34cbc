//! Tokenizers built from GGUF metadata: byte-level BPE (`gpt2`) and SentencePiece-style
//! (`llama`).
//!
//! The module owns text ⇄ token id conversion and nothing else: it reads only
//! `tokenizer.ggml.*` metadata and never touches tensors. Its contract is llama.cpp's
//! (`src/llama-vocab.cpp`): [`Tokenizer::encode`] returns the ids `llama_tokenize` returns for
//! the same file and flags, [`Tokenizer::piece`] the bytes of `llama_token_to_piece`, and the
//! end-of-generation set is built by the same rules. The tests compare against llama.cpp's own
//! vocabulary test vectors and against ids produced by llama-cpp-python.
//!
//! Known differences, all on inputs real models do not produce: llama.cpp visits the vocabulary
//! in hash order when it auto-detects special tokens (here: id order), sorts equally long
//! special tokens unstably (here: by id), aborts when an SPM vocabulary lacks a byte token
//! (here: the unknown token, or an error), and sets per-model `lstrip`/`rstrip` attributes from
//! `general.name` (phi-3, jina, modern-bert), which picolm does not.

mod bpe;
mod pretokenize;
mod spm;
mod unicode_data;

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::gguf::Metadata;
use pretokenize::PreTokenizer;

/// Which tokenization algorithm a vocabulary uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenizerKind {
    /// Byte-level BPE with ranked merges (`tokenizer.ggml.model = gpt2`).
    Bpe,
    /// SentencePiece-style score-driven merging with byte fallback (`tokenizer.ggml.model = llama`).
    Spm,
}

/// Token attributes, as llama.cpp's `llama_token_attr` bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Attr(u16);

impl Attr {
    const UNDEFINED: Attr = Attr(0);
    const UNKNOWN: Attr = Attr(1 << 0);
    const UNUSED: Attr = Attr(1 << 1);
    const NORMAL: Attr = Attr(1 << 2);
    const CONTROL: Attr = Attr(1 << 3);
    const USER_DEFINED: Attr = Attr(1 << 4);
    const BYTE: Attr = Attr(1 << 5);
    /// Hidden unless special tokens are parsed or rendered.
    const HIDDEN: Attr = Attr(Attr::CONTROL.0 | Attr::UNKNOWN.0);
    /// Split out of raw text before tokenization, and rendered as their text.
    const SPECIAL: Attr = Attr(Attr::CONTROL.0 | Attr::UNKNOWN.0 | Attr::USER_DEFINED.0);

    /// From `tokenizer.ggml.token_type` (llama.cpp's `llama_token_type`).
    fn from_token_type(t: i64) -> Attr {
        match t {
            1 => Attr::NORMAL,
            2 => Attr::UNKNOWN,
            3 => Attr::CONTROL,
            4 => Attr::USER_DEFINED,
            5 => Attr::UNUSED,
            6 => Attr::BYTE,
            _ => Attr::UNDEFINED,
        }
    }
    fn any(self, other: Attr) -> bool {
        self.0 & other.0 != 0
    }
    fn union(self, other: Attr) -> Attr {
        Attr(self.0 | other.0)
    }
}

#[derive(Debug)]
struct Token {
    text: String,
    score: f32,
    attr: Attr,
}

/// Token texts llama.cpp treats as end-of-turn when `tokenizer.ggml.eot_token_id` is absent.
const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];

/// Token texts llama.cpp always adds to the end-of-generation set.
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];

/// Fill-in-the-middle token texts, detected by llama.cpp when the ids are not in the metadata:
/// (metadata keys, texts). The pad, repo and file-separator tokens also end generation.
const FIM_TOKENS: [(&[&str], &[&str]); 6] = [
    (
        &["fim_pre_token_id", "prefix_token_id"],
        &[
            "<|fim_prefix|>",
            "<fim-prefix>",
            "<fim_prefix>",
            "<｜fim▁begin｜>",
            "<PRE>",
            "▁<PRE>",
            "<|code_prefix|>",
            "<|prefix|>",
        ],
    ),
    (
        &["fim_suf_token_id", "suffix_token_id"],
        &[
            "<|fim_suffix|>",
            "<fim-suffix>",
            "<fim_suffix>",
            "<｜fim▁hole｜>",
            "<SUF>",
            "▁<SUF>",
            "<|code_suffix|>",
            "<|suffix|>",
        ],
    ),
    (
        &["fim_mid_token_id", "middle_token_id"],
        &[
            "<|fim_middle|>",
            "<fim-middle>",
            "<fim_middle>",
            "<｜fim▁end｜>",
            "<MID>",
            "▁<MID>",
            "<|code_middle|>",
            "<|middle|>",
        ],
    ),
    (
        &["fim_pad_token_id"],
        &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"],
    ),
    (
        &["fim_rep_token_id"],
        &[
            "<|fim_repo|>",
            "<|repo_name|>",
            "<fim-repo>",
            "<REPO>",
            "<reponame>",
        ],
    ),
    (&["fim_sep_token_id"], &["<|file_sep|>"]),
];

/// `tokenizer.ggml.pre` values picolm implements: (names, pre-tokenizer, ignore_merges,
/// add_bos default), grouped as llama.cpp groups them.
const PRE_TOKENIZERS: &[(&[&str], PreTokenizer, bool, bool)] = &[
    (&["default"], PreTokenizer::Default, false, false),
    (
        &[
            "gpt-2",
            "phi-2",
            "mpt",
            "olmo",
            "jais",
            "gigachat",
            "exaone4",
            "a.x-4.0",
            "mellum",
            "trillion",
            "granite-docling",
        ],
        PreTokenizer::Gpt2,
        false,
        false,
    ),
    (
        &[
            "llama3",
            "llama-v3",
            "llama-bpe",
            "falcon3",
            "falcon-h1",
            "pixtral",
            "midm-2.0",
            "lfm2",
            "jina-v5-nano",
        ],
        PreTokenizer::Llama3,
        true,
        true,
    ),
    (&["dbrx", "smaug-bpe"], PreTokenizer::Llama3, false, false),
    (
        &[
            "qwen2",
            "deepseek-r1-qwen",
            "kormo",
            "f2llmv2",
            "megrez",
            "stablelm2",
            "hunyuan",
            "solar-open",
            "grok-2",
        ],
        PreTokenizer::Qwen2,
        false,
        false,
    ),
];

/// The vocabulary and everything derived from it; shared behind an `Arc` so tokenizers and
/// stream decoders are cheap to clone and move between threads.
struct Vocab {
    kind: TokenizerKind,
    pre: Option<(String, PreTokenizer)>,
    tokens: Vec<Token>,
    /// Text → id; a text that occurs twice maps to its last id, as in llama.cpp.
    ids: HashMap<String, u32>,
    merges: bpe::Merges,
    /// The token each byte falls back to (SPM).
    byte_tokens: [Option<u32>; 256],
    /// What each token renders as when special tokens are rendered.
    pieces: Vec<Box<[u8]>>,
    /// Control, user-defined and unknown tokens, longest text first: the order in which they
    /// are split out of raw text.
    specials: Vec<u32>,
    eog: BTreeSet<u32>,
    bos: Option<u32>,
    eos: Option<u32>,
    eot: Option<u32>,
    unk: Option<u32>,
    add_bos: bool,
    add_eos: bool,
    add_space_prefix: bool,
    ignore_merges: bool,
}

impl Vocab {
    fn id(&self, text: &str) -> Option<u32> {
        self.ids.get(text).copied()
    }
    fn score(&self, id: u32) -> f32 {
        self.tokens[id as usize].score
    }
    fn byte_token(&self, b: u8) -> Result<u32> {
        self.byte_tokens[usize::from(b)]
            .or(self.unk)
            .ok_or_else(|| {
                Error::Tokenizer(format!("no token for byte 0x{b:02X} and no unknown token"))
            })
    }
}

/// A tokenizer for one model's vocabulary. Cheap to clone (the vocabulary is shared).
#[derive(Clone)]
pub struct Tokenizer {
    vocab: Arc<Vocab>,
}

impl fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = &self.vocab;
        f.debug_struct("Tokenizer")
            .field("kind", &v.kind)
            .field("pre", &v.pre.as_ref().map(|(name, _)| name))
            .field("vocab_size", &v.tokens.len())
            .field("merges", &v.merges.len())
            .field("bos", &v.bos)
            .field("eos", &v.eos)
            .field("add_bos", &v.add_bos)
            .finish_non_exhaustive()
    }
}

const KEY_MODEL: &str = "tokenizer.ggml.model";
const KEY_PRE: &str = "tokenizer.ggml.pre";
const KEY_TOKENS: &str = "tokenizer.ggml.tokens";
const KEY_SCORES: &str = "tokenizer.ggml.scores";
const KEY_TOKEN_TYPE: &str = "tokenizer.ggml.token_type";
const KEY_MERGES: &str = "tokenizer.ggml.merges";

/// The tokenizer kind named by `tokenizer.ggml.model`.
fn kind_of(md: &Metadata) -> Result<TokenizerKind> {
    match md.get_str(KEY_MODEL)? {
        Some("llama") => Ok(TokenizerKind::Spm),
        Some("gpt2") => Ok(TokenizerKind::Bpe),
        Some(other) => Err(Error::Unsupported(format!(
            "tokenizer model `{other}` ({KEY_MODEL}); picolm implements `gpt2` (byte-level BPE) and `llama` (SentencePiece)"
        ))),
        None => Err(Error::metadata(KEY_MODEL, "missing")),
    }
}

/// A special token id: llama.cpp's default for the tokenizer kind, replaced by the metadata value
/// when that is a valid id (an out-of-range value keeps the default, as llama.cpp does).
fn special_id(
    md: &Metadata,
    name: &str,
    default: Option<u32>,
    n_tokens: usize,
) -> Result<Option<u32>> {
    let key = format!("tokenizer.ggml.{name}");
    let default = default.filter(|&id| (id as usize) < n_tokens);
    Ok(match md.get_int::<i64>(&key)? {
        Some(id) => u32::try_from(id)
            .ok()
            .filter(|&id| (id as usize) < n_tokens)
            .or(default),
        None => default,
    })
}

/// The texts of the BOS and EOS tokens (empty when there is none), for chat templates.
pub(crate) fn bos_eos_text(md: &Metadata) -> Result<(String, String)> {
    let kind = kind_of(md)?;
    let tokens = md
        .get_str_array(KEY_TOKENS)?
        .ok_or_else(|| Error::metadata(KEY_TOKENS, "missing"))?;
    let (bos, eos) = match kind {
        TokenizerKind::Spm => (Some(1), Some(2)),
        TokenizerKind::Bpe => (Some(11), Some(11)),
    };
    let text = |id: Option<u32>| {
        id.and_then(|id| tokens.get(id as usize))
            .map_or(String::new(), |s| (*s).to_owned())
    };
    Ok((
        text(special_id(md, "bos_token_id", bos, tokens.len())?),
        text(special_id(md, "eos_token_id", eos, tokens.len())?),
    ))
}

impl Tokenizer {
    /// Builds the tokenizer from `tokenizer.ggml.*` metadata.
    pub fn from_metadata(md: &Metadata) -> Result<Self> {
        let kind = kind_of(md)?;
        let texts = md
            .get_str_array(KEY_TOKENS)?
            .ok_or_else(|| Error::metadata(KEY_TOKENS, "missing"))?;
        let n = texts.len();
        if n == 0 || u32::try_from(n).is_err() || i32::try_from(n).is_err() {
            return Err(Error::metadata(
                KEY_TOKENS,
                format!("expected 1 to {} tokens, found {n}", i32::MAX),
            ));
        }
        let scores = md.get_f32_array(KEY_SCORES)?;
        if let Some(s) = &scores
            && s.len() < n
        {
            return Err(Error::metadata(
                KEY_SCORES,
                format!("{} scores for {n} tokens", s.len()),
            ));
        }
        let types = md.get_int_array(KEY_TOKEN_TYPE)?;
        if let Some(t) = &types
            && t.len() < n
        {
            return Err(Error::metadata(
                KEY_TOKEN_TYPE,
                format!("{} token types for {n} tokens", t.len()),
            ));
        }

        let mut tokens = Vec::with_capacity(n);
        let mut ids = HashMap::with_capacity(n);
        for (i, text) in texts.iter().enumerate() {
            // llama.cpp renames empty tokens so every text is a usable, unique-ish key.
            let text = if text.is_empty() {
                format!("[EMPTY_{i}]")
            } else {
                (*text).to_owned()
            };
            ids.insert(text.clone(), i as u32);
            tokens.push(Token {
                text,
                score: scores.as_ref().map_or(0.0, |s| s[i]),
                attr: types
                    .as_ref()
                    .map_or(Attr::NORMAL, |t| Attr::from_token_type(t[i])),
            });
        }

        let (pre, ignore_merges, mut add_bos, mut add_space_prefix, merges) = match kind {
            TokenizerKind::Spm => (None, false, true, true, bpe::Merges::default()),
            TokenizerKind::Bpe => {
                // An absent or empty value means llama.cpp's `default`.
                let name = md
                    .get_str(KEY_PRE)?
                    .filter(|s| !s.is_empty())
                    .unwrap_or("default");
                let &(_, pre, ignore_merges, add_bos) = PRE_TOKENIZERS
                    .iter()
                    .find(|(names, ..)| names.contains(&name))
                    .ok_or_else(|| {
                        let known: Vec<&str> = PRE_TOKENIZERS
                            .iter()
                            .flat_map(|(n, ..)| n.iter().copied())
                            .collect();
                        Error::Unsupported(format!(
                            "pre-tokenizer `{name}` ({KEY_PRE}); picolm implements {}",
                            known.join(", ")
                        ))
                    })?;
                let lines = md.get_str_array(KEY_MERGES)?.ok_or_else(|| {
                    Error::metadata(KEY_MERGES, "missing (byte-level BPE needs its merges)")
                })?;
                (
                    Some((name.to_owned(), pre)),
                    ignore_merges,
                    add_bos,
                    false,
                    bpe::Merges::new(lines),
                )
            }
        };
        if let Some(v) = md.get_bool("tokenizer.ggml.add_space_prefix")? {
            add_space_prefix = v;
        }
        if let Some(v) = md.get_bool("tokenizer.ggml.add_bos_token")? {
            add_bos = v;
        }
        let add_eos = md
            .get_bool("tokenizer.ggml.add_eos_token")?
            .unwrap_or(false);

        let (bos, eos, unk) = match kind {
            TokenizerKind::Spm => (Some(1), Some(2), Some(0)),
            TokenizerKind::Bpe => (Some(11), Some(11), None),
        };
        let bos = special_id(md, "bos_token_id", bos, n)?;
        let eos = special_id(md, "eos_token_id", eos, n)?;
        let unk = special_id(md, "unknown_token_id", unk, n)?;
        let mut eot = special_id(md, "eot_token_id", None, n)?;
        let mut eom = special_id(md, "eom_token_id", None, n)?;
        let mut fim = [None; 6];
        for (slot, (keys, _)) in fim.iter_mut().zip(FIM_TOKENS) {
            for key in keys {
                *slot = special_id(md, key, *slot, n)?;
            }
        }

        // Auto-detection by text, as llama.cpp does for files converted without these ids; a
        // detected token is forced to be a control token. llama.cpp takes the first match in
        // hash order; here the earliest text in the list wins (`<|im_end|>` before
        // `<|endoftext|>`), which is what llama.cpp ends up with on Qwen and Llama 3 vocabularies.
        // Shadowed duplicates are skipped because llama.cpp walks its text → id map.
        let visible = |tokens: &[Token], id: usize| ids.get(&tokens[id].text) == Some(&(id as u32));
        let detect = |slot: &mut Option<u32>, texts: &[&str], tokens: &mut [Token]| {
            if slot.is_some() {
                return;
            }
            if let Some(id) = texts.iter().find_map(|t| ids.get(*t).copied()) {
                *slot = Some(id);
                tokens[id as usize].attr = tokens[id as usize].attr.union(Attr::CONTROL);
            }
        };
        detect(&mut eot, EOT_TEXTS, &mut tokens);
        detect(&mut eom, &["<|eom_id|>"], &mut tokens);
        for (slot, (_, texts)) in fim.iter_mut().zip(FIM_TOKENS) {
            detect(slot, texts, &mut tokens);
        }

        let mut eog: BTreeSet<u32> = fim[3..].iter().flatten().copied().collect();
        for id in 0..n {
            if !visible(&tokens, id) {
                continue;
            }
            if EOG_TEXTS.contains(&tokens[id].text.as_str()) {
                eog.insert(id as u32);
                tokens[id].attr = tokens[id].attr.union(Attr::CONTROL);
            }
            // gpt-oss: llama.cpp always renders these.
            if matches!(
                tokens[id].text.as_str(),
                "<|channel|>" | "<|message|>" | "<|start|>" | "<|constrain|>"
            ) {
                tokens[id].attr = Attr::USER_DEFINED;
            }
        }
        eog.extend([eos, eot, eom].into_iter().flatten());
        // o200k_harmony and solar-open: `<|end|>` ends a message, not the generation.
        if let Some(end) = find_text(&eog, &tokens, &["<|end|>"]) {
            let has = |texts: &[&str]| find_text(&eog, &tokens, texts).is_some();
            if has(&["<|call|>", "<|calls|>"]) && (has(&["<|return|>"]) || has(&["<|flush|>"])) {
                eog.remove(&end);
                tokens[end as usize].attr = Attr::USER_DEFINED;
            }
        }
        // gemma4 and plamo: `</s>` is an ordinary token.
        if let Some(s) = find_text(&eog, &tokens, &["</s>"])
            && find_text(&eog, &tokens, &["<|tool_response>", "<|plamo:eos|>"]).is_some()
        {
            eog.remove(&s);
            tokens[s as usize].attr = Attr::NORMAL;
        }

        let mut specials: Vec<u32> = (0..n as u32)
            .filter(|&id| tokens[id as usize].attr.any(Attr::SPECIAL))
            .collect();
        specials.sort_by_key(|&id| std::cmp::Reverse(tokens[id as usize].text.len()));

        let mut byte_tokens = [None; 256];
        if kind == TokenizerKind::Spm {
            for (b, slot) in byte_tokens.iter_mut().enumerate() {
                *slot = ids.get(&format!("<0x{b:02X}>")).copied().or_else(|| {
                    // llama.cpp falls back to the byte itself as a one-byte token text, which
                    // can only be valid UTF-8 for ASCII.
                    u8::try_from(b).ok().filter(u8::is_ascii).and_then(|b| {
                        ids.get(char::from(b).encode_utf8(&mut [0; 4]) as &str)
                            .copied()
                    })
                });
            }
        }

        let pieces = tokens
            .iter()
            .enumerate()
            .map(|(id, t)| render(kind, id, t).map(Vec::into_boxed_slice))
            .collect::<Result<Vec<_>>>()?;

        Ok(Tokenizer {
            vocab: Arc::new(Vocab {
                kind,
                pre,
                tokens,
                ids,
                merges,
                byte_tokens,
                pieces,
                specials,
                eog,
                bos,
                eos,
                eot,
                unk,
                add_bos,
                add_eos,
                add_space_prefix,
                ignore_merges,
            }),
        })
    }

    pub fn kind(&self) -> TokenizerKind {
        self.vocab.kind
    }

    /// The `tokenizer.ggml.pre` value in effect (BPE only; `default` when the key is absent).
    pub fn pre_tokenizer(&self) -> Option<&str> {
        self.vocab.pre.as_ref().map(|(name, _)| name.as_str())
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab.tokens.len()
    }

    pub fn bos(&self) -> Option<u32> {
        self.vocab.bos
    }

    pub fn eos(&self) -> Option<u32> {
        self.vocab.eos
    }

    /// The end-of-turn token (from metadata, or detected by its text).
    pub fn eot(&self) -> Option<u32> {
        self.vocab.eot
    }

    /// Whether `encode(.., add_special = true, ..)` starts with BOS.
    pub fn add_bos(&self) -> bool {
        self.vocab.add_bos
    }

    /// Whether generating `id` ends the generation (EOS, EOT, EOM, `<|im_end|>`, ...).
    pub fn is_eog(&self, id: u32) -> bool {
        self.vocab.eog.contains(&id)
    }

    /// The id of the token whose vocabulary text is exactly `piece` (e.g. `<|im_end|>`).
    pub fn token_id(&self, piece: &str) -> Option<u32> {
        self.vocab.id(piece)
    }

    /// The raw vocabulary text of a token (`Ġthe`, `▁the`, `<0x0A>`), for diagnostics.
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.vocab.tokens.get(id as usize).map(|t| t.text.as_str())
    }

    /// Tokenizes `text` like `llama_tokenize(text, add_special, parse_special)`: with
    /// `add_special`, BOS/EOS are added where the model asks for them; with `parse_special`,
    /// control-token texts in `text` (`<|im_start|>`) become their tokens instead of being
    /// tokenized as plain text. User-defined tokens are always matched.
    pub fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Result<Vec<u32>> {
        let v = &*self.vocab;
        let mut out = Vec::new();
        let required = |id: Option<u32>, what: &str| {
            id.ok_or_else(|| {
                Error::Tokenizer(format!(
                    "the model asks for a {what} token but defines none"
                ))
            })
        };
        if add_special && v.add_bos {
            out.push(required(v.bos, "BOS")?);
        }
        let mut prev_special = true;
        let mut scratch = String::new();
        for fragment in self.partition(text, parse_special) {
            match fragment {
                Fragment::Token(id) => {
                    out.push(id);
                    prev_special = true;
                }
                Fragment::Text(raw) => {
                    match (v.kind, &v.pre) {
                        (TokenizerKind::Spm, _) => {
                            scratch.clear();
                            // SentencePiece sees a leading space at the start and after each
                            // special token, and spaces as `▁`.
                            if v.add_space_prefix && prev_special {
                                scratch.push('▁');
                            }
                            scratch.extend(raw.chars().map(|c| if c == ' ' { '▁' } else { c }));
                            spm::encode(v, &scratch, &mut out)?;
                        }
                        (TokenizerKind::Bpe, Some((_, pre))) => {
                            for word in pre.split(raw) {
                                scratch.clear();
                                bpe::byte_encode(word, &mut scratch);
                                self.encode_bpe_word(&scratch, &mut out);
                            }
                        }
                        (TokenizerKind::Bpe, None) => {
                            return Err(Error::Tokenizer(
                                "BPE vocabulary without a pre-tokenizer".into(),
                            ));
                        }
                    }
                    prev_special = false;
                }
            }
        }
        if add_special && v.add_eos {
            out.push(required(v.eos, "EOS")?);
        }
        Ok(out)
    }

    fn encode_bpe_word(&self, word: &str, out: &mut Vec<u32>) {
        let v = &*self.vocab;
        if v.ignore_merges
            && let Some(id) = v.id(word)
        {
            out.push(id);
            return;
        }
        for range in bpe::merge(word, &v.merges) {
            let piece = &word[range];
            match v.id(piece) {
                Some(id) => out.push(id),
                None => {
                    // llama.cpp's fallback looks each byte of the byte-encoded piece up as a
                    // one-byte text; only ASCII bytes can match, the rest are dropped.
                    for b in piece.bytes().filter(u8::is_ascii) {
                        if let Some(id) = v.id(char::from(b).encode_utf8(&mut [0; 4])) {
                            out.push(id);
                        }
                    }
                }
            }
        }
    }

    /// Splits special-token texts out of `text` (llama.cpp's `tokenizer_st_partition`): each
    /// special token in turn, longest first, is cut out of every remaining raw fragment.
    fn partition<'t>(&self, text: &'t str, parse_special: bool) -> Vec<Fragment<'t>> {
        let v = &*self.vocab;
        let mut fragments = Vec::new();
        if text.is_empty() {
            return fragments;
        }
        fragments.push(Fragment::Text(text));
        for &id in &v.specials {
            let token = &v.tokens[id as usize];
            if !parse_special && token.attr.any(Attr::HIDDEN) {
                continue;
            }
            let needle = token.text.as_str();
            if !fragments
                .iter()
                .any(|f| matches!(f, Fragment::Text(t) if t.contains(needle)))
            {
                continue;
            }
            let mut next = Vec::with_capacity(fragments.len() + 2);
            for fragment in fragments {
                let Fragment::Text(raw) = fragment else {
                    next.push(fragment);
                    continue;
                };
                let mut rest = 0;
                for (at, _) in raw.match_indices(needle) {
                    if at > rest {
                        next.push(Fragment::Text(&raw[rest..at]));
                    }
                    next.push(Fragment::Token(id));
                    rest = at + needle.len();
                }
                if rest < raw.len() {
                    next.push(Fragment::Text(&raw[rest..]));
                }
            }
            fragments = next;
        }
        fragments
    }

    fn token(&self, id: u32) -> Result<&Token> {
        self.vocab.tokens.get(id as usize).ok_or_else(|| {
            Error::Tokenizer(format!(
                "token id {id} is outside the vocabulary of {}",
                self.vocab_size()
            ))
        })
    }

    /// The bytes token `id` stands for, without allocating; control and unknown tokens are
    /// empty unless `render_special`.
    pub fn piece_bytes(&self, id: u32, render_special: bool) -> Result<&[u8]> {
        let token = self.token(id)?;
        if !render_special && token.attr.any(Attr::HIDDEN) {
            return Ok(&[]);
        }
        Ok(&self.vocab.pieces[id as usize])
    }

    /// The bytes token `id` stands for (`llama_token_to_piece(id, lstrip = 0, special =
    /// render_special)`): GPT-2 byte decoding for BPE; `▁` → space and `<0xXX>` → the byte for
    /// SentencePiece. A piece may be part of a UTF-8 sequence.
    pub fn piece(&self, id: u32, render_special: bool) -> Result<Vec<u8>> {
        self.piece_bytes(id, render_special).map(<[u8]>::to_vec)
    }

    /// The text of `ids`: their pieces concatenated (exactly what a [`StreamDecoder`] emits, so
    /// streamed and non-streamed outputs agree), with invalid UTF-8 replaced only at the end.
    /// Unlike `llama_detokenize`, no leading space is stripped and no spaces are cleaned up.
    pub fn decode(&self, ids: &[u32], render_special: bool) -> Result<String> {
        let mut bytes = Vec::new();
        for &id in ids {
            bytes.extend_from_slice(self.piece_bytes(id, render_special)?);
        }
        Ok(String::from_utf8(bytes)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
    }

    /// A decoder for generated tokens that emits only complete UTF-8 (special tokens are not
    /// rendered; see [`StreamDecoder::render_special`]).
    pub fn stream_decoder(&self) -> StreamDecoder {
        StreamDecoder {
            tokenizer: self.clone(),
            render_special: false,
            pending: Vec::new(),
        }
    }
}

/// The first token of `set` whose text is one of `texts`.
fn find_text(set: &BTreeSet<u32>, tokens: &[Token], texts: &[&str]) -> Option<u32> {
    set.iter().copied().find(|&id| {
        tokens
            .get(id as usize)
            .is_some_and(|t| texts.contains(&t.text.as_str()))
    })
}

/// A raw text fragment or a special token cut out of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fragment<'t> {
    Text(&'t str),
    Token(u32),
}

/// What a token renders as with special tokens rendered (llama.cpp's piece cache).
fn render(kind: TokenizerKind, id: usize, token: &Token) -> Result<Vec<u8>> {
    let attr = token.attr;
    if attr.any(Attr::SPECIAL) {
        return Ok(token.text.as_bytes().to_vec());
    }
    if attr.any(Attr::NORMAL) {
        return Ok(match kind {
            TokenizerKind::Spm => token.text.replace('▁', " ").into_bytes(),
            TokenizerKind::Bpe => bpe::byte_decode(&token.text),
        });
    }
    if attr.any(Attr::BYTE) {
        let hex = token
            .text
            .strip_prefix("<0x")
            .and_then(|s| s.strip_suffix('>'))
            .filter(|h| h.len() == 2);
        return match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
            Some(b) => Ok(vec![b]),
            None => Err(Error::metadata(
                KEY_TOKENS,
                format!(
                    "token {id} is typed BYTE but its text {:?} is not <0xHH>",
                    token.text
                ),
            )),
        };
    }
    // Unused and undefined tokens render as nothing, like control tokens.
    Ok(Vec::new())
}

/// Turns generated tokens into text incrementally. A character split across tokens (an emoji
/// made of byte tokens) is held back until it is complete; bytes that can never become valid
/// UTF-8 are replaced by U+FFFD, so the concatenated output equals [`Tokenizer::decode`].
#[derive(Debug, Clone)]
pub struct StreamDecoder {
    tokenizer: Tokenizer,
    render_special: bool,
    pending: Vec<u8>,
}

impl StreamDecoder {
    /// Also render control tokens (`<|im_end|>`) as their text.
    pub fn render_special(mut self, render: bool) -> Self {
        self.render_special = render;
        self
    }

    /// Adds one token; returns the text that is now complete (possibly empty).
    pub fn push(&mut self, id: u32) -> Result<String> {
        let piece = self.tokenizer.piece_bytes(id, self.render_special)?;
        self.pending.extend_from_slice(piece);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return Ok(out);
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    out.push_str(std::str::from_utf8(&self.pending[..valid]).unwrap_or_default());
                    match e.error_len() {
                        // An incomplete sequence at the end: wait for the next token.
                        None => {
                            self.pending.drain(..valid);
                            return Ok(out);
                        }
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + bad);
                        }
                    }
                }
            }
        }
    }

    /// Ends the stream: whatever is still held back, with invalid bytes replaced.
    pub fn flush(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}

#[cfg(test)]
mod tests;
