//! Text-level post-processing of generated output: stop strings (never emitting a partial match),
//! `<think>` blocks split into reasoning, and tool calls parsed from the final text.

use serde_json::Value;

use crate::api::types::{FunctionCallOut, ToolCallOut};

/// Finds stop strings in streamed text. Text that could be the start of a stop string is held
/// back until it is known not to be.
#[derive(Debug, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
}

impl StopMatcher {
    pub fn new(stops: Vec<String>) -> Self {
        StopMatcher {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            held: String::new(),
        }
    }

    /// Adds text; returns what may be emitted and whether a stop string was reached (the stop
    /// string and anything after it are dropped).
    pub fn push(&mut self, text: &str) -> (String, bool) {
        self.held.push_str(text);
        if self.stops.is_empty() {
            return (std::mem::take(&mut self.held), false);
        }
        if let Some(pos) = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min()
        {
            let out = self.held[..pos].to_string();
            self.held.clear();
            return (out, true);
        }
        // Keep the longest suffix that is a prefix of some stop string.
        let mut keep = 0;
        for s in &self.stops {
            for k in (1..s.len().min(self.held.len() + 1)).rev() {
                if self.held.is_char_boundary(self.held.len() - k)
                    && s.is_char_boundary(k)
                    && self.held.ends_with(&s[..k])
                {
                    keep = keep.max(k);
                    break;
                }
            }
        }
        let cut = self.held.len() - keep;
        let out = self.held[..cut].to_string();
        self.held.drain(..cut);
        (out, false)
    }

    /// End of generation: whatever is held is not a stop string.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

/// Which part of the answer a piece of text belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Reasoning,
    Content,
}

const THINK_OPEN: &str = "<think>";
const THINK_CLOSE: &str = "</think>";

/// Splits `<think>…</think>` into reasoning. Starts in reasoning when the prompt already opened
/// the block (templates of reasoning models end with `<think>\n`).
#[derive(Debug)]
pub struct ThinkSplitter {
    state: Channel,
    /// Seen any content yet (a `<think>` is only recognized at the very start).
    started: bool,
    held: String,
}

impl ThinkSplitter {
    pub fn new(prompt_opened_think: bool) -> Self {
        ThinkSplitter {
            state: if prompt_opened_think {
                Channel::Reasoning
            } else {
                Channel::Content
            },
            started: prompt_opened_think,
            held: String::new(),
        }
    }

    pub fn push(&mut self, text: &str) -> Vec<(Channel, String)> {
        self.held.push_str(text);
        let mut out = Vec::new();
        loop {
            match self.state {
                Channel::Content if !self.started => {
                    let t = self.held.trim_start();
                    if t.is_empty() {
                        return out;
                    }
                    if t.starts_with(THINK_OPEN) {
                        let skip = self.held.len() - t.len() + THINK_OPEN.len();
                        self.held.drain(..skip);
                        self.state = Channel::Reasoning;
                        self.started = true;
                        continue;
                    }
                    if THINK_OPEN.starts_with(t) {
                        return out; // could still become <think>
                    }
                    self.started = true;
                }
                Channel::Content => {
                    if !self.held.is_empty() {
                        out.push((Channel::Content, std::mem::take(&mut self.held)));
                    }
                    return out;
                }
                Channel::Reasoning => {
                    if let Some(p) = self.held.find(THINK_CLOSE) {
                        let r = self.held[..p].to_string();
                        if !r.is_empty() {
                            out.push((Channel::Reasoning, r));
                        }
                        self.held.drain(..p + THINK_CLOSE.len());
                        // Drop the newline(s) that conventionally follow </think>.
                        let t = self.held.trim_start().len();
                        let n = self.held.len() - t;
                        self.held.drain(..n);
                        self.state = Channel::Content;
                        continue;
                    }
                    let mut keep = 0;
                    for k in (1..THINK_CLOSE.len()).rev() {
                        if self.held.ends_with(&THINK_CLOSE[..k]) {
                            keep = k;
                            break;
                        }
                    }
                    let cut = self.held.len() - keep;
                    if cut > 0 {
                        out.push((Channel::Reasoning, self.held[..cut].to_string()));
                        self.held.drain(..cut);
                    }
                    return out;
                }
            }
        }
    }

    pub fn finish(&mut self) -> Vec<(Channel, String)> {
        let rest = std::mem::take(&mut self.held);
        if rest.is_empty() {
            Vec::new()
        } else {
            vec![(self.state, rest)]
        }
    }
}

fn call_id() -> String {
    format!("call_{:016x}", rand::random::<u64>())
}

fn to_call(v: &Value, index: usize) -> Option<ToolCallOut> {
    let name = v.get("name")?.as_str()?.to_string();
    let args = match v.get("arguments").or_else(|| v.get("parameters")) {
        Some(Value::String(s)) => serde_json::from_str::<Value>(s).ok()?,
        Some(a @ Value::Object(_)) => a.clone(),
        None => Value::Object(Default::default()),
        Some(_) => return None,
    };
    if !args.is_object() {
        return None;
    }
    Some(ToolCallOut {
        index: Some(index),
        id: call_id(),
        kind: "function",
        function: FunctionCallOut {
            name,
            arguments: args.to_string(),
        },
    })
}

/// Tool calls in the model's final text: Hermes/Qwen `<tool_call>{...}</tool_call>` blocks, or
/// the whole text being a `{"name", "arguments"}` object or a list of them. Returns the calls
/// and the text outside them; `None` when the text holds no well-formed call.
pub fn parse_tool_calls(text: &str) -> Option<(Vec<ToolCallOut>, String)> {
    let mut calls = Vec::new();
    let mut rest = String::new();
    if text.contains("<tool_call>") {
        let mut s = text;
        while let Some(start) = s.find("<tool_call>") {
            rest.push_str(&s[..start]);
            let after = &s[start + "<tool_call>".len()..];
            let end = after.find("</tool_call>").unwrap_or(after.len());
            let body = after[..end].trim();
            let v: Value = serde_json::from_str(body).ok()?;
            calls.push(to_call(&v, calls.len())?);
            s = after.get(end + "</tool_call>".len()..).unwrap_or("");
        }
        rest.push_str(s);
        return (!calls.is_empty()).then(|| (calls, rest.trim().to_string()));
    }
    let v: Value = serde_json::from_str(text.trim()).ok()?;
    match &v {
        Value::Object(_) => calls.push(to_call(&v, 0)?),
        Value::Array(items) => {
            for (i, it) in items.iter().enumerate() {
                calls.push(to_call(it, i)?);
            }
        }
        _ => return None,
    }
    (!calls.is_empty()).then_some((calls, String::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_strings_across_chunks() {
        let mut m = StopMatcher::new(vec!["END".into(), "\n\n".into()]);
        assert_eq!(m.push("hello E"), ("hello ".into(), false));
        assert_eq!(m.push("N"), (String::new(), false));
        assert_eq!(m.push("Dx"), (String::new(), true));
        let mut m = StopMatcher::new(vec!["END".into()]);
        assert_eq!(m.push("a EN"), ("a ".into(), false));
        assert_eq!(m.push("d"), ("ENd".into(), false));
        assert_eq!(m.push("E"), (String::new(), false));
        assert_eq!(m.finish(), "E");
        let mut m = StopMatcher::new(vec!["日本".into()]);
        assert_eq!(m.push("x日"), ("x".into(), false));
        assert_eq!(m.push("本"), (String::new(), true));
    }

    #[test]
    fn think_blocks() {
        let mut t = ThinkSplitter::new(false);
        let mut got = Vec::new();
        for piece in ["<thi", "nk>plan", " a</th", "ink>\n\nAnswer", "!"] {
            got.extend(t.push(piece));
        }
        got.extend(t.finish());
        let reasoning: String = got
            .iter()
            .filter(|(c, _)| *c == Channel::Reasoning)
            .map(|(_, s)| s.as_str())
            .collect();
        let content: String = got
            .iter()
            .filter(|(c, _)| *c == Channel::Content)
            .map(|(_, s)| s.as_str())
            .collect();
        assert_eq!(reasoning, "plan a");
        assert_eq!(content, "Answer!");
        let mut t = ThinkSplitter::new(false);
        assert_eq!(
            t.push("no <think> here"),
            vec![(Channel::Content, "no <think> here".into())]
        );
        let mut t = ThinkSplitter::new(true);
        let mut got = t.push("why</think>ok");
        got.extend(t.finish());
        assert_eq!(
            got,
            vec![
                (Channel::Reasoning, "why".into()),
                (Channel::Content, "ok".into())
            ]
        );
    }

    #[test]
    fn tool_call_formats() {
        let (c, rest) = parse_tool_calls(
            "Sure.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"location\": \"SF\"}}\n</tool_call>",
        )
        .expect("hermes");
        assert_eq!(c[0].function.name, "get_weather");
        assert_eq!(c[0].function.arguments, r#"{"location":"SF"}"#);
        assert_eq!(rest, "Sure.");
        let (c, _) = parse_tool_calls(
            r#"[{"name":"a","arguments":{}},{"name":"b","arguments":"{\"x\":1}"}]"#,
        )
        .expect("list");
        assert_eq!(c.len(), 2);
        assert_eq!(c[1].function.arguments, r#"{"x":1}"#);
        assert!(parse_tool_calls("just text").is_none());
        assert!(parse_tool_calls(r#"{"name":"a","arguments":[1]}"#).is_none());
        assert!(parse_tool_calls("<tool_call>{broken</tool_call>").is_none());
    }
}
