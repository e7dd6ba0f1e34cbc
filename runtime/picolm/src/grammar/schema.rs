//! JSON Schema → [`Grammar`]. Every sentence of the grammar is JSON that validates against the
//! schema, and every sentence is bounded in length (strings, arrays, numbers and nesting have caps)
//! so that a model constrained by it always reaches the end.
//!
//! Supported: `type` (one or a list), `properties` + `required` (properties in declared order;
//! no additional properties), `items`, `minItems`/`maxItems`, `enum`, `const`, `anyOf`/`oneOf`,
//! `minLength`/`maxLength`, `$ref` to `#/$defs/…` or `#/definitions/…` (non-recursive),
//! and schemas with no constraints (any JSON value). Anything else that constrains values
//! (`pattern`, `minimum`, `allOf`, `format` that is not a plain annotation ...) is refused with a
//! [`SchemaError`] naming it, rather than silently producing output the schema would reject.

use std::sync::Arc;

use serde_json::Value;

use super::{Elem, Grammar};

/// The schema uses something this compiler cannot enforce, or is not a schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("JSON schema at `{path}`: {what}")]
pub struct SchemaError {
    pub path: String,
    pub what: String,
}

/// Default caps that keep every sentence finite.
const MAX_STRING: usize = 48;
const MAX_ITEMS: usize = 6;
const MAX_DEPTH: usize = 3;
const MAX_INT_DIGITS: usize = 9;
const MAX_FRAC_DIGITS: usize = 6;
const MAX_RULES: usize = 20_000;

/// Keywords that only annotate and are ignored.
const ANNOTATIONS: &[&str] = &[
    "title",
    "description",
    "default",
    "examples",
    "$schema",
    "$id",
    "$comment",
    "$defs",
    "definitions",
    "additionalProperties",
    "strict",
    "readOnly",
    "writeOnly",
    "deprecated",
    "name",
];

struct Compiler<'a> {
    g: Grammar,
    root_schema: &'a Value,
    ws: u32,
    string_any: Option<u32>,
    ref_depth: usize,
}

/// Compiles a JSON Schema.
pub fn compile_schema(schema: &Value) -> Result<Arc<Grammar>, SchemaError> {
    let mut c = Compiler::new(schema);
    let root = c.value(schema, "#", 0)?;
    c.g.set_root(root);
    Ok(Arc::new(c.g))
}

/// "Any JSON object" (`response_format: {"type": "json_object"}`).
pub fn compile_json_object() -> Arc<Grammar> {
    let mut c = Compiler::new(&Value::Null);
    let root = c.any_object(0);
    c.g.set_root(root);
    Arc::new(c.g)
}

fn range(lo: u8, hi: u8) -> Elem {
    Elem::Bytes(Box::new([(lo, hi)]))
}

impl<'a> Compiler<'a> {
    fn new(root_schema: &'a Value) -> Self {
        let mut g = Grammar::default();
        // ws ::= "" | " " — at most one space: free-form whitespace lets a model stall forever.
        let ws = g.add(vec![vec![], vec![Elem::byte(b' ')]]);
        Compiler {
            g,
            root_schema,
            ws,
            string_any: None,
            ref_depth: 0,
        }
    }

    fn err(path: &str, what: impl Into<String>) -> SchemaError {
        SchemaError {
            path: path.to_string(),
            what: what.into(),
        }
    }

    fn check_size(&self, path: &str) -> Result<(), SchemaError> {
        if self.g.n_rules() > MAX_RULES {
            return Err(Compiler::err(path, "schema too large"));
        }
        Ok(())
    }

    fn lit(&mut self, s: &str) -> u32 {
        self.g.literal(s.as_bytes())
    }

    /// A JSON string body byte: well-formed UTF-8 except `"`, `\` and controls, or an escape.
    fn string_char(&mut self) -> u32 {
        let cont = range(0x80, 0xBF);
        let esc = self.g.add(vec![vec![
            Elem::byte(b'\\'),
            Elem::Bytes(Box::new([
                (b'"', b'"'),
                (b'\\', b'\\'),
                (b'/', b'/'),
                (b'b', b'b'),
                (b'f', b'f'),
                (b'n', b'n'),
                (b'r', b'r'),
                (b't', b't'),
            ])),
        ]]);
        self.g.add(vec![
            vec![Elem::Bytes(Box::new([
                (0x20, 0x21),
                (0x23, 0x5B),
                (0x5D, 0x7E),
            ]))],
            // Well-formed UTF-8 only (RFC 3629 table): no overlongs, surrogates or > U+10FFFF.
            vec![range(0xC2, 0xDF), cont.clone()],
            vec![Elem::byte(0xE0), range(0xA0, 0xBF), cont.clone()],
            vec![range(0xE1, 0xEC), cont.clone(), cont.clone()],
            vec![Elem::byte(0xED), range(0x80, 0x9F), cont.clone()],
            vec![range(0xEE, 0xEF), cont.clone(), cont.clone()],
            vec![
                Elem::byte(0xF0),
                range(0x90, 0xBF),
                cont.clone(),
                cont.clone(),
            ],
            vec![range(0xF1, 0xF3), cont.clone(), cont.clone(), cont.clone()],
            vec![Elem::byte(0xF4), range(0x80, 0x8F), cont.clone(), cont],
            vec![Elem::Rule(esc)],
        ])
    }

    /// `"` char{min,max} `"`.
    fn string(&mut self, min: usize, max: usize) -> u32 {
        if min == 0
            && max == MAX_STRING
            && let Some(r) = self.string_any
        {
            return r;
        }
        let ch = self.string_char();
        // tail_k ::= "" | ch tail_{k-1}   (k chars at most)
        let mut tail = self.g.add(vec![vec![]]);
        for _ in 0..max.saturating_sub(min) {
            tail = self
                .g
                .add(vec![vec![], vec![Elem::Rule(ch), Elem::Rule(tail)]]);
        }
        let mut seq = vec![Elem::byte(b'"')];
        seq.extend(std::iter::repeat_n(Elem::Rule(ch), min));
        seq.push(Elem::Rule(tail));
        seq.push(Elem::byte(b'"'));
        let r = self.g.add(vec![seq]);
        if min == 0 && max == MAX_STRING {
            self.string_any = Some(r);
        }
        r
    }

    /// digits{1,n}
    fn digits(&mut self, n: usize, first_nonzero: bool) -> u32 {
        let d = range(b'0', b'9');
        let mut tail = self.g.add(vec![vec![]]);
        for _ in 1..n {
            tail = self.g.add(vec![vec![], vec![d.clone(), Elem::Rule(tail)]]);
        }
        let first = if first_nonzero { range(b'1', b'9') } else { d };
        self.g.add(vec![vec![first, Elem::Rule(tail)]])
    }

    fn integer(&mut self) -> u32 {
        let nz = self.digits(MAX_INT_DIGITS, true);
        let minus = self.g.add(vec![vec![], vec![Elem::byte(b'-')]]);
        let body = self
            .g
            .add(vec![vec![Elem::byte(b'0')], vec![Elem::Rule(nz)]]);
        self.g.add(vec![vec![Elem::Rule(minus), Elem::Rule(body)]])
    }

    fn number(&mut self) -> u32 {
        let int = self.integer();
        let frac_digits = self.digits(MAX_FRAC_DIGITS, false);
        let frac = self.g.add(vec![
            vec![],
            vec![Elem::byte(b'.'), Elem::Rule(frac_digits)],
        ]);
        let exp_digits = self.digits(2, false);
        let sign = self.g.add(vec![
            vec![],
            vec![Elem::Bytes(Box::new([(b'+', b'+'), (b'-', b'-')]))],
        ]);
        let exp = self.g.add(vec![
            vec![],
            vec![
                Elem::Bytes(Box::new([(b'e', b'e'), (b'E', b'E')])),
                Elem::Rule(sign),
                Elem::Rule(exp_digits),
            ],
        ]);
        self.g.add(vec![vec![
            Elem::Rule(int),
            Elem::Rule(frac),
            Elem::Rule(exp),
        ]])
    }

    /// `[` (item (`,` item){min-1..max-1})? `]`
    fn array(&mut self, item: u32, min: usize, max: usize) -> u32 {
        let ws = self.ws;
        // more_k ::= "" | "," ws item more_{k-1}
        let mut more = self.g.add(vec![vec![]]);
        let optional_after_first = max.saturating_sub(min.max(1));
        for _ in 0..optional_after_first {
            more = self.g.add(vec![
                vec![],
                vec![
                    Elem::byte(b','),
                    Elem::Rule(ws),
                    Elem::Rule(item),
                    Elem::Rule(more),
                ],
            ]);
        }
        let mut required = vec![Elem::Rule(item)];
        for _ in 1..min.max(1) {
            required.extend([Elem::byte(b','), Elem::Rule(ws), Elem::Rule(item)]);
        }
        required.push(Elem::Rule(more));
        let body = self.g.add(vec![required]);
        let mut alts = vec![vec![Elem::byte(b'['), Elem::Rule(body), Elem::byte(b']')]];
        if min == 0 {
            alts.push(vec![Elem::byte(b'['), Elem::byte(b']')]);
        }
        self.g.add(alts)
    }

    fn any_value(&mut self, depth: usize) -> u32 {
        let s = self.string(0, MAX_STRING);
        let n = self.number();
        let t = self.lit("true");
        let f = self.lit("false");
        let null = self.lit("null");
        let mut alts = vec![
            vec![Elem::Rule(s)],
            vec![Elem::Rule(n)],
            vec![Elem::Rule(t)],
            vec![Elem::Rule(f)],
            vec![Elem::Rule(null)],
        ];
        if depth < MAX_DEPTH {
            let o = self.any_object(depth + 1);
            let item = self.any_value(depth + 1);
            let a = self.array(item, 0, MAX_ITEMS);
            alts.push(vec![Elem::Rule(o)]);
            alts.push(vec![Elem::Rule(a)]);
        }
        self.g.add(alts)
    }

    /// `{` (key `:` value (`,` key `:` value)*)? `}` with bounded member count.
    fn any_object(&mut self, depth: usize) -> u32 {
        let ws = self.ws;
        let key = self.string(0, 24);
        let value = self.any_value(depth);
        let member = self.g.add(vec![vec![
            Elem::Rule(key),
            Elem::byte(b':'),
            Elem::Rule(ws),
            Elem::Rule(value),
        ]]);
        let mut more = self.g.add(vec![vec![]]);
        for _ in 1..MAX_ITEMS {
            more = self.g.add(vec![
                vec![],
                vec![
                    Elem::byte(b','),
                    Elem::Rule(ws),
                    Elem::Rule(member),
                    Elem::Rule(more),
                ],
            ]);
        }
        self.g.add(vec![
            vec![Elem::byte(b'{'), Elem::byte(b'}')],
            vec![
                Elem::byte(b'{'),
                Elem::Rule(member),
                Elem::Rule(more),
                Elem::byte(b'}'),
            ],
        ])
    }

    fn literal_json(&mut self, v: &Value) -> u32 {
        let s = serde_json::to_string(v).unwrap_or_else(|_| "null".into());
        self.lit(&s)
    }

    fn resolve(&self, r: &str, path: &str) -> Result<&'a Value, SchemaError> {
        let rest = r
            .strip_prefix("#/$defs/")
            .map(|n| ("$defs", n))
            .or_else(|| r.strip_prefix("#/definitions/").map(|n| ("definitions", n)));
        let Some((section, name)) = rest else {
            return Err(Compiler::err(
                path,
                format!("$ref {r:?}: only #/$defs/... and #/definitions/... are supported"),
            ));
        };
        self.root_schema
            .get(section)
            .and_then(|d| d.get(name))
            .ok_or_else(|| Compiler::err(path, format!("$ref {r:?} does not resolve")))
    }

    fn value(&mut self, s: &Value, path: &str, depth: usize) -> Result<u32, SchemaError> {
        self.check_size(path)?;
        let obj = match s {
            Value::Bool(true) => return Ok(self.any_value(depth)),
            Value::Bool(false) => return Err(Compiler::err(path, "`false` admits no value")),
            Value::Object(o) => o,
            _ => {
                return Err(Compiler::err(
                    path,
                    "a schema must be an object or a boolean",
                ));
            }
        };
        if let Some(r) = obj.get("$ref") {
            let r = r
                .as_str()
                .ok_or_else(|| Compiler::err(path, "$ref must be a string"))?;
            if self.ref_depth > 16 {
                return Err(Compiler::err(path, "recursive $ref is not supported"));
            }
            let target = self.resolve(r, path)?;
            self.ref_depth += 1;
            let out = self.value(target, r, depth);
            self.ref_depth -= 1;
            return out;
        }
        for k in obj.keys() {
            let known = ANNOTATIONS.contains(&k.as_str())
                || matches!(
                    k.as_str(),
                    "type"
                        | "properties"
                        | "required"
                        | "items"
                        | "minItems"
                        | "maxItems"
                        | "enum"
                        | "const"
                        | "anyOf"
                        | "oneOf"
                        | "minLength"
                        | "maxLength"
                        | "format"
                );
            if !known {
                return Err(Compiler::err(path, format!("unsupported keyword `{k}`")));
            }
        }
        if obj
            .get("additionalProperties")
            .is_some_and(|a| a.is_object())
        {
            return Err(Compiler::err(
                path,
                "additionalProperties with a schema is not supported",
            ));
        }
        if let Some(f) = obj.get("format").and_then(Value::as_str)
            && !f.is_empty()
        {
            return Err(Compiler::err(
                path,
                format!("unsupported string format `{f}`"),
            ));
        }
        if let Some(c) = obj.get("const") {
            return Ok(self.literal_json(c));
        }
        if let Some(e) = obj.get("enum") {
            let Value::Array(vals) = e else {
                return Err(Compiler::err(path, "enum must be a list"));
            };
            if vals.is_empty() {
                return Err(Compiler::err(path, "enum must not be empty"));
            }
            let alts = vals
                .iter()
                .map(|v| vec![Elem::Rule(self.literal_json(v))])
                .collect();
            return Ok(self.g.add(alts));
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(list) = obj.get(key) {
                let Value::Array(list) = list else {
                    return Err(Compiler::err(path, format!("{key} must be a list")));
                };
                if list.is_empty() {
                    return Err(Compiler::err(path, format!("{key} must not be empty")));
                }
                let mut alts = Vec::new();
                for (i, sub) in list.iter().enumerate() {
                    let r = self.value(sub, &format!("{path}/{key}/{i}"), depth)?;
                    alts.push(vec![Elem::Rule(r)]);
                }
                return Ok(self.g.add(alts));
            }
        }
        let types: Vec<&str> = match obj.get("type") {
            None => {
                if obj.contains_key("properties") {
                    vec!["object"]
                } else if obj.contains_key("items") {
                    vec!["array"]
                } else {
                    return Ok(self.any_value(depth));
                }
            }
            Some(Value::String(t)) => vec![t.as_str()],
            Some(Value::Array(ts)) => ts
                .iter()
                .map(|t| {
                    t.as_str()
                        .ok_or_else(|| Compiler::err(path, "type list must hold strings"))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(Compiler::err(path, "type must be a string or a list")),
        };
        let mut alts = Vec::new();
        for t in types {
            let r = match t {
                "string" => {
                    let min = uint_kw(obj, "minLength", path)?.unwrap_or(0);
                    let max = uint_kw(obj, "maxLength", path)?.unwrap_or(MAX_STRING.max(min));
                    if min > max || max > 4096 {
                        return Err(Compiler::err(path, "minLength/maxLength out of range"));
                    }
                    self.string(min, max)
                }
                "integer" => self.integer(),
                "number" => self.number(),
                "boolean" => {
                    let t = self.lit("true");
                    let f = self.lit("false");
                    self.g.add(vec![vec![Elem::Rule(t)], vec![Elem::Rule(f)]])
                }
                "null" => self.lit("null"),
                "array" => {
                    let min = uint_kw(obj, "minItems", path)?.unwrap_or(0);
                    let max = uint_kw(obj, "maxItems", path)?.unwrap_or(MAX_ITEMS.max(min));
                    if min > max || max > 256 {
                        return Err(Compiler::err(path, "minItems/maxItems out of range"));
                    }
                    let item = match obj.get("items") {
                        Some(i) => self.value(i, &format!("{path}/items"), depth + 1)?,
                        None => self.any_value(depth + 1),
                    };
                    self.array(item, min, max)
                }
                "object" => self.object(obj, path, depth)?,
                other => return Err(Compiler::err(path, format!("unknown type `{other}`"))),
            };
            alts.push(vec![Elem::Rule(r)]);
        }
        Ok(self.g.add(alts))
    }

    fn object(
        &mut self,
        obj: &serde_json::Map<String, Value>,
        path: &str,
        depth: usize,
    ) -> Result<u32, SchemaError> {
        let Some(props) = obj.get("properties") else {
            return Ok(self.any_object(depth.min(MAX_DEPTH)));
        };
        let Value::Object(props) = props else {
            return Err(Compiler::err(path, "properties must be an object"));
        };
        let required: Vec<&str> = match obj.get("required") {
            None => Vec::new(),
            Some(Value::Array(r)) => r.iter().filter_map(Value::as_str).collect(),
            Some(_) => return Err(Compiler::err(path, "required must be a list")),
        };
        for r in &required {
            if !props.contains_key(*r) {
                return Err(Compiler::err(
                    path,
                    format!("required property `{r}` is not in properties"),
                ));
            }
        }
        let ws = self.ws;
        // One rule per property: "key": value
        let mut members = Vec::new();
        for (k, v) in props {
            let key = self.literal_json(&Value::String(k.clone()));
            let val = self.value(v, &format!("{path}/properties/{k}"), depth + 1)?;
            let m = self.g.add(vec![vec![
                Elem::Rule(key),
                Elem::byte(b':'),
                Elem::Rule(ws),
                Elem::Rule(val),
            ]]);
            members.push((m, required.contains(&k.as_str())));
        }
        // first_i / rest_i: properties i.. with or without a member already written.
        let n = members.len();
        let end = self.g.add(vec![vec![]]);
        let mut first_next = end;
        let mut rest_next = end;
        for i in (0..n).rev() {
            let (m, req) = members[i];
            let first = self.g.add({
                let mut a = vec![vec![Elem::Rule(m), Elem::Rule(rest_next)]];
                if !req {
                    a.push(vec![Elem::Rule(first_next)]);
                }
                a
            });
            let rest = self.g.add({
                let mut a = vec![vec![
                    Elem::byte(b','),
                    Elem::Rule(ws),
                    Elem::Rule(m),
                    Elem::Rule(rest_next),
                ]];
                if !req {
                    a.push(vec![Elem::Rule(rest_next)]);
                }
                a
            });
            first_next = first;
            rest_next = rest;
        }
        Ok(self.g.add(vec![vec![
            Elem::byte(b'{'),
            Elem::Rule(first_next),
            Elem::byte(b'}'),
        ]]))
    }
}

fn uint_kw(
    obj: &serde_json::Map<String, Value>,
    k: &str,
    path: &str,
) -> Result<Option<usize>, SchemaError> {
    match obj.get(k) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .map(|n| Some(n as usize))
            .ok_or_else(|| Compiler::err(path, format!("{k} must be a non-negative integer"))),
    }
}

#[cfg(test)]
mod tests {
    use super::super::Matcher;
    use super::*;
    use serde_json::json;

    fn accepts(g: &Arc<Grammar>, s: &str) -> bool {
        let mut m = Matcher::new(g.clone());
        m.accept_bytes(s.as_bytes()) && m.is_accepting()
    }

    #[test]
    fn object_with_required_and_optional() {
        let g = compile_schema(&json!({
            "type": "object",
            "properties": {
                "name": {"type": "string", "maxLength": 5},
                "age": {"type": "integer"},
                "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 2},
                "ok": {"type": ["boolean", "null"]}
            },
            "required": ["name"]
        }))
        .expect("compiles");
        assert!(accepts(&g, r#"{"name": "bob"}"#));
        assert!(accepts(
            &g,
            r#"{"name":"bob","age":-12,"tags":["a","b"],"ok":null}"#
        ));
        assert!(accepts(&g, r#"{"name": "", "ok": true}"#));
        assert!(!accepts(&g, r#"{"age": 1}"#), "name is required");
        assert!(!accepts(&g, r#"{"name": "toolong"}"#), "maxLength");
        assert!(!accepts(&g, r#"{"name": "a", "tags": ["c"]}"#), "enum");
        assert!(!accepts(&g, r#"{"name": "a", "x": 1}"#), "no extra keys");
        assert!(!accepts(&g, r#"{"name": "a",}"#));
        assert!(!accepts(&g, r#"{"name": "a", "age": 01}"#));
    }

    #[test]
    fn json_object_mode_and_utf8() {
        let g = compile_json_object();
        assert!(accepts(&g, r#"{}"#));
        assert!(accepts(&g, r#"{"a": [1, 2.5, "x\n"], "b": {"c": null}}"#));
        assert!(accepts(&g, "{\"é\": \"日本\"}"));
        assert!(!accepts(&g, r#"[1]"#));
        let mut m = Matcher::new(g);
        assert!(!m.accept_bytes(b"{\"\xff"), "invalid UTF-8 refused");
        for bad in [
            &b"\xf4\x90\x80\x80"[..],
            b"\xf0\x80\x80\x80",
            b"\xed\xa0\x80",
            b"\xe0\x80\x80",
            b"\xc0\x80",
        ] {
            let mut m = Matcher::new(compile_json_object());
            assert!(m.accept_bytes(b"{\""));
            assert!(!m.accept_bytes(bad), "{bad:?} is not UTF-8");
        }
        let mut m = Matcher::new(compile_json_object());
        assert!(m.accept_bytes("{\"\u{10FFFF}\u{D7FF}\": 1}".as_bytes()) && m.is_accepting());
    }

    #[test]
    fn refs_and_unsupported_keywords() {
        let g = compile_schema(&json!({
            "$defs": {"c": {"type": "object", "properties": {"hex": {"type": "string"}}, "required": ["hex"]}},
            "type": "array", "items": {"$ref": "#/$defs/c"}, "minItems": 1
        }))
        .expect("compiles");
        assert!(accepts(&g, r##"[{"hex": "#fff"}]"##));
        assert!(!accepts(&g, "[]"));
        let e = compile_schema(&json!({"type": "string", "pattern": "^a"})).expect_err("pattern");
        assert!(
            e.to_string().contains("unsupported keyword `pattern`"),
            "{e}"
        );
        let e = compile_schema(&json!({"type": "integer", "minimum": 3})).expect_err("minimum");
        assert!(e.to_string().contains("`minimum`"), "{e}");
        assert!(compile_schema(&json!("x")).is_err());
        assert!(
            compile_schema(&json!({"type": "object", "required": ["a"], "properties": {}}))
                .is_err()
        );
    }
}
