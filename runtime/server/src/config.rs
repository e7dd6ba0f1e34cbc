//! Configuration: an HCL file (`~/.a3s/power/config.hcl`, `$A3S_POWER_HOME/config.hcl` or
//! `--config`) with every field overridable by `A3S_POWER_*` environment variables.
//!
//! Decoding is by hand rather than through serde so that an unknown key or a bad value is reported
//! with the file, the line, the key and what was expected.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::error::{Error, Result};

/// `keep_alive`: how long an idle model stays loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAlive {
    /// Unload as soon as the last request finishes (`"0"`).
    Immediate,
    /// Never unload (`"-1"`).
    Forever,
    For(Duration),
}

impl KeepAlive {
    /// Parses `"0"`, `"-1"`, `"30s"`, `"5m"`, `"1h"`, `"250ms"`, a bare number of seconds.
    pub fn parse(s: &str) -> std::result::Result<KeepAlive, String> {
        let s = s.trim();
        if s == "0" {
            return Ok(KeepAlive::Immediate);
        }
        if s.starts_with('-') {
            return Ok(KeepAlive::Forever);
        }
        let d = parse_duration(s)?;
        Ok(if d.is_zero() {
            KeepAlive::Immediate
        } else {
            KeepAlive::For(d)
        })
    }
}

/// `"250ms"`, `"30s"`, `"5m"`, `"1h"`, `"1h30m"` or a bare number of seconds.
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let bad = || format!("expected a duration such as \"30s\", \"5m\" or \"1h\", found {s:?}");
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let n_end = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .ok_or_else(bad)?;
        let n: f64 = rest[..n_end].parse().map_err(|_| bad())?;
        rest = &rest[n_end..];
        let u_end = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..u_end] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        rest = &rest[u_end..];
        let secs = n * unit;
        if !secs.is_finite() || secs > 1e9 {
            return Err(bad());
        }
        total += Duration::from_secs_f64(secs);
    }
    Ok(total)
}

/// Where a secret (a model key, an audit key) comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    File(PathBuf),
    Env(String),
}

/// A model registered at start by the `models` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelEntry {
    pub name: String,
    pub path: PathBuf,
    /// Pinned digest (hex), optional.
    pub sha256: Option<String>,
}

/// The runtime configuration. Field names are the HCL keys.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub host: String,
    pub port: u16,
    pub data_dir: PathBuf,
    pub max_loaded_models: usize,
    pub keep_alive: KeepAlive,
    pub num_thread: Option<usize>,
    pub num_parallel: usize,
    pub use_mlock: bool,
    pub flash_attention: bool,
    /// Touch weights one layer at a time and release them (peak RSS ≈ one layer + KV cache).
    pub layer_streaming: bool,
    pub tee_mode: bool,
    pub redact_logs: bool,
    pub suppress_token_metrics: bool,
    /// Model name → hex digest (a `sha256:` prefix is accepted and stripped).
    pub model_hashes: BTreeMap<String, String>,
    pub model_signing_key: Option<String>,
    pub model_key_source: Option<KeySource>,
    pub key_provider: String,
    pub key_rotation_sources: Vec<KeySource>,
    /// `.enc` models: decrypt into locked memory (never to disk).
    pub in_memory_decrypt: bool,
    /// `.enc` models: decrypt only the chunks of the layer being run, into a wiped buffer
    /// (implies layer streaming for those models). Neither flag: a temporary plaintext file.
    pub streaming_decrypt: bool,
    pub rate_limit_rps: f64,
    pub max_concurrent_requests: usize,
    pub tls_port: Option<u16>,
    pub ra_tls: bool,
    pub vsock_port: Option<u32>,
    /// SHA-256 hex digests of accepted API keys; empty = no authentication.
    pub api_keys: Vec<String>,
    pub gpu_layers: i64,
    pub main_gpu: u32,
    /// Context per sequence in tokens (0 = the model's, at most 4096).
    pub ctx_size: usize,
    /// Requests that may wait for a slot before new ones get 429.
    pub max_queue: usize,
    /// Largest request body in bytes.
    pub max_body_bytes: usize,
    /// Upper bound for `max_tokens`.
    pub max_tokens_limit: usize,
    /// JSONL audit log; none = no audit log.
    pub audit_log: Option<PathBuf>,
    /// When set, every audit line is AES-256-GCM encrypted with this key (64 hex characters).
    pub audit_key_source: Option<KeySource>,
    /// Pad every inference response to at least this long (timing side channel).
    pub timing_padding: Option<Duration>,
    /// On SIGTERM/Ctrl-C, how long in-flight requests may run before open streams are ended.
    pub shutdown_timeout: Duration,
    pub models: Vec<ModelEntry>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            host: "127.0.0.1".into(),
            port: 11434,
            data_dir: default_home(),
            max_loaded_models: 1,
            keep_alive: KeepAlive::For(Duration::from_secs(300)),
            num_thread: None,
            num_parallel: 1,
            use_mlock: false,
            flash_attention: false,
            layer_streaming: false,
            tee_mode: false,
            redact_logs: false,
            suppress_token_metrics: false,
            model_hashes: BTreeMap::new(),
            model_signing_key: None,
            model_key_source: None,
            key_provider: "static".into(),
            key_rotation_sources: Vec::new(),
            in_memory_decrypt: false,
            streaming_decrypt: false,
            rate_limit_rps: 0.0,
            max_concurrent_requests: 0,
            tls_port: None,
            ra_tls: false,
            vsock_port: None,
            api_keys: Vec::new(),
            gpu_layers: 0,
            main_gpu: 0,
            ctx_size: 0,
            max_queue: 64,
            max_body_bytes: 4 * 1024 * 1024,
            max_tokens_limit: 8192,
            audit_log: None,
            audit_key_source: None,
            timing_padding: None,
            shutdown_timeout: Duration::from_secs(20),
            models: Vec::new(),
        }
    }
}

/// `$A3S_POWER_HOME`, else `~/.a3s/power`.
pub fn default_home() -> PathBuf {
    if let Some(h) = std::env::var_os("A3S_POWER_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".a3s").join("power")
}

/// The config file used when `--config` is not given.
pub fn default_config_path() -> PathBuf {
    default_home().join("config.hcl")
}

/// Keys whose value is a scalar and may be overridden by `A3S_POWER_<KEY>`.
const SCALAR_KEYS: &[&str] = &[
    "host",
    "port",
    "data_dir",
    "max_loaded_models",
    "keep_alive",
    "num_thread",
    "num_parallel",
    "use_mlock",
    "flash_attention",
    "layer_streaming",
    "tee_mode",
    "redact_logs",
    "suppress_token_metrics",
    "model_signing_key",
    "key_provider",
    "in_memory_decrypt",
    "streaming_decrypt",
    "rate_limit_rps",
    "max_concurrent_requests",
    "tls_port",
    "ra_tls",
    "vsock_port",
    "ctx_size",
    "max_queue",
    "max_body_bytes",
    "max_tokens_limit",
    "audit_log",
    "timing_padding",
    "shutdown_timeout",
];

/// Environment variables named in the seed README that do not follow `A3S_POWER_<KEY>`.
const ENV_ALIASES: &[(&str, &str)] = &[
    ("A3S_POWER_MAX_MODELS", "max_loaded_models"),
    ("A3S_POWER_GPU_LAYERS", "gpu_layers"),
];

/// Where a value came from, for error messages.
struct Origin<'a> {
    file: &'a str,
    src: &'a str,
}

impl Origin<'_> {
    /// `file:line` of the first line that assigns `key` (or opens a block named `key`).
    fn at(&self, key: &str) -> String {
        let leaf = key.rsplit('.').next().unwrap_or(key);
        for (i, line) in self.src.lines().enumerate() {
            let b = line.as_bytes();
            for (at, _) in line.match_indices(leaf) {
                let before = at.checked_sub(1).map(|k| b[k]);
                if !matches!(before, None | Some(b' ' | b'\t' | b'{' | b'"' | b',')) {
                    continue;
                }
                let rest = line[at + leaf.len()..]
                    .strip_prefix('"')
                    .unwrap_or(&line[at + leaf.len()..]);
                let rest = rest.trim_start();
                let head_ok = line[..at]
                    .trim_matches(|c: char| c.is_whitespace() || c == '"')
                    .is_empty()
                    || line[..at].trim_end().ends_with(['{', ',']);
                if head_ok
                    && (rest.starts_with('=') || rest.starts_with('{') || rest.starts_with(':'))
                {
                    return format!("{}:{}", self.file, i + 1);
                }
            }
        }
        self.file.to_string()
    }
    fn err(&self, key: &str, reason: impl Into<String>) -> Error {
        Error::Config {
            origin: self.at(key),
            key: key.to_string(),
            reason: reason.into(),
        }
    }
}

impl Config {
    /// Loads `path` if given (it must exist), else the default file if it exists, then applies
    /// the environment.
    pub fn load(path: Option<&Path>) -> Result<Config> {
        let mut cfg = match path {
            Some(p) => Config::from_file(p)?,
            None => {
                let p = default_config_path();
                if p.is_file() {
                    Config::from_file(&p)?
                } else {
                    Config::default()
                }
            }
        };
        cfg.apply_env(std::env::vars())?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn from_file(path: &Path) -> Result<Config> {
        let src = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Config::from_hcl(&src, &path.display().to_string())
    }

    /// Parses HCL text; `file` names it in errors.
    pub fn from_hcl(src: &str, file: &str) -> Result<Config> {
        let body: hcl::Value = hcl::from_str(src).map_err(|e| Error::Config {
            origin: file.to_string(),
            key: "(syntax)".into(),
            reason: e.to_string(),
        })?;
        let json = serde_json::to_value(&body).map_err(|e| Error::Config {
            origin: file.to_string(),
            key: "(syntax)".into(),
            reason: e.to_string(),
        })?;
        let o = Origin { file, src };
        let mut cfg = Config::default();
        let Value::Object(map) = json else {
            return Err(o.err("(root)", "expected a body of attributes and blocks"));
        };
        for (k, v) in &map {
            cfg.set(k, v, &o)?;
        }
        cfg.validate_at(&o)?;
        Ok(cfg)
    }

    fn set(&mut self, key: &str, v: &Value, o: &Origin<'_>) -> Result<()> {
        let e = |reason: String| o.err(key, reason);
        match key {
            "host" => self.host = string(v).map_err(e)?,
            "port" => self.port = uint(v, 1, u16::MAX as u64).map_err(e)? as u16,
            "data_dir" => self.data_dir = PathBuf::from(string(v).map_err(e)?),
            "max_loaded_models" => self.max_loaded_models = uint(v, 1, 64).map_err(e)? as usize,
            "keep_alive" => {
                let s = match v {
                    Value::Number(n) => n.to_string(),
                    _ => string(v).map_err(e)?,
                };
                self.keep_alive = KeepAlive::parse(&s).map_err(e)?;
            }
            "num_thread" => {
                let n = uint(v, 0, 1024).map_err(e)? as usize;
                self.num_thread = (n > 0).then_some(n);
            }
            "num_parallel" => self.num_parallel = uint(v, 1, 256).map_err(e)? as usize,
            "use_mlock" => self.use_mlock = boolean(v).map_err(e)?,
            "flash_attention" => self.flash_attention = boolean(v).map_err(e)?,
            "layer_streaming" => self.layer_streaming = boolean(v).map_err(e)?,
            "tee_mode" => self.tee_mode = boolean(v).map_err(e)?,
            "redact_logs" => self.redact_logs = boolean(v).map_err(e)?,
            "suppress_token_metrics" => self.suppress_token_metrics = boolean(v).map_err(e)?,
            "model_hashes" => {
                let Value::Object(m) = v else {
                    return Err(e("expected a map of model name to \"sha256:<hex>\"".into()));
                };
                self.model_hashes.clear();
                for (name, d) in m {
                    let s = string(d).map_err(|r| o.err(&format!("model_hashes.{name}"), r))?;
                    let hex = normalize_digest(&s)
                        .map_err(|r| o.err(&format!("model_hashes.{name}"), r))?;
                    self.model_hashes.insert(name.clone(), hex);
                }
            }
            "model_signing_key" => {
                let s = string(v).map_err(e)?;
                if s.len() != 64 || hex::decode(&s).is_err() {
                    return Err(e(
                        "expected 64 hex characters (an Ed25519 public key)".into()
                    ));
                }
                if power_attest::model_seal::parse_verifying_key("model_signing_key", &s).is_err() {
                    return Err(e(
                        "not an Ed25519 public key (64 hex characters from a3s-power keygen)"
                            .into(),
                    ));
                }
                self.model_signing_key = Some(s);
            }
            "model_key_source" => self.model_key_source = Some(key_source(v).map_err(e)?),
            "key_provider" => {
                let s = string(v).map_err(e)?;
                if s != "static" && s != "rotating" {
                    return Err(e(format!(
                        "expected \"static\" or \"rotating\", found {s:?}"
                    )));
                }
                self.key_provider = s;
            }
            "key_rotation_sources" => {
                let Value::Array(a) = v else {
                    return Err(e("expected a list of { file = ... } / { env = ... }".into()));
                };
                self.key_rotation_sources = a
                    .iter()
                    .map(key_source)
                    .collect::<std::result::Result<_, _>>()
                    .map_err(e)?;
            }
            "in_memory_decrypt" => self.in_memory_decrypt = boolean(v).map_err(e)?,
            "streaming_decrypt" => self.streaming_decrypt = boolean(v).map_err(e)?,
            "rate_limit_rps" => {
                let f = v
                    .as_f64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                    .filter(|f| f.is_finite() && *f >= 0.0)
                    .ok_or_else(|| e(format!("expected a number >= 0, found {v}")))?;
                self.rate_limit_rps = f;
            }
            "max_concurrent_requests" => {
                self.max_concurrent_requests = uint(v, 0, 1 << 20).map_err(e)? as usize
            }
            "tls_port" => self.tls_port = Some(uint(v, 1, u16::MAX as u64).map_err(e)? as u16),
            "ra_tls" => self.ra_tls = boolean(v).map_err(e)?,
            "vsock_port" => self.vsock_port = Some(uint(v, 1, u32::MAX as u64).map_err(e)? as u32),
            "api_keys" => {
                let Value::Array(a) = v else {
                    return Err(e(
                        "expected a list of SHA-256 hex digests of API keys".into()
                    ));
                };
                let mut keys = Vec::new();
                for k in a {
                    let s = string(k).map_err(e)?;
                    keys.push(normalize_digest(&s).map_err(e)?);
                }
                self.api_keys = keys;
            }
            "gpu" => {
                let Value::Object(m) = v else {
                    return Err(e("expected a block".into()));
                };
                for (k, v) in m {
                    let key = format!("gpu.{k}");
                    match k.as_str() {
                        "gpu_layers" => {
                            self.gpu_layers = v
                                .as_i64()
                                .filter(|n| *n >= -1)
                                .ok_or_else(|| o.err(&key, "expected an integer >= -1"))?
                        }
                        "main_gpu" => {
                            self.main_gpu = uint(v, 0, 64).map_err(|r| o.err(&key, r))? as u32
                        }
                        _ => return Err(o.err(&key, "unknown key")),
                    }
                }
            }
            "gpu_layers" => {
                self.gpu_layers = v
                    .as_i64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                    .filter(|n| *n >= -1)
                    .ok_or_else(|| e("expected an integer >= -1".into()))?
            }
            "ctx_size" => self.ctx_size = uint(v, 0, 1 << 20).map_err(e)? as usize,
            "max_queue" => self.max_queue = uint(v, 0, 1 << 20).map_err(e)? as usize,
            "max_body_bytes" => self.max_body_bytes = uint(v, 1024, 1 << 30).map_err(e)? as usize,
            "max_tokens_limit" => self.max_tokens_limit = uint(v, 1, 1 << 20).map_err(e)? as usize,
            "audit_log" => self.audit_log = Some(PathBuf::from(string(v).map_err(e)?)),
            "audit_key_source" => self.audit_key_source = Some(key_source(v).map_err(e)?),
            "timing_padding" => {
                let d = parse_duration(&string(v).map_err(e)?).map_err(e)?;
                self.timing_padding = (!d.is_zero()).then_some(d);
            }
            "shutdown_timeout" => {
                let s = match v {
                    Value::Number(n) => n.to_string(),
                    _ => string(v).map_err(e)?,
                };
                self.shutdown_timeout = parse_duration(&s).map_err(e)?;
            }
            "models" | "model" => {
                // `models { name = { path = ... } }` or labeled blocks `model "name" { path = ... }`
                // (several of which may arrive as a list).
                let maps: Vec<&serde_json::Map<String, Value>> = match v {
                    Value::Object(m) => vec![m],
                    Value::Array(a) => a.iter().filter_map(Value::as_object).collect(),
                    _ => Vec::new(),
                };
                if maps.is_empty() {
                    return Err(e(
                        "expected `model \"name\" { path = ..., sha256 = ... }` blocks".into(),
                    ));
                }
                for (name, spec) in maps.into_iter().flatten() {
                    let key = format!("models.{name}");
                    let Value::Object(spec) = spec else {
                        return Err(o.err(&key, "expected { path = ..., sha256 = ... }"));
                    };
                    let mut entry = ModelEntry {
                        name: name.clone(),
                        path: PathBuf::new(),
                        sha256: None,
                    };
                    for (k, v) in spec {
                        let key = format!("models.{name}.{k}");
                        match k.as_str() {
                            "path" => {
                                entry.path = PathBuf::from(string(v).map_err(|r| o.err(&key, r))?)
                            }
                            "sha256" => {
                                let s = string(v).map_err(|r| o.err(&key, r))?;
                                entry.sha256 =
                                    Some(normalize_digest(&s).map_err(|r| o.err(&key, r))?);
                            }
                            _ => return Err(o.err(&key, "unknown key (expected path, sha256)")),
                        }
                    }
                    if entry.path.as_os_str().is_empty() {
                        return Err(o.err(&key, "missing `path`"));
                    }
                    self.models.push(entry);
                }
            }
            _ => {
                return Err(o.err(key, "unknown key"));
            }
        }
        Ok(())
    }

    /// Applies `A3S_POWER_*` variables (`A3S_POWER_HOME` is read by [`default_home`]).
    pub fn apply_env(&mut self, vars: impl IntoIterator<Item = (String, String)>) -> Result<()> {
        let mut home_set = false;
        let mut data_dir_set = false;
        for (name, value) in vars {
            let Some(suffix) = name.strip_prefix("A3S_POWER_") else {
                continue;
            };
            if suffix == "HOME" {
                home_set = true;
                continue;
            }
            let key = ENV_ALIASES
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, k)| k.to_string())
                .or_else(|| {
                    let k = suffix.to_ascii_lowercase();
                    SCALAR_KEYS.contains(&k.as_str()).then_some(k)
                });
            let Some(key) = key else {
                // Not ours (other tools share the prefix); ignore rather than fail.
                continue;
            };
            if key == "data_dir" {
                data_dir_set = true;
            }
            let o = Origin {
                file: &name,
                src: "",
            };
            let v = env_value(&key, &value);
            self.set(&key, &v, &o).map_err(|e| match e {
                Error::Config { reason, .. } => Error::Config {
                    origin: format!("environment variable {name}"),
                    key,
                    reason,
                },
                other => other,
            })?;
        }
        let _ = (home_set, data_dir_set);
        Ok(())
    }

    fn validate_at(&self, o: &Origin<'_>) -> Result<()> {
        if self.ra_tls && self.tls_port.is_none() {
            return Err(o.err("ra_tls", "requires `tls_port`"));
        }
        if self.in_memory_decrypt && self.streaming_decrypt {
            return Err(o.err(
                "streaming_decrypt",
                "in_memory_decrypt and streaming_decrypt exclude each other: pick one decryption mode",
            ));
        }
        if self.key_provider == "rotating" && self.key_rotation_sources.is_empty() {
            return Err(o.err(
                "key_rotation_sources",
                "key_provider = \"rotating\" needs at least one source",
            ));
        }
        Ok(())
    }

    /// Cross-field checks after the environment is applied.
    pub fn validate(&self) -> Result<()> {
        self.validate_at(&Origin {
            file: "configuration",
            src: "",
        })
    }

    pub fn models_dir(&self) -> PathBuf {
        self.data_dir.join("models")
    }
}

fn env_value(key: &str, raw: &str) -> Value {
    let bools = [
        "use_mlock",
        "flash_attention",
        "layer_streaming",
        "tee_mode",
        "redact_logs",
        "suppress_token_metrics",
        "in_memory_decrypt",
        "streaming_decrypt",
        "ra_tls",
    ];
    if bools.contains(&key) {
        return match raw.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Value::Bool(true),
            "0" | "false" | "no" | "off" | "" => Value::Bool(false),
            _ => Value::String(raw.to_string()),
        };
    }
    if let Ok(n) = raw.parse::<u64>()
        && key != "keep_alive"
        && key != "shutdown_timeout"
        && key != "timing_padding"
        && key != "host"
        && key != "model_signing_key"
    {
        return Value::from(n);
    }
    if key == "gpu_layers"
        && let Ok(n) = raw.parse::<i64>()
    {
        return Value::from(n);
    }
    Value::String(raw.to_string())
}

fn string(v: &Value) -> std::result::Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        other => Err(format!("expected a string, found {}", kind(other))),
    }
}

fn boolean(v: &Value) -> std::result::Result<bool, String> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) => Err(format!("expected true or false, found {s:?}")),
        other => Err(format!("expected true or false, found {}", kind(other))),
    }
}

fn uint(v: &Value, min: u64, max: u64) -> std::result::Result<u64, String> {
    let n = match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    };
    match n {
        Some(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!("expected an integer in {min}..={max}, found {v}")),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a block/map",
    }
}

fn key_source(v: &Value) -> std::result::Result<KeySource, String> {
    let msg = "expected { file = \"/path/to/key.hex\" } or { env = \"VAR\" }";
    let Value::Object(m) = v else {
        return Err(msg.into());
    };
    match (m.get("file"), m.get("env"), m.len()) {
        (Some(Value::String(f)), None, 1) => Ok(KeySource::File(PathBuf::from(f))),
        (None, Some(Value::String(e)), 1) => Ok(KeySource::Env(e.clone())),
        _ => Err(msg.into()),
    }
}

/// `"sha256:<hex>"` or `"<hex>"` → lowercase hex.
pub fn normalize_digest(s: &str) -> std::result::Result<String, String> {
    let h = s.strip_prefix("sha256:").unwrap_or(s).to_ascii_lowercase();
    if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "expected \"sha256:\" and 64 hex characters, found {} characters",
            s.len()
        ));
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(src: &str) -> String {
        Config::from_hcl(src, "cfg.hcl")
            .expect_err("should fail")
            .to_string()
    }

    #[test]
    fn full_config_parses() {
        let src = r#"
host = "0.0.0.0"
port = 8080
max_loaded_models = 2
keep_alive = "-1"
num_parallel = 4
layer_streaming = true
tee_mode = true
redact_logs = true
suppress_token_metrics = true
model_hashes = {
  "qwen:tiny" = "sha256:ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef0123456789"
}
model_key_source = { env = "MODEL_KEY" }
key_provider = "rotating"
key_rotation_sources = [{ file = "/k1" }, { env = "K2" }]
rate_limit_rps = 2.5
max_concurrent_requests = 8
tls_port = 11443
ra_tls = true
api_keys = ["0000000000000000000000000000000000000000000000000000000000000000"]
gpu {
  gpu_layers = -1
  main_gpu = 0
}
models {
  tiny = { path = "/m/tiny.gguf" }
}
model "org/repo:Q8_0" {
  path = "/m/q8.gguf"
}
model "other" {
  path = "/m/o.gguf"
}
"#;
        let c = Config::from_hcl(src, "cfg.hcl").expect("parses");
        assert_eq!(c.host, "0.0.0.0");
        assert_eq!(c.port, 8080);
        assert_eq!(c.keep_alive, KeepAlive::Forever);
        assert_eq!(c.num_parallel, 4);
        assert!(c.layer_streaming && c.tee_mode && c.redact_logs && c.ra_tls);
        assert_eq!(
            c.model_hashes["qwen:tiny"],
            "abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789"
        );
        assert_eq!(c.model_key_source, Some(KeySource::Env("MODEL_KEY".into())));
        assert_eq!(c.key_rotation_sources.len(), 2);
        assert_eq!(c.rate_limit_rps, 2.5);
        assert_eq!(c.tls_port, Some(11443));
        assert_eq!(c.gpu_layers, -1);
        let names: Vec<_> = c.models.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["tiny", "org/repo:Q8_0", "other"]);
    }

    #[test]
    fn decryption_modes_and_layer_streaming() {
        let c = Config::from_hcl(
            "streaming_decrypt = true\nlayer_streaming = true\n",
            "cfg.hcl",
        )
        .expect("parses");
        assert!(c.streaming_decrypt && c.layer_streaming && !c.in_memory_decrypt);
        let e = err("in_memory_decrypt = true\nstreaming_decrypt = true\n");
        assert!(
            e.starts_with("cfg.hcl:2: `streaming_decrypt`: in_memory_decrypt and streaming_decrypt exclude each other"),
            "{e}"
        );
        let e = err("layer_streaming = \"on\"\n");
        assert!(
            e.contains("`layer_streaming`: expected true or false"),
            "{e}"
        );
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let e = err("host = \"x\"\n\nporrt = 1\n");
        assert_eq!(e, "cfg.hcl:3: `porrt`: unknown key");
    }

    #[test]
    fn bad_values_name_the_key_and_expectation() {
        let e = err("port = 70000\n");
        assert!(
            e.starts_with("cfg.hcl:1: `port`: expected an integer"),
            "{e}"
        );
        let e = err("tee_mode = \"yes\"\n");
        assert!(e.contains("`tee_mode`: expected true or false"), "{e}");
        let e = err("host = \"h\"\nkeep_alive = \"5 minutes\"\n");
        assert!(
            e.starts_with("cfg.hcl:2: `keep_alive`: expected a duration"),
            "{e}"
        );
        let e = err("model_hashes = { a = \"sha256:12\" }\n");
        assert!(e.contains("`model_hashes.a`"), "{e}");
        let e = err("ra_tls = true\n");
        assert!(e.contains("`ra_tls`: requires `tls_port`"), "{e}");
        let e = err("models {\n  m = { pth = \"/x\" }\n}\n");
        assert!(
            e.starts_with("cfg.hcl:2: `models.m.pth`: unknown key"),
            "{e}"
        );
    }

    #[test]
    fn syntax_error_names_the_file() {
        let e = err("host = \n");
        assert!(e.starts_with("cfg.hcl: `(syntax)`"), "{e}");
    }

    #[test]
    fn env_overrides_and_errors_name_the_variable() {
        let mut c = Config::default();
        c.apply_env([
            ("A3S_POWER_PORT".to_string(), "9000".to_string()),
            ("A3S_POWER_TEE_MODE".to_string(), "1".to_string()),
            ("A3S_POWER_MAX_MODELS".to_string(), "3".to_string()),
            ("A3S_POWER_KEEP_ALIVE".to_string(), "0".to_string()),
            ("A3S_POWER_RATE_LIMIT_RPS".to_string(), "5".to_string()),
            ("PATH".to_string(), "/bin".to_string()),
        ])
        .expect("applies");
        assert_eq!(c.port, 9000);
        assert!(c.tee_mode);
        assert_eq!(c.max_loaded_models, 3);
        assert_eq!(c.keep_alive, KeepAlive::Immediate);
        assert_eq!(c.rate_limit_rps, 5.0);
        let e = c
            .apply_env([("A3S_POWER_PORT".to_string(), "http".to_string())])
            .expect_err("bad port")
            .to_string();
        assert!(
            e.starts_with("environment variable A3S_POWER_PORT: `port`"),
            "{e}"
        );
    }

    #[test]
    fn shutdown_timeout_from_file_and_environment() {
        assert_eq!(Config::default().shutdown_timeout, Duration::from_secs(20));
        let c = Config::from_hcl("shutdown_timeout = \"90s\"\n", "cfg.hcl").expect("parses");
        assert_eq!(c.shutdown_timeout, Duration::from_secs(90));
        let mut c = Config::default();
        c.apply_env([
            ("A3S_POWER_SHUTDOWN_TIMEOUT".to_string(), "5".to_string()),
            ("A3S_POWER_TIMING_PADDING".to_string(), "2".to_string()),
        ])
        .expect("applies");
        assert_eq!(c.shutdown_timeout, Duration::from_secs(5));
        assert_eq!(c.timing_padding, Some(Duration::from_secs(2)));
        let e = err("shutdown_timeout = \"soon\"\n");
        assert!(
            e.starts_with("cfg.hcl:1: `shutdown_timeout`: expected a duration"),
            "{e}"
        );
    }

    #[test]
    fn signing_key_must_be_an_ed25519_point() {
        // RFC 8032 test vector 2's public key, and the same bytes with a first byte that puts
        // them off the curve.
        let good = "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c";
        let c = Config::from_hcl(&format!("model_signing_key = \"{good}\"\n"), "cfg.hcl")
            .expect("parses");
        assert_eq!(c.model_signing_key.as_deref(), Some(good));
        let bad = format!("00{}", &good[2..]);
        let e = err(&format!("model_signing_key = \"{bad}\"\n"));
        assert!(
            e.starts_with("cfg.hcl:1: `model_signing_key`: not an Ed25519 public key"),
            "{e}"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("42"), Ok(Duration::from_secs(42)));
        assert!(parse_duration("5 m").is_err());
        assert!(parse_duration("").is_err());
        assert_eq!(KeepAlive::parse("-1"), Ok(KeepAlive::Forever));
        assert_eq!(KeepAlive::parse("0s"), Ok(KeepAlive::Immediate));
    }
}
