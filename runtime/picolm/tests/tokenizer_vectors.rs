//! llama.cpp's own tokenizer test vectors (`models/ggml-vocab-*.gguf.{inp,out}`): every input
//! must tokenize to exactly the ids llama.cpp recorded (`add_special = false`,
//! `parse_special = false`, as llama.cpp's `test-tokenizer-0` runs them).

use std::path::PathBuf;

use picolm::gguf::GgufFile;
use picolm::tokenizer::{Tokenizer, TokenizerKind};

fn vocab_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/vocab")
}

fn load(name: &str) -> Tokenizer {
    let file =
        GgufFile::open(vocab_dir().join(format!("ggml-vocab-{name}.gguf"))).expect("open vocab");
    Tokenizer::from_metadata(file.metadata()).expect("build tokenizer")
}

fn check_vectors(name: &str, kind: TokenizerKind) {
    let tok = load(name);
    assert_eq!(tok.kind(), kind);
    let dir = vocab_dir();
    let inp = std::fs::read_to_string(dir.join(format!("ggml-vocab-{name}.gguf.inp")))
        .expect("read .inp");
    let out = std::fs::read_to_string(dir.join(format!("ggml-vocab-{name}.gguf.out")))
        .expect("read .out");
    let inputs: Vec<&str> = inp.split("\n__ggml_vocab_test__\n").collect();
    let outputs: Vec<&str> = out.split('\n').collect();
    assert_eq!(
        inputs.len(),
        outputs.len(),
        "{name}: .inp and .out disagree on the number of cases"
    );
    assert!(
        inputs.len() > 30,
        "{name}: expected llama.cpp's full test set"
    );
    let mut failures = Vec::new();
    for (text, line) in inputs.iter().zip(&outputs) {
        let expected: Vec<u32> = line
            .split_whitespace()
            .map(|t| t.parse().expect("id"))
            .collect();
        let got = tok.encode(text, false, false).expect("encode");
        if got != expected {
            failures.push(format!(
                "{text:?}\n  expected {expected:?}\n  got      {got:?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{name}: {} of {} cases differ:\n{}",
        failures.len(),
        inputs.len(),
        failures.join("\n")
    );
}

#[test]
fn llama_spm_matches_llama_cpp() {
    check_vectors("llama-spm", TokenizerKind::Spm);
}

#[test]
fn gpt2_matches_llama_cpp() {
    check_vectors("gpt-2", TokenizerKind::Bpe);
}

#[test]
fn qwen2_matches_llama_cpp() {
    check_vectors("qwen2", TokenizerKind::Bpe);
}

#[test]
fn llama3_matches_llama_cpp() {
    check_vectors("llama-bpe", TokenizerKind::Bpe);
}
