//! Byte-level BPE (GPT-2 style, `tokenizer.ggml.model = gpt2`).
//!
//! Every byte of a pre-tokenized word is mapped to a printable code point (GPT-2's
//! `bytes_to_unicode`), then adjacent symbols are merged, lowest merge rank first and leftmost
//! first among equal ranks, until no adjacent pair has a rank: llama.cpp's
//! `llm_tokenizer_bpe_session`, with its priority queue, so the cost is O(n log n) per word.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::LazyLock;

/// GPT-2's byte → code point table: printable Latin-1 bytes map to themselves, the others to
/// U+0100.. in byte order.
static BYTE_TO_CHAR: LazyLock<[char; 256]> = LazyLock::new(|| {
    let printable = |b: u8| matches!(b, 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut table = ['\0'; 256];
    let mut next = 0x100u32;
    for b in 0..=255u8 {
        table[usize::from(b)] = if printable(b) {
            char::from(b)
        } else {
            next += 1;
            char::from_u32(next - 1).unwrap_or(char::REPLACEMENT_CHARACTER)
        };
    }
    table
});

/// The inverse of [`BYTE_TO_CHAR`], indexed by code point (all of them are below U+0144).
static CHAR_TO_BYTE: LazyLock<HashMap<char, u8>> = LazyLock::new(|| {
    (0..=255u8)
        .map(|b| (BYTE_TO_CHAR[usize::from(b)], b))
        .collect()
});

/// Appends `word` with every byte replaced by its GPT-2 code point.
pub(super) fn byte_encode(word: &str, out: &mut String) {
    out.extend(word.bytes().map(|b| BYTE_TO_CHAR[usize::from(b)]));
}

/// The bytes a normal BPE token stands for (llama.cpp's `llama_decode_text`). A code point
/// outside GPT-2's table cannot come from byte-level encoding; llama.cpp renders it as an
/// `[UNK_BYTE_0x..]` marker, and so does this.
pub(super) fn byte_decode(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        match CHAR_TO_BYTE.get(&c) {
            Some(&b) => out.push(b),
            None => {
                out.extend_from_slice(b"[UNK_BYTE_0x");
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.extend_from_slice(format!("{b:02x}").as_bytes());
                }
                out.extend_from_slice(text.as_bytes());
                out.push(b']');
            }
        }
    }
    out
}

/// Merge ranks from `tokenizer.ggml.merges` (`"left right"`, rank = line number).
///
/// The two halves are interned so a lookup during merging hashes two borrowed slices and a
/// pair of integers, without allocating.
#[derive(Debug, Default)]
pub(super) struct Merges {
    parts: HashMap<String, u32>,
    ranks: HashMap<(u32, u32), u32>,
}

impl Merges {
    pub(super) fn new<'a>(lines: impl IntoIterator<Item = &'a str>) -> Self {
        let mut merges = Merges::default();
        for (rank, line) in lines.into_iter().enumerate() {
            // As llama.cpp: split at the first space after the first byte (a half may start
            // with a space-like symbol but never with a real space); no space gives an empty
            // pair, which never matches.
            let space = line.as_bytes().iter().skip(1).position(|&b| b == b' ');
            let (left, right) = match space {
                Some(i) => (&line[..=i], &line[i + 2..]),
                None => ("", ""),
            };
            let key = (merges.intern(left), merges.intern(right));
            let rank = u32::try_from(rank).unwrap_or(u32::MAX);
            // The first occurrence of a duplicated pair keeps its rank (`emplace`).
            merges.ranks.entry(key).or_insert(rank);
        }
        merges
    }

    fn intern(&mut self, part: &str) -> u32 {
        let next = u32::try_from(self.parts.len()).unwrap_or(u32::MAX);
        *self.parts.entry(part.to_owned()).or_insert(next)
    }

    pub(super) fn len(&self) -> usize {
        self.ranks.len()
    }

    fn rank(&self, left: &str, right: &str) -> Option<u32> {
        let l = *self.parts.get(left)?;
        let r = *self.parts.get(right)?;
        self.ranks.get(&(l, r)).copied()
    }
}

#[derive(Debug, Clone, Copy)]
struct Symbol {
    start: usize,
    /// Byte length; 0 once merged into the symbol on its left.
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

/// Splits a byte-encoded word into its BPE pieces (byte ranges of `word`), in order.
pub(super) fn merge(word: &str, merges: &Merges) -> Vec<std::ops::Range<usize>> {
    let mut symbols: Vec<Symbol> = Vec::with_capacity(word.len());
    for (i, (start, c)) in word.char_indices().enumerate() {
        symbols.push(Symbol {
            start,
            len: c.len_utf8(),
            prev: i.checked_sub(1),
            next: None,
        });
        if let Some(prev) = i.checked_sub(1) {
            symbols[prev].next = Some(i);
        }
    }

    // Min-heap on (rank, left index); the two lengths identify the pair the entry was made
    // for, so an entry whose symbols have since changed is recognised and skipped.
    let mut queue: BinaryHeap<Reverse<(u32, usize, usize, usize)>> = BinaryHeap::new();
    let push = |queue: &mut BinaryHeap<_>,
                symbols: &[Symbol],
                left: Option<usize>,
                right: Option<usize>| {
        let (Some(l), Some(r)) = (left, right) else {
            return;
        };
        let (a, b) = (symbols[l], symbols[r]);
        let left_text = &word[a.start..a.start + a.len];
        let right_text = &word[b.start..b.start + b.len];
        if let Some(rank) = merges.rank(left_text, right_text) {
            queue.push(Reverse((rank, l, a.len, b.len)));
        }
    };
    for i in 1..symbols.len() {
        push(&mut queue, &symbols, Some(i - 1), Some(i));
    }

    while let Some(Reverse((_, l, left_len, right_len))) = queue.pop() {
        let Some(r) = symbols[l].next else { continue };
        if symbols[l].len != left_len
            || symbols[r].len != right_len
            || left_len == 0
            || right_len == 0
        {
            continue;
        }
        symbols[l].len += right_len;
        symbols[r].len = 0;
        symbols[l].next = symbols[r].next;
        if let Some(n) = symbols[r].next {
            symbols[n].prev = Some(l);
        }
        let prev = symbols[l].prev;
        let next = symbols[l].next;
        push(&mut queue, &symbols, prev, Some(l));
        push(&mut queue, &symbols, Some(l), next);
    }

    symbols
        .iter()
        .filter(|s| s.len > 0)
        .map(|s| s.start..s.start + s.len)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_table_round_trips_every_byte() {
        let all: Vec<u8> = (0..=255).collect();
        let mut encoded = String::new();
        // Not valid UTF-8 as a whole, so encode byte by byte through a Latin-1 view.
        for &b in &all {
            encoded.push(BYTE_TO_CHAR[usize::from(b)]);
        }
        assert_eq!(byte_decode(&encoded), all);
        assert_eq!(BYTE_TO_CHAR[usize::from(b' ')], 'Ġ');
        assert_eq!(BYTE_TO_CHAR[usize::from(b'\n')], 'Ċ');
    }

    #[test]
    fn merges_lowest_rank_first() {
        let merges = Merges::new(["a b", "b c", "ab c"]);
        let word = "abc";
        let pieces: Vec<&str> = merge(word, &merges).into_iter().map(|r| &word[r]).collect();
        assert_eq!(pieces, ["abc"]);
        let merges = Merges::new(["b c", "a b"]);
        let pieces: Vec<&str> = merge(word, &merges).into_iter().map(|r| &word[r]).collect();
        assert_eq!(pieces, ["a", "bc"]);
    }

    #[test]
    fn malformed_merge_lines_never_match() {
        let merges = Merges::new(["", "nospace", " ", "x y"]);
        assert_eq!(merges.rank("x", "y"), Some(3));
        assert_eq!(merges.rank("", ""), Some(0));
        let word = "nospace";
        assert_eq!(merge(word, &merges).len(), word.len());
    }

    #[test]
    fn unknown_code_points_decode_to_a_marker() {
        assert_eq!(byte_decode("Ġa"), b" a");
        assert_eq!(
            byte_decode("€"),
            b"[UNK_BYTE_0xe282ac\xe2\x82\xac]".to_vec()
        );
    }
}
