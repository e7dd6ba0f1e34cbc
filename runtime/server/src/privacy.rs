//! Privacy: log redaction of the seed's ten keys, error sanitizing, token-count rounding and the
//! zeroize-on-drop text buffer that prompts and outputs live in.
//!
//! The server never formats request content into a log line in the first place; redaction is the
//! second fence, applied by the log writer to every line when `redact_logs` is on.

use zeroize::Zeroize;

/// The JSON keys whose values are inference content.
pub const REDACTED_KEYS: [&str; 10] = [
    "content",
    "prompt",
    "text",
    "arguments",
    "input",
    "delta",
    "system",
    "message",
    "query",
    "instruction",
];

pub const REDACTED: &str = "[REDACTED]";

/// Text that is wiped when dropped (prompts, rendered templates, generated output).
#[derive(Default, Clone, PartialEq, Eq)]
pub struct SensitiveString(String);

impl SensitiveString {
    pub fn new(s: String) -> Self {
        SensitiveString(s)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn push_str(&mut self, s: &str) {
        if self.0.capacity() - self.0.len() < s.len() {
            // Grow by copying into a fresh buffer so the old allocation can be wiped.
            let mut bigger = String::with_capacity((self.0.len() + s.len()).max(64) * 2);
            bigger.push_str(&self.0);
            self.0.zeroize();
            self.0 = bigger;
        }
        self.0.push_str(s);
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Drop for SensitiveString {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl std::fmt::Debug for SensitiveString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SensitiveString({} bytes)", self.0.len())
    }
}

/// Rounds a token count to the nearest 10 (`suppress_token_metrics`); 1..=4 rounds up to 10 so
/// that a non-empty answer never reports zero tokens.
pub fn round_tokens(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        ((n + 5) / 10 * 10).max(10)
    }
}

/// Redacts the values of [`REDACTED_KEYS`] in a log line, both JSON (`"key": "..."`, `"key":
/// {...}`) and logfmt (`key=...`). Returns the line and how many values were redacted.
pub fn redact_line(line: &str) -> (String, usize) {
    let b = line.as_bytes();
    let mut out = String::with_capacity(line.len());
    let mut i = 0;
    let mut count = 0;
    while i < b.len() {
        if let Some((key_end, value_start)) = key_at(b, i) {
            out.push_str(&line[i..value_start]);
            let end = value_end(b, value_start);
            out.push_str(if b[value_start] == b'"' {
                "\"[REDACTED]\""
            } else {
                REDACTED
            });
            count += 1;
            let _ = key_end;
            i = end;
            continue;
        }
        let ch_len = line[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&line[i..i + ch_len]);
        i += ch_len;
    }
    (out, count)
}

/// If a redacted key starts at `i` (as `"key"` followed by `:`, or `key=` at a word boundary),
/// returns (end of key, start of value).
fn key_at(b: &[u8], i: usize) -> Option<(usize, usize)> {
    let quoted = b[i] == b'"';
    let start = if quoted { i + 1 } else { i };
    if !quoted && i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_') {
        return None;
    }
    for k in REDACTED_KEYS {
        let kb = k.as_bytes();
        if b.len() >= start + kb.len() && &b[start..start + kb.len()] == kb {
            let mut j = start + kb.len();
            if quoted {
                if b.get(j) != Some(&b'"') {
                    continue;
                }
                j += 1;
                while b.get(j).is_some_and(|c| *c == b' ') {
                    j += 1;
                }
                if b.get(j) != Some(&b':') {
                    continue;
                }
                j += 1;
                while b.get(j).is_some_and(|c| *c == b' ') {
                    j += 1;
                }
            } else {
                if b.get(j) != Some(&b'=') {
                    continue;
                }
                j += 1;
            }
            if j < b.len() {
                return Some((start + kb.len(), j));
            }
        }
    }
    None
}

/// End of a JSON/logfmt value starting at `i`: a string, a balanced object/array, or a bare
/// token.
fn value_end(b: &[u8], i: usize) -> usize {
    match b[i] {
        b'"' => {
            let mut j = i + 1;
            while j < b.len() {
                match b[j] {
                    b'\\' => j += 2,
                    b'"' => return j + 1,
                    _ => j += 1,
                }
            }
            b.len()
        }
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            let mut in_str = false;
            while j < b.len() {
                let c = b[j];
                if in_str {
                    if c == b'\\' {
                        j += 1;
                    } else if c == b'"' {
                        in_str = false;
                    }
                } else if c == b'"' {
                    in_str = true;
                } else if c == b'{' || c == b'[' {
                    depth += 1;
                } else if c == b'}' || c == b']' {
                    depth -= 1;
                    if depth == 0 {
                        return j + 1;
                    }
                }
                j += 1;
            }
            b.len()
        }
        _ => {
            let mut j = i;
            while j < b.len() && !matches!(b[j], b' ' | b',' | b'}' | b']' | b'\n') {
                j += 1;
            }
            j
        }
    }
}

/// An error message safe to return or log: without redaction on, unchanged; with it, any
/// quoted fragment (which may echo input) is replaced and the message is capped.
pub fn sanitize_error(msg: &str, redact: bool) -> String {
    if !redact {
        return msg.to_string();
    }
    // Our own messages quote field and keyword names in backticks (`max_tokens`); those are
    // kept. Anything else quoted may be client input and is replaced.
    let is_ident = |q: &str| {
        !q.is_empty()
            && q.len() <= 40
            && q.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && q.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.[]".contains(c))
    };
    let mut out = String::new();
    let mut in_quote: Option<char> = None;
    let mut quoted = String::new();
    for c in msg.chars() {
        match in_quote {
            Some(q) if c == q => {
                if q == '`' && is_ident(&quoted) {
                    out.push_str(&quoted);
                } else {
                    out.push_str(REDACTED);
                }
                quoted.clear();
                out.push(c);
                in_quote = None;
            }
            Some(_) => quoted.push(c),
            None if c == '"' || c == '`' => {
                out.push(c);
                in_quote = Some(c);
            }
            None => out.push(c),
        }
    }
    if in_quote.is_some() {
        out.push_str(REDACTED);
    }
    out.chars().take(300).collect()
}

/// A `MakeWriter` for tracing that redacts each line when enabled and counts redactions.
#[derive(Clone, Debug)]
pub struct RedactingWriter {
    pub enabled: bool,
    pub redactions: prometheus::IntCounter,
}

impl std::io::Write for RedactingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut err = std::io::stderr().lock();
        if self.enabled {
            let s = String::from_utf8_lossy(buf);
            let (red, n) = redact_line(&s);
            if n > 0 {
                self.redactions.inc_by(n as u64);
            }
            err.write_all(red.as_bytes())?;
        } else {
            err.write_all(buf)?;
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for RedactingWriter {
    type Writer = RedactingWriter;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_all_ten_keys_json_and_logfmt() {
        for k in REDACTED_KEYS {
            let (l, n) = redact_line(&format!(r#"{{"{k}": "tell me a secret", "model": "m"}}"#));
            assert_eq!(l, format!(r#"{{"{k}": "[REDACTED]", "model": "m"}}"#));
            assert_eq!(n, 1);
            let (l, _) = redact_line(&format!("INFO x {k}=secret model=m"));
            assert_eq!(l, format!("INFO x {k}=[REDACTED] model=m"));
        }
        let (l, n) = redact_line(
            r#"{"messages":[{"role":"user","content":"a \"quoted\" secret"}],"input":["x","y"]}"#,
        );
        assert_eq!(
            l,
            r#"{"messages":[{"role":"user","content":"[REDACTED]"}],"input":"[REDACTED]"}"#
                .replace(r#""input":"[REDACTED]""#, r#""input":[REDACTED]"#)
        );
        assert_eq!(n, 2);
        // Word boundaries: `context=` and `subtext=` are not `text=`.
        assert_eq!(redact_line("subtext=a context=b").1, 0);
    }

    #[test]
    fn sanitize_error_drops_quoted_input() {
        let s = sanitize_error("unknown variant `CANARY-123`, expected one of", true);
        assert!(!s.contains("CANARY"), "{s}");
        assert_eq!(sanitize_error("x `abc`", false), "x `abc`");
        assert!(!sanitize_error("bad \"CANARY", true).contains("CANARY"));
    }

    #[test]
    fn token_rounding() {
        assert_eq!(round_tokens(0), 0);
        assert_eq!(round_tokens(1), 10);
        assert_eq!(round_tokens(14), 10);
        assert_eq!(round_tokens(15), 20);
        assert_eq!(round_tokens(20), 20);
        assert_eq!(round_tokens(104), 100);
    }
}
