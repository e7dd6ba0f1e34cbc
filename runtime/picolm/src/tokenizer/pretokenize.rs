//! Pre-tokenizers for byte-level BPE: split text into the words that BPE merges never cross.
//!
//! Each model family's splitting regex is implemented as a hand-written scanner with the exact
//! behaviour of llama.cpp's custom splitters (`unicode_regex_split_custom_*` in
//! `src/unicode.cpp`), which is what the token ids of GGUF models are tested against. The
//! scanners run in linear time, so a megabyte of input cannot trigger regex backtracking.
//! Code points are classified with llama.cpp's own tables ([`super::unicode_data`]).

use super::unicode_data::{RANGE_FLAGS, RANGE_STARTS, WHITESPACE};

/// The pre-tokenizers picolm implements, selected by `tokenizer.ggml.pre`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PreTokenizer {
    /// llama.cpp's fallback for a missing or `default` pre-tokenizer: punctuation runs, then the
    /// GPT-2 rules, then digit runs, then groups of three ASCII digits.
    Default,
    /// GPT-2: `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`.
    Gpt2,
    /// Llama 3: case-insensitive contractions, `[^\r\n\p{L}\p{N}]?\p{L}+`, `\p{N}{1,3}`,
    /// ` ?[^\s\p{L}\p{N}]+[\r\n]*`, `\s*[\r\n]+`, `\s+(?!\S)`, `\s+`.
    Llama3,
    /// Qwen 2: as Llama 3 but digits are split one by one (`\p{N}`).
    Qwen2,
}

/// How llama.cpp classifies one code point: its general category flag and whether it is
/// whitespace. Positions outside the current segment get [`Class::OUTSIDE`], which is
/// neither, exactly like llama.cpp's zeroed flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Class {
    category: u8,
    whitespace: bool,
}

const NUMBER: u8 = 0x02;
const LETTER: u8 = 0x04;
const PUNCTUATION: u8 = 0x20;

impl Class {
    const OUTSIDE: Class = Class {
        category: 0,
        whitespace: false,
    };

    fn of(c: char) -> Class {
        let cp = u32::from(c);
        // RANGE_STARTS[0] == 0, so the partition point is at least 1.
        let i = RANGE_STARTS.partition_point(|&start| start <= cp) - 1;
        Class {
            category: RANGE_FLAGS[i],
            whitespace: WHITESPACE.binary_search(&cp).is_ok(),
        }
    }

    fn letter(self) -> bool {
        self.category & LETTER != 0
    }
    fn number(self) -> bool {
        self.category & NUMBER != 0
    }
    fn punctuation(self) -> bool {
        self.category & PUNCTUATION != 0
    }
    /// Inside the segment (every real code point has some category flag).
    fn inside(self) -> bool {
        self.category != 0 || self.whitespace
    }
    /// `[^\s\p{L}\p{N}]`, for a position inside the segment.
    fn other(self) -> bool {
        !(self.whitespace || self.letter() || self.number()) && self.inside()
    }
}

/// One segment of code points with out-of-range reads answered like llama.cpp's scanners do.
struct Segment<'a> {
    cpts: &'a [char],
}

impl Segment<'_> {
    fn len(&self) -> usize {
        self.cpts.len()
    }
    fn cpt(&self, i: usize) -> Option<char> {
        self.cpts.get(i).copied()
    }
    fn class(&self, i: usize) -> Class {
        self.cpts.get(i).map_or(Class::OUTSIDE, |&c| Class::of(c))
    }
    /// Length of a contraction (`'s`, `'re`, ...) starting at `pos`, if there is one.
    fn contraction(&self, pos: usize, ignore_case: bool) -> Option<usize> {
        if self.cpt(pos) != Some('\'') {
            return None;
        }
        // llama.cpp lower-cases with Unicode tables, but no non-ASCII code point lower-cases
        // to one of the letters tested here (checked by tools/tokenizer-fixtures.py).
        let at = |i| {
            self.cpt(i).map(|c| {
                if ignore_case {
                    c.to_ascii_lowercase()
                } else {
                    c
                }
            })
        };
        match at(pos + 1)? {
            's' | 't' | 'm' | 'd' => Some(2),
            c1 => match (c1, at(pos + 2)?) {
                ('r', 'e') | ('v', 'e') | ('l', 'l') => Some(3),
                _ => None,
            },
        }
    }
    /// Number of whitespace code points starting at `pos`, and the end of the last `\r`/`\n`
    /// among them.
    fn whitespace_run(&self, pos: usize) -> (usize, Option<usize>) {
        let mut n = 0;
        let mut last_newline_end = None;
        while self.class(pos + n).whitespace {
            if matches!(self.cpt(pos + n), Some('\r' | '\n')) {
                last_newline_end = Some(pos + n + 1);
            }
            n += 1;
        }
        (n, last_newline_end)
    }
    /// The end of `\s+(?!\S)|\s+` at `pos`: a whitespace run that is followed by a non-space
    /// gives its last space to the next word.
    fn whitespace_end(&self, pos: usize, n: usize) -> usize {
        if n > 1 && self.cpt(pos + n).is_some() {
            pos + n - 1
        } else if n > 0 {
            pos + n
        } else {
            // No rule matched: the code point is a word of its own.
            pos + 1
        }
    }
}

impl PreTokenizer {
    /// Splits `text` into words (non-empty, in order, concatenating to `text`).
    pub(crate) fn split(self, text: &str) -> Vec<&str> {
        let cpts: Vec<char> = text.chars().collect();
        let whole = vec![cpts.len()];
        let lens = match self {
            PreTokenizer::Gpt2 => refine(&cpts, &whole, split_gpt2),
            PreTokenizer::Llama3 => refine(&cpts, &whole, |s, out| split_llama3(s, out, 3)),
            PreTokenizer::Qwen2 => refine(&cpts, &whole, |s, out| split_llama3(s, out, 1)),
            PreTokenizer::Default => {
                let lens = refine(&cpts, &whole, |s, out| split_runs(s, out, default_punct));
                let lens = refine(&cpts, &lens, split_gpt2);
                let lens = refine(&cpts, &lens, |s, out| {
                    split_runs(s, out, |c| {
                        c.is_ascii_digit() || (!c.is_ascii() && Class::of(c).number())
                    })
                });
                refine(&cpts, &lens, split_ascii_digit_triples)
            }
        };
        let mut words = Vec::with_capacity(lens.len());
        let mut rest = text;
        for n in lens {
            let bytes: usize = rest.chars().take(n).map(char::len_utf8).sum();
            let (word, tail) = rest.split_at(bytes);
            words.push(word);
            rest = tail;
        }
        words
    }
}

/// Applies `split` to each segment (given as code point counts) and returns the finer segments,
/// as llama.cpp applies a list of regexes one after the other.
fn refine(
    cpts: &[char],
    segments: &[usize],
    split: impl Fn(&Segment<'_>, &mut Vec<usize>),
) -> Vec<usize> {
    let mut out = Vec::with_capacity(segments.len());
    let mut start = 0;
    for &n in segments {
        split(
            &Segment {
                cpts: &cpts[start..start + n],
            },
            &mut out,
        );
        start += n;
    }
    out
}

/// Pushes the word `pos..end` (if non-empty) and returns `end`.
fn emit(out: &mut Vec<usize>, pos: usize, end: usize) -> usize {
    if end > pos {
        out.push(end - pos);
    }
    end
}

fn split_gpt2(s: &Segment<'_>, out: &mut Vec<usize>) {
    let mut pos = 0;
    while pos < s.len() {
        if let Some(n) = s.contraction(pos, false) {
            pos = emit(out, pos, pos + n);
            continue;
        }
        // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`: one optional space, then a run of one kind.
        let space = usize::from(s.cpt(pos) == Some(' '));
        let first = s.class(pos + space);
        let run: Option<fn(Class) -> bool> = if first.letter() {
            Some(Class::letter)
        } else if first.number() {
            Some(Class::number)
        } else if first.other() {
            Some(Class::other)
        } else {
            None
        };
        if let Some(same) = run {
            let mut end = pos + space;
            while same(s.class(end)) {
                end += 1;
            }
            pos = emit(out, pos, end);
            continue;
        }
        let (n, _) = s.whitespace_run(pos);
        pos = emit(out, pos, s.whitespace_end(pos, n));
    }
}

/// The Llama 3 scanner; `max_digits` is 3 for Llama 3 (`\p{N}{1,3}`) and 1 for Qwen 2.
fn split_llama3(s: &Segment<'_>, out: &mut Vec<usize>, max_digits: usize) {
    let mut pos = 0;
    while pos < s.len() {
        if let Some(n) = s.contraction(pos, true) {
            pos = emit(out, pos, pos + n);
            continue;
        }
        let c = s.cpt(pos);
        let class = s.class(pos);

        // `[^\r\n\p{L}\p{N}]?\p{L}+`
        if !(matches!(c, Some('\r' | '\n')) || class.number())
            && (class.letter() || s.class(pos + 1).letter())
        {
            let mut end = pos + 1;
            while s.class(end).letter() {
                end += 1;
            }
            pos = emit(out, pos, end);
            continue;
        }

        // `\p{N}{1,max_digits}`, repeated over a run of digits.
        if class.number() {
            let mut end = pos;
            while s.class(end).number() {
                end += 1;
                if end - pos >= max_digits {
                    pos = emit(out, pos, end);
                }
            }
            pos = emit(out, pos, end);
            continue;
        }

        // ` ?[^\s\p{L}\p{N}]+[\r\n]*`. As in llama.cpp, the guard looks at the code point after
        // an optional space but requires only the current one to exist, so a lone trailing space
        // is a word here (the same word `\s+` would give).
        let space = usize::from(c == Some(' '));
        if s.class(pos + space).other() || (space == 1 && !s.class(pos + 1).inside()) {
            let mut end = pos + space;
            while s.class(end).other() {
                end += 1;
            }
            while matches!(s.cpt(end), Some('\r' | '\n')) {
                end += 1;
            }
            pos = emit(out, pos, end);
            continue;
        }

        // `\s*[\r\n]+`, then `\s+(?!\S)`, then `\s+`.
        let (n, last_newline_end) = s.whitespace_run(pos);
        let end = last_newline_end.unwrap_or_else(|| s.whitespace_end(pos, n));
        pos = emit(out, pos, end);
    }
}

/// `[\p{P}\$\+<=>\^~\|]+` as llama.cpp evaluates it: on ASCII, its fixed punctuation list
/// (which leaves out `` ` ``) plus the explicit symbols; above ASCII, the punctuation category.
fn default_punct(c: char) -> bool {
    if c.is_ascii() {
        matches!(
            c,
            '!' | '"'
                | '#'
                | '%'
                | '&'
                | '\''
                | '('
                | ')'
                | '*'
                | ','
                | '-'
                | '.'
                | '/'
                | ':'
                | ';'
                | '?'
                | '@'
                | '['
                | '\\'
                | ']'
                | '_'
                | '{'
                | '}'
                | '$'
                | '+'
                | '<'
                | '='
                | '>'
                | '^'
                | '~'
                | '|'
        )
    } else {
        !Class::of(c).whitespace && Class::of(c).punctuation()
    }
}

/// Splits a segment into maximal runs of code points matching `pred` and the gaps between them.
fn split_runs(s: &Segment<'_>, out: &mut Vec<usize>, pred: impl Fn(char) -> bool) {
    let mut pos = 0;
    while pos < s.len() {
        let matching = pred(s.cpts[pos]);
        let mut end = pos + 1;
        while end < s.len() && pred(s.cpts[end]) == matching {
            end += 1;
        }
        pos = emit(out, pos, end);
    }
}

/// `[0-9][0-9][0-9]`: leftmost groups of three ASCII digits, and the gaps between them.
fn split_ascii_digit_triples(s: &Segment<'_>, out: &mut Vec<usize>) {
    let mut gap_start = 0;
    let mut pos = 0;
    while pos + 3 <= s.len() {
        if s.cpts[pos..pos + 3].iter().all(char::is_ascii_digit) {
            emit(out, gap_start, pos);
            gap_start = emit(out, pos, pos + 3);
            pos += 3;
        } else {
            pos += 1;
        }
    }
    emit(out, gap_start, s.len());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(pre: PreTokenizer, text: &str) -> Vec<&str> {
        pre.split(text)
    }

    #[test]
    fn gpt2_splits_like_the_regex() {
        assert_eq!(
            words(PreTokenizer::Gpt2, "Hello world's  3.14   x\n"),
            [
                "Hello", " world", "'s", " ", " 3", ".", "14", "  ", " x", "\n"
            ]
        );
    }

    #[test]
    fn llama3_groups_digits_by_three_and_keeps_newlines_with_whitespace() {
        assert_eq!(
            words(PreTokenizer::Llama3, "1234567 I'M  \n\nok"),
            ["123", "456", "7", " I", "'M", "  \n\n", "ok"]
        );
        assert_eq!(words(PreTokenizer::Qwen2, "123"), ["1", "2", "3"]);
    }

    #[test]
    fn lone_trailing_space_is_a_word() {
        assert_eq!(words(PreTokenizer::Llama3, "a "), ["a", " "]);
        assert_eq!(words(PreTokenizer::Gpt2, "a "), ["a", " "]);
    }

    #[test]
    fn default_splits_punctuation_and_digit_triples_first() {
        assert_eq!(
            words(PreTokenizer::Default, "a+b 12345!?"),
            ["a", "+", "b", " ", "123", "45", "!?"]
        );
    }

    #[test]
    fn words_concatenate_to_the_input() {
        let text = "  \t日本語 🦙‍🔥 can't\r\n\r\n 1½ x";
        for pre in [
            PreTokenizer::Default,
            PreTokenizer::Gpt2,
            PreTokenizer::Llama3,
            PreTokenizer::Qwen2,
        ] {
            let w = words(pre, text);
            assert!(w.iter().all(|w| !w.is_empty()), "{pre:?}: {w:?}");
            assert_eq!(w.concat(), text, "{pre:?}");
        }
    }

    #[test]
    fn classes_follow_llama_cpp_tables() {
        assert!(Class::of('a').letter() && Class::of('日').letter());
        assert!(Class::of('7').number() && Class::of('½').number());
        assert!(Class::of('\u{3000}').whitespace && !Class::of('\u{200B}').whitespace);
        assert!(Class::of('🦙').other());
    }
}
