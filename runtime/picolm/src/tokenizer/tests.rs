//! Tokenizers built from hand-made metadata: malformed or hostile `tokenizer.ggml.*` values are
//! errors that name the key, never panics; edge cases of small vocabularies behave like
//! llama.cpp's.

use super::*;
use crate::gguf::test_writer::Writer;
use crate::gguf::{GgufHeader, Value};

fn metadata(kvs: Vec<(&str, Value)>) -> Metadata {
    let mut w = Writer::default();
    for (k, v) in kvs {
        w = w.kv(k, v);
    }
    GgufHeader::parse(&w.build()).expect("valid GGUF").metadata
}

fn strs(items: &[&str]) -> Value {
    Value::Array(items.iter().map(|s| Value::Str((*s).to_owned())).collect())
}

fn ints(items: &[i32]) -> Value {
    Value::Array(items.iter().map(|&i| Value::I32(i)).collect())
}

fn s(v: &str) -> Value {
    Value::Str(v.to_owned())
}

/// A tiny BPE vocabulary: a, b, ab (merge "a b"), and a control token.
fn tiny_bpe(extra: Vec<(&'static str, Value)>) -> Vec<(&'static str, Value)> {
    let mut kvs = vec![
        (KEY_MODEL, s("gpt2")),
        (KEY_PRE, s("gpt-2")),
        (KEY_TOKENS, strs(&["a", "b", "ab", "<|x|>"])),
        (KEY_TOKEN_TYPE, ints(&[1, 1, 1, 3])),
        (KEY_MERGES, strs(&["a b"])),
    ];
    kvs.extend(extra);
    kvs
}

/// A tiny SentencePiece vocabulary with no byte tokens.
fn tiny_spm(extra: Vec<(&'static str, Value)>) -> Vec<(&'static str, Value)> {
    let mut kvs = vec![
        (KEY_MODEL, s("llama")),
        (
            KEY_TOKENS,
            strs(&["<unk>", "<s>", "</s>", "▁", "h", "i", "▁h", "▁hi"]),
        ),
        (
            KEY_SCORES,
            Value::Array(
                [0.0f32, 0.0, 0.0, -1.0, -2.0, -2.0, -1.5, -0.5]
                    .map(Value::F32)
                    .to_vec(),
            ),
        ),
        (KEY_TOKEN_TYPE, ints(&[2, 3, 3, 1, 1, 1, 1, 1])),
    ];
    kvs.extend(extra);
    kvs
}

fn build(kvs: Vec<(&str, Value)>) -> Result<Tokenizer> {
    Tokenizer::from_metadata(&metadata(kvs))
}

fn metadata_key(err: &Error) -> &str {
    match err {
        Error::Metadata { key, .. } => key,
        other => panic!("expected a metadata error, got {other}"),
    }
}

#[test]
fn tokenizer_is_send_sync_and_cheap_to_share() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<Tokenizer>();
    assert_send_sync::<StreamDecoder>();
}

#[test]
fn missing_or_unknown_model_is_an_error_naming_it() {
    let err = build(vec![(KEY_TOKENS, strs(&["a"]))]).expect_err("no model");
    assert_eq!(metadata_key(&err), KEY_MODEL);
    let err = build(vec![(KEY_MODEL, s("bert")), (KEY_TOKENS, strs(&["a"]))]).expect_err("bert");
    assert!(
        matches!(&err, Error::Unsupported(m) if m.contains("`bert`")),
        "{err}"
    );
    let err =
        build(vec![(KEY_MODEL, Value::U32(1)), (KEY_TOKENS, strs(&["a"]))]).expect_err("type");
    assert_eq!(metadata_key(&err), KEY_MODEL);
}

#[test]
fn unknown_pre_tokenizer_is_an_error_naming_the_value() {
    let mut kvs = tiny_bpe(vec![]);
    kvs[1] = (KEY_PRE, s("tekken-9000"));
    let err = build(kvs).expect_err("unknown pre");
    assert!(
        matches!(&err, Error::Unsupported(m) if m.contains("`tekken-9000`") && m.contains("qwen2")),
        "{err}"
    );
}

#[test]
fn absent_or_empty_pre_tokenizer_means_default() {
    for pre in [None, Some("")] {
        let mut kvs = tiny_bpe(vec![]);
        kvs.remove(1);
        if let Some(p) = pre {
            kvs.push((KEY_PRE, s(p)));
        }
        assert_eq!(build(kvs).expect("build").pre_tokenizer(), Some("default"));
    }
}

#[test]
fn malformed_arrays_are_errors_naming_the_key() {
    let cases: Vec<(&str, Vec<(&str, Value)>)> = vec![
        (KEY_TOKENS, vec![(KEY_MODEL, s("llama"))]),
        (
            KEY_TOKENS,
            vec![(KEY_MODEL, s("llama")), (KEY_TOKENS, Value::Array(vec![]))],
        ),
        (
            KEY_TOKENS,
            vec![(KEY_MODEL, s("llama")), (KEY_TOKENS, ints(&[1, 2]))],
        ),
        (
            KEY_TOKENS,
            vec![(KEY_MODEL, s("llama")), (KEY_TOKENS, s("a"))],
        ),
        (
            KEY_SCORES,
            vec![
                (KEY_MODEL, s("llama")),
                (KEY_TOKENS, strs(&["a", "b"])),
                (KEY_SCORES, Value::Array(vec![Value::F32(0.0)])),
            ],
        ),
        (
            KEY_SCORES,
            vec![
                (KEY_MODEL, s("llama")),
                (KEY_TOKENS, strs(&["a"])),
                (KEY_SCORES, strs(&["x"])),
            ],
        ),
        (
            KEY_TOKEN_TYPE,
            vec![
                (KEY_MODEL, s("llama")),
                (KEY_TOKENS, strs(&["a", "b"])),
                (KEY_TOKEN_TYPE, ints(&[1])),
            ],
        ),
        (
            KEY_TOKEN_TYPE,
            vec![
                (KEY_MODEL, s("llama")),
                (KEY_TOKENS, strs(&["a"])),
                (KEY_TOKEN_TYPE, strs(&["normal"])),
            ],
        ),
        (
            KEY_MERGES,
            vec![
                (KEY_MODEL, s("gpt2")),
                (KEY_PRE, s("gpt-2")),
                (KEY_TOKENS, strs(&["a"])),
            ],
        ),
        (
            KEY_MERGES,
            vec![
                (KEY_MODEL, s("gpt2")),
                (KEY_TOKENS, strs(&["a"])),
                (KEY_MERGES, ints(&[1])),
            ],
        ),
        (
            "tokenizer.ggml.bos_token_id",
            tiny_spm(vec![("tokenizer.ggml.bos_token_id", s("1"))]),
        ),
        (
            "tokenizer.ggml.add_bos_token",
            tiny_spm(vec![("tokenizer.ggml.add_bos_token", Value::U8(1))]),
        ),
    ];
    for (key, kvs) in cases {
        let err = build(kvs).expect_err(key);
        assert_eq!(metadata_key(&err), key, "{err}");
    }
}

#[test]
fn byte_token_with_bad_text_is_an_error_naming_the_token() {
    let err = build(vec![
        (KEY_MODEL, s("llama")),
        (KEY_TOKENS, strs(&["<unk>", "<0xZZ>"])),
        (KEY_TOKEN_TYPE, ints(&[2, 6])),
    ])
    .expect_err("bad byte token");
    assert!(
        err.to_string().contains("token 1") && err.to_string().contains("<0xZZ>"),
        "{err}"
    );
}

#[test]
fn out_of_range_special_ids_keep_llama_cpp_defaults() {
    let tok = build(tiny_spm(vec![
        ("tokenizer.ggml.bos_token_id", Value::U32(999)),
        ("tokenizer.ggml.eos_token_id", Value::I32(-1)),
    ]))
    .expect("build");
    assert_eq!((tok.bos(), tok.eos()), (Some(1), Some(2)));
    // BPE's default BOS/EOS (11) does not exist in a 4-token vocabulary.
    let tok = build(tiny_bpe(vec![])).expect("build");
    assert_eq!((tok.bos(), tok.eos()), (None, None));
}

#[test]
fn asking_for_a_bos_the_model_lacks_is_an_error() {
    let tok = build(tiny_bpe(vec![(
        "tokenizer.ggml.add_bos_token",
        Value::Bool(true),
    )]))
    .expect("build");
    assert!(matches!(
        tok.encode("ab", true, false),
        Err(Error::Tokenizer(_))
    ));
    assert_eq!(tok.encode("ab", false, false).expect("encode"), [2]);
}

#[test]
fn bpe_merges_and_special_tokens() {
    let tok = build(tiny_bpe(vec![])).expect("build");
    assert_eq!(tok.kind(), TokenizerKind::Bpe);
    assert_eq!(
        tok.encode("abab<|x|>a", false, true).expect("encode"),
        [2, 2, 3, 0]
    );
    // Not parsed: the control text is ordinary text, and its bytes have no tokens here, so
    // llama.cpp drops them.
    assert_eq!(tok.encode("ab<|x|>", false, false).expect("encode"), [2]);
    assert_eq!(tok.decode(&[2, 3, 0], false).expect("decode"), "aba");
    assert_eq!(tok.decode(&[2, 3, 0], true).expect("decode"), "ab<|x|>a");
}

#[test]
fn spm_merges_by_score_and_falls_back_to_unknown_without_byte_tokens() {
    let tok = build(tiny_spm(vec![])).expect("build");
    assert_eq!(tok.kind(), TokenizerKind::Spm);
    assert_eq!(tok.encode("hi", true, false).expect("encode"), [1, 7]);
    // "é" has neither a token nor byte tokens: each of its two bytes becomes <unk>.
    assert_eq!(tok.encode("hié", false, false).expect("encode"), [7, 0, 0]);
    // A space prefix follows every special token.
    assert_eq!(
        tok.encode("hi</s>hi", false, true).expect("encode"),
        [7, 2, 7]
    );
    assert_eq!(tok.decode(&[1, 7, 2], false).expect("decode"), " hi");
}

#[test]
fn duplicate_and_empty_texts_follow_llama_cpp() {
    let tok = build(vec![
        (KEY_MODEL, s("llama")),
        (KEY_TOKENS, strs(&["<unk>", "x", "", "x"])),
    ])
    .expect("build");
    assert_eq!(tok.token_id("x"), Some(3), "the last duplicate wins");
    assert_eq!(tok.token_text(2), Some("[EMPTY_2]"));
}

#[test]
fn ids_outside_the_vocabulary_are_errors() {
    let tok = build(tiny_bpe(vec![])).expect("build");
    assert!(matches!(tok.piece(4, true), Err(Error::Tokenizer(_))));
    assert!(tok.decode(&[0, u32::MAX], false).is_err());
    assert!(tok.stream_decoder().push(4).is_err());
    assert_eq!(tok.token_text(4), None);
}

#[test]
fn end_of_generation_set_is_built_from_texts_and_ids() {
    let tok = build(vec![
        (KEY_MODEL, s("gpt2")),
        (
            KEY_TOKENS,
            strs(&[
                "a",
                "<|im_end|>",
                "<|endoftext|>",
                "<|fim_pad|>",
                "<|eom_id|>",
            ]),
        ),
        (KEY_TOKEN_TYPE, ints(&[1, 1, 3, 1, 1])),
        (KEY_MERGES, strs(&[])),
        ("tokenizer.ggml.eos_token_id", Value::U32(2)),
    ])
    .expect("build");
    assert_eq!(
        tok.eot(),
        Some(1),
        "<|im_end|> is preferred over <|endoftext|>"
    );
    assert!((1..=4).all(|id| tok.is_eog(id)) && !tok.is_eog(0));
    // Detected end-of-turn tokens become control tokens: not rendered unless asked.
    assert_eq!(tok.piece(1, false).expect("piece"), b"");
    assert_eq!(tok.piece(1, true).expect("piece"), b"<|im_end|>");
}
