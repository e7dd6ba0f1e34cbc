//! Chat templates from `tokenizer.chat_template`, rendered with minijinja (ChatML when absent).
//!
//! The module owns turning OpenAI-style messages into a prompt string and nothing else. Models
//! ship Jinja templates written for Hugging Face transformers (Python jinja2), so the rendering
//! environment reproduces transformers' `apply_chat_template`: `trim_blocks` and
//! `lstrip_blocks`, loop controls, Python string/dict methods (`.strip()`, `.items()`, via
//! minijinja-contrib's pycompat), `raise_exception`, `strftime_now`, and a `tojson` filter that
//! writes what Python's `json.dumps` writes (`", "` and `": "` separators, `indent`, no HTML
//! escaping). The tests compare against jinja2 rendering the same templates.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use minijinja::value::{Kwargs, ValueKind};
use minijinja::{Environment, ErrorKind, Value};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::gguf::Metadata;

const KEY_TEMPLATE: &str = "tokenizer.chat_template";
const TEMPLATE_NAME: &str = "chat_template";

/// Instructions one render may execute. A template comes with the model file, so a hostile or
/// broken one (nested `range(100000)` loops) must fail instead of occupying the engine; real
/// templates need a few hundred instructions per message.
const RENDER_FUEL: u64 = 50_000_000;

/// The template used when a model has none: ChatML, as llama.cpp falls back to.
pub const CHATML: &str = "{%- for message in messages %}\
{{- '<|im_start|>' + message.role + '\\n' + (message.content or '') + '<|im_end|>\\n' }}\
{%- endfor %}\
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}";

/// One message of a conversation, with OpenAI's field names. Absent optional fields are not
/// serialized, so templates can test them with `is defined` / `in message`; `content` is always
/// present (`none` for an assistant message that only calls tools).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// OpenAI `tool_calls` (`[{"id", "type": "function", "function": {"name", "arguments"}}]`),
    /// passed to the template as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl ChatMessage {
    /// A plain text message.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: Some(content.into()),
            ..ChatMessage::default()
        }
    }
}

/// A compiled chat template. `Send + Sync`; rendering does not mutate it.
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    bos_token: String,
    eos_token: String,
}

impl fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("source_bytes", &self.source.len())
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .finish_non_exhaustive()
    }
}

impl ChatTemplate {
    /// The model's `tokenizer.chat_template`, or [`CHATML`] when it has none; `bos_token` and
    /// `eos_token` are the texts of the model's BOS and EOS tokens.
    pub fn from_metadata(md: &Metadata) -> Result<Self> {
        let source = md.get_str(KEY_TEMPLATE)?.unwrap_or(CHATML);
        let (bos, eos) = crate::tokenizer::bos_eos_text(md)?;
        ChatTemplate::new(source, bos, eos).map_err(|e| match e {
            Error::Template(what) => Error::metadata(KEY_TEMPLATE, what),
            other => other,
        })
    }

    /// Compiles `source`. Syntax errors are reported here, not at the first render.
    pub fn new(
        source: &str,
        bos_token: impl Into<String>,
        eos_token: impl Into<String>,
    ) -> Result<Self> {
        let mut env = Environment::new();
        // transformers' environment: ImmutableSandboxedEnvironment(trim_blocks=True,
        // lstrip_blocks=True, extensions=[loopcontrols]) with a trailing newline dropped.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(false);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.set_fuel(Some(RENDER_FUEL));
        env.add_filter("tojson", tojson);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", |format: &str| {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
            strftime(format, now)
        });
        env.add_template_owned(TEMPLATE_NAME, source.to_owned())
            .map_err(|e| Error::Template(describe(&e)))?;
        Ok(ChatTemplate {
            env,
            source: source.to_owned(),
            bos_token: bos_token.into(),
            eos_token: eos_token.into(),
        })
    }

    /// Makes `strftime_now` report a fixed time (seconds since the Unix epoch, UTC), so a
    /// rendered prompt is reproducible.
    pub fn with_fixed_time(mut self, unix_secs: i64) -> Self {
        self.env.add_function("strftime_now", move |format: &str| {
            strftime(format, unix_secs)
        });
        self
    }

    /// The template source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders the conversation into a prompt. `tools` (OpenAI's `tools` array) is passed as
    /// `tools`, `none` when absent, as transformers does; `add_generation_prompt` opens the
    /// assistant's turn. An error raised by the template (`raise_exception`) is returned with
    /// its message.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        tools: Option<&serde_json::Value>,
    ) -> Result<String> {
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| Error::Template(describe(&e)))?;
        let ctx = minijinja::context! {
            messages => Value::from_serialize(messages),
            tools => tools.map_or(Value::from(()), Value::from_serialize),
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.as_str(),
            eos_token => self.eos_token.as_str(),
        };
        template
            .render(ctx)
            .map_err(|e| Error::Template(describe(&e)))
    }
}

/// A one-line description of a template error: what (for `raise_exception`, the template's
/// own message), and where in the template.
fn describe(e: &minijinja::Error) -> String {
    let what = e
        .detail()
        .map_or_else(|| e.kind().to_string(), str::to_owned);
    match e.line() {
        Some(line) => format!("{what} (template line {line})"),
        None => what,
    }
}

fn raise_exception(message: String) -> Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
}

/// Python's `json.dumps(value, ensure_ascii=False, indent=None, separators=None,
/// sort_keys=False)`, the `tojson` transformers installs for chat templates.
fn tojson(value: Value, kwargs: Kwargs) -> Result<Value, minijinja::Error> {
    let indent: Option<Value> = kwargs.get("indent")?;
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let separators: Option<Vec<String>> = kwargs.get("separators")?;
    kwargs.assert_all_used()?;
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => match v.kind() {
            ValueKind::Number => {
                Some(" ".repeat(usize::try_from(i64::try_from(v)?.max(0)).unwrap_or(0)))
            }
            ValueKind::String => Some(v.as_str().unwrap_or_default().to_owned()),
            _ => {
                return Err(minijinja::Error::new(
                    ErrorKind::InvalidOperation,
                    "tojson: indent must be a number or a string",
                ));
            }
        },
    };
    let (item_sep, key_sep) = match separators.as_deref() {
        Some([item, key]) => (item.clone(), key.clone()),
        Some(_) => {
            return Err(minijinja::Error::new(
                ErrorKind::InvalidOperation,
                "tojson: separators must be two strings",
            ));
        }
        // Python drops the trailing space of the item separator when indenting.
        None if indent.is_some() => (",".to_owned(), ": ".to_owned()),
        None => (", ".to_owned(), ": ".to_owned()),
    };
    let mut writer = PyJson {
        indent,
        item_sep,
        key_sep,
        ensure_ascii: ensure_ascii.unwrap_or(false),
        sort_keys: sort_keys.unwrap_or(false),
        out: String::new(),
    };
    writer.value(&value, 0)?;
    Ok(Value::from(writer.out))
}

/// A writer of JSON text formatted exactly as Python's `json.dumps`.
struct PyJson {
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    ensure_ascii: bool,
    sort_keys: bool,
    out: String,
}

/// Deep enough for any real tool schema, shallow enough that a hostile self-referencing value
/// cannot exhaust the stack.
const MAX_JSON_DEPTH: usize = 128;

impl PyJson {
    fn value(&mut self, v: &Value, depth: usize) -> Result<(), minijinja::Error> {
        if depth > MAX_JSON_DEPTH {
            return Err(minijinja::Error::new(
                ErrorKind::InvalidOperation,
                "tojson: value nested too deeply",
            ));
        }
        match v.kind() {
            ValueKind::Undefined | ValueKind::None => self.out.push_str("null"),
            ValueKind::Bool => self
                .out
                .push_str(if v.is_true() { "true" } else { "false" }),
            ValueKind::Number => self.number(v),
            ValueKind::String => self.string(v.as_str().unwrap_or_default()),
            ValueKind::Seq | ValueKind::Iterable => {
                let items: Vec<Value> = v.try_iter()?.collect();
                self.container('[', ']', items.len(), depth, |w, i, depth| {
                    w.value(&items[i], depth)
                })?;
            }
            ValueKind::Map => {
                let mut entries: Vec<(String, Value)> = Vec::new();
                for key in v.try_iter()? {
                    let item = v.get_item(&key)?;
                    entries.push((json_key(&key)?, item));
                }
                if self.sort_keys {
                    entries.sort_by(|a, b| a.0.cmp(&b.0));
                }
                self.container('{', '}', entries.len(), depth, |w, i, depth| {
                    w.string(&entries[i].0);
                    let sep = w.key_sep.clone();
                    w.out.push_str(&sep);
                    w.value(&entries[i].1, depth)
                })?;
            }
            _ => {
                return Err(minijinja::Error::new(
                    ErrorKind::InvalidOperation,
                    format!("tojson: a {} is not JSON serializable", v.kind()),
                ));
            }
        }
        Ok(())
    }

    fn container(
        &mut self,
        open: char,
        close: char,
        len: usize,
        depth: usize,
        mut item: impl FnMut(&mut Self, usize, usize) -> Result<(), minijinja::Error>,
    ) -> Result<(), minijinja::Error> {
        self.out.push(open);
        if len == 0 {
            self.out.push(close);
            return Ok(());
        }
        let newline = |w: &mut Self, level: usize| {
            if let Some(indent) = &w.indent {
                w.out.push('\n');
                w.out.push_str(&indent.repeat(level));
            }
        };
        for i in 0..len {
            if i > 0 {
                let sep = self.item_sep.clone();
                self.out.push_str(&sep);
            }
            newline(self, depth + 1);
            item(self, i, depth + 1)?;
        }
        newline(self, depth);
        self.out.push(close);
        Ok(())
    }

    fn string(&mut self, s: &str) {
        self.out.push('"');
        for c in s.chars() {
            match c {
                '"' => self.out.push_str("\\\""),
                '\\' => self.out.push_str("\\\\"),
                '\n' => self.out.push_str("\\n"),
                '\r' => self.out.push_str("\\r"),
                '\t' => self.out.push_str("\\t"),
                '\u{8}' => self.out.push_str("\\b"),
                '\u{c}' => self.out.push_str("\\f"),
                c if u32::from(c) < 0x20 || (self.ensure_ascii && !c.is_ascii()) => {
                    let mut units = [0u16; 2];
                    for unit in c.encode_utf16(&mut units) {
                        self.out.push_str(&format!("\\u{unit:04x}"));
                    }
                }
                c => self.out.push(c),
            }
        }
        self.out.push('"');
    }

    fn number(&mut self, v: &Value) {
        if let Ok(i) = i128::try_from(v.clone()) {
            self.out.push_str(&i.to_string());
        } else if let Ok(f) = f64::try_from(v.clone()) {
            self.out.push_str(&python_float(f));
        } else {
            self.out.push_str(&v.to_string());
        }
    }
}

/// A JSON object key as Python converts dictionary keys.
fn json_key(key: &Value) -> Result<String, minijinja::Error> {
    match key.kind() {
        ValueKind::String => Ok(key.as_str().unwrap_or_default().to_owned()),
        ValueKind::None | ValueKind::Undefined => Ok("null".to_owned()),
        ValueKind::Bool => Ok(if key.is_true() { "true" } else { "false" }.to_owned()),
        ValueKind::Number => {
            let mut w = PyJson {
                indent: None,
                item_sep: String::new(),
                key_sep: String::new(),
                ensure_ascii: false,
                sort_keys: false,
                out: String::new(),
            };
            w.number(key);
            Ok(w.out)
        }
        other => Err(minijinja::Error::new(
            ErrorKind::InvalidOperation,
            format!("tojson: keys must be str, int, float, bool or None, not {other}"),
        )),
    }
}

/// Python's `repr(float)`: the shortest round-trip digits, positional for exponents -4..16,
/// otherwise `d.ddde+XX`; `NaN`/`Infinity` as `json.dumps` writes them.
fn python_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".to_owned();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.to_owned();
    }
    // `{:e}` gives the shortest round-trip mantissa, e.g. "1.5e-7".
    let sci = format!("{f:e}");
    let Some((mantissa, exp)) = sci.split_once('e') else {
        return sci;
    };
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..16).contains(&exp) {
        let s = format!("{f}");
        if s.contains('.') { s } else { format!("{s}.0") }
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.unsigned_abs())
    }
}

/// The subset of C `strftime` that chat templates use, in UTC.
fn strftime(format: &str, unix_secs: i64) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ];
    let days = unix_secs.div_euclid(86_400);
    let secs = unix_secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    // 1970-01-01 was a Thursday (index 3 from Monday).
    let weekday = usize::try_from((days + 3).rem_euclid(7)).unwrap_or(0);
    let yday = days - days_from_civil(year, 1, 1) + 1;
    let (hour, minute, second) = (secs / 3600, secs / 60 % 60, secs % 60);
    let month_name = MONTHS[usize::try_from(month - 1).unwrap_or(0)];

    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&year.to_string()),
            Some('y') => out.push_str(&format!("{:02}", year.rem_euclid(100))),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('e') => out.push_str(&format!("{day:2}")),
            Some('j') => out.push_str(&format!("{yday:03}")),
            Some('B') => out.push_str(month_name),
            Some('b' | 'h') => out.push_str(&month_name[..3]),
            Some('A') => out.push_str(DAYS[weekday]),
            Some('a') => out.push_str(&DAYS[weekday][..3]),
            Some('H') => out.push_str(&format!("{hour:02}")),
            Some('I') => out.push_str(&format!("{:02}", (hour + 11) % 12 + 1)),
            Some('p') => out.push_str(if hour < 12 { "AM" } else { "PM" }),
            Some('M') => out.push_str(&format!("{minute:02}")),
            Some('S') => out.push_str(&format!("{second:02}")),
            Some('F') => out.push_str(&format!("{year}-{month:02}-{day:02}")),
            Some('%') => out.push('%'),
            // Unknown directives are kept as written, as glibc does.
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// Days since 1970-01-01 → (year, month 1..=12, day 1..=31), proleptic Gregorian
/// (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The inverse of [`civil_from_days`].
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(source: &str, messages: &[ChatMessage]) -> Result<String> {
        ChatTemplate::new(source, "<s>", "</s>")?.render(messages, true, None)
    }

    #[test]
    fn chatml_is_the_fallback() {
        let out = render(CHATML, &[ChatMessage::new("user", "hi")]).expect("render");
        assert_eq!(
            out,
            "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn raise_exception_surfaces_its_message() {
        let err = render("{{ raise_exception('roles must alternate') }}", &[]).expect_err("raises");
        assert!(err.to_string().contains("roles must alternate"), "{err}");
    }

    #[test]
    fn runaway_templates_run_out_of_fuel() {
        let tpl =
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}";
        let err = render(tpl, &[]).expect_err("out of fuel");
        assert!(matches!(err, Error::Template(_)), "{err}");
        // A long but ordinary conversation stays far below the limit.
        let long: Vec<ChatMessage> = (0..5000)
            .map(|i| ChatMessage::new(if i % 2 == 0 { "user" } else { "assistant" }, "hello there"))
            .collect();
        assert!(render(CHATML, &long).is_ok());
    }

    #[test]
    fn syntax_errors_are_reported_at_compile_time() {
        let err = ChatTemplate::new("{% if %}", "", "").expect_err("bad template");
        assert!(matches!(err, Error::Template(_)), "{err}");
    }

    #[test]
    fn python_string_methods_work() {
        let out = render(
            "{{ messages[0].content.strip().upper() }}{{ 'ab'.startswith('a') }}",
            &[ChatMessage::new("user", "  x ")],
        )
        .expect("render");
        assert_eq!(out, "XTrue");
    }

    #[test]
    fn tojson_writes_what_python_json_dumps_writes() {
        let tpl = r#"{{ {"b": [1, 2.5, none, true], "a": "é\n\"<>"} | tojson }}|{{ [] | tojson(indent=2) }}|{{ {"k": [1]} | tojson(indent=2) }}"#;
        let out = render(tpl, &[]).expect("render");
        assert_eq!(
            out,
            "{\"b\": [1, 2.5, null, true], \"a\": \"é\\n\\\"<>\"}|[]|{\n  \"k\": [\n    1\n  ]\n}"
        );
    }

    #[test]
    fn python_float_repr() {
        for (f, s) in [
            (1.0, "1.0"),
            (0.1, "0.1"),
            (1e16, "1e+16"),
            (1.5e-7, "1.5e-07"),
            (123.456, "123.456"),
            (-0.0001, "-0.0001"),
        ] {
            assert_eq!(python_float(f), s);
        }
    }

    #[test]
    fn strftime_formats_utc_dates() {
        // 2024-07-26 13:05:09 UTC, a Friday.
        let t = 1_722_000_309;
        assert_eq!(strftime("%d %b %Y", t), "26 Jul 2024");
        assert_eq!(
            strftime("%A %B %e %H:%M:%S %p %j %y %%", t),
            "Friday July 26 13:25:09 PM 208 24 %"
        );
        assert_eq!(strftime("%F", 0), "1970-01-01");
        assert_eq!(strftime("%F", -1), "1969-12-31");
    }

    #[test]
    fn tool_calls_and_absent_fields() {
        let msg: ChatMessage = serde_json::from_value(serde_json::json!({
            "role": "assistant", "content": null,
            "tool_calls": [{"id": "1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
        }))
        .expect("message");
        let out = render("{{ 'tool_calls' in messages[0] }} {{ 'name' in messages[0] }} {{ messages[0].content is none }}", &[msg])
            .expect("render");
        // Booleans print the Python way, as in jinja2.
        assert_eq!(out, "True False True");
    }
}
