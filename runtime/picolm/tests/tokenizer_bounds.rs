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

/// A small deterministic generator (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Random text from pieces that stress each stage: whitespace of every kind, contractions,
/// digits, scripts, emoji sequences, whole and broken special-token texts, arbitrary code points.
fn random_text(rng: &mut Rng) -> String {
    const PIECES: &[&str] = &[
        " ",
        "  ",
        "\t",
        "\n",
        "\r\n",
        "\u{3000}",
        "\u{85}",
        "\u{a0}",
        "\u{200b}",
        "'s",
        "'LL",
        "'",
        "a",
        "Hello",
        "world",
        "123",
        "4567",
        "½",
        "٣",
        "é",
        "e\u{301}",
        "日本",
        "한국어",
        "مرحبا",
        "🦙",
        "👨\u{200d}👩\u{200d}👧",
        "🏳️\u{200d}🌈",
        "!",
        "...",
        "{}",
        "<|im_start|>",
        "<|im_end|>",
        "<|endoftext|>",
        "<|begin_of_text|>",
        "<|eot_id|>",
        "<s>",
        "</s>",
        "<unk>",
        "<|im_",
        "|>",
        "<0x0A>",
        "▁",
        "Ġ",
        "\0",
    ];
    let mut s = String::new();
    for _ in 0..rng.below(24) {
        if rng.below(8) == 0 {
            let c = char::from_u32(rng.below(0x11_0000) as u32).unwrap_or('\u{fffd}');
            s.push(c);
        } else {
            s.push_str(PIECES[rng.below(PIECES.len())]);
        }
    }
    s
}

#[test]
fn arbitrary_text_and_ids_never_panic_and_decode_losslessly() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for name in ["llama-spm", "gpt-2", "qwen2", "llama-bpe"] {
        let tok = load(name);
        let spm = tok.kind() == picolm::tokenizer::TokenizerKind::Spm;
        for _ in 0..300 {
            let text = random_text(&mut rng);
            for (add, parse) in [(false, false), (false, true), (true, false), (true, true)] {
                let ids = tok.encode(&text, add, parse).expect("encode");
                let plain = tok.decode(&ids, false).expect("decode");
                let mut stream = tok.stream_decoder();
                let mut streamed = String::new();
                for &id in &ids {
                    streamed.push_str(&stream.push(id).expect("push"));
                }
                streamed.push_str(&stream.flush());
                assert_eq!(streamed, plain, "{name}: {text:?}");
                if add || (spm && parse) {
                    continue;
                }
                // Without BOS, and (for SentencePiece) without the space each special token
                // adds, decoding gives back the text: plain text as is, special texts rendered.
                // SentencePiece writes spaces as `▁`, so a literal `▁` comes back as a space.
                let expected = if spm && !text.is_empty() {
                    format!(" {}", text.replace('▁', " "))
                } else {
                    text.clone()
                };
                assert_eq!(
                    tok.decode(&ids, parse).expect("decode"),
                    expected,
                    "{name} parse={parse}"
                );
            }
        }
        for _ in 0..2000 {
            let ids: Vec<u32> = (0..rng.below(8))
                .map(|_| rng.below(tok.vocab_size()) as u32)
                .collect();
            let text = tok.decode(&ids, rng.below(2) == 0).expect("decode");
            assert!(text.len() < 4096);
        }
    }
}
