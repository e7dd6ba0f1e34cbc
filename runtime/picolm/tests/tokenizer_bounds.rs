//! Tokenization is bounded: megabyte inputs that are worst cases for each stage (one huge BPE
//! word, one huge SentencePiece symbol chain, long whitespace runs, thousands of special
//! tokens) finish in time proportional to their size, and arbitrary input never panics.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use picolm::gguf::GgufFile;
use picolm::tokenizer::Tokenizer;

fn load(name: &str) -> Tokenizer {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("testdata/vocab/ggml-vocab-{name}.gguf"));
    let file = GgufFile::open(path).expect("open vocab");
    Tokenizer::from_metadata(file.metadata()).expect("build tokenizer")
}

const MB: usize = 1 << 20;

fn repeat_to(unit: &str, bytes: usize) -> String {
    unit.repeat(bytes / unit.len())
}

#[test]
fn megabyte_inputs_tokenize_in_bounded_time() {
    let inputs = [
        (
            "prose",
            repeat_to(
                "The quick brown fox jumps over the lazy dog. 日本語 🦙 ",
                MB,
            ),
        ),
        ("one letter", repeat_to("a", MB)),
        ("spaces", repeat_to(" ", MB)),
        ("newlines and tabs", repeat_to("\n\t ", MB)),
        ("digits", repeat_to("1234567890", MB)),
        ("emoji", repeat_to("🦙", MB)),
        (
            "special tokens",
            repeat_to("<|im_start|><|endoftext|>x", MB),
        ),
    ];
    for name in ["llama-spm", "gpt-2", "qwen2", "llama-bpe"] {
        let tok = load(name);
        for (what, text) in &inputs {
            let start = Instant::now();
            let ids = tok.encode(text, true, true).expect("encode");
            let took = start.elapsed();
            eprintln!("{name:10} {what:18} {} tokens in {took:?}", ids.len());
            assert!(!ids.is_empty());
            // Linear-time tokenization takes well under a second here; a quadratic stage
            // would take minutes.
            assert!(
                took < Duration::from_secs(20),
                "{name}: {what} took {took:?}"
            );
        }
    }
}
