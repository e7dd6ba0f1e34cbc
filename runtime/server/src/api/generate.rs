//! The generation path shared by chat and text completions: parameter validation, admission,
//! tokenization, submission to the model's engine thread, and the per-request text pipeline
//! (detokenization, stop strings, `<think>` splitting).

use std::time::Instant;

use picolm::SamplingParams;
use picolm::engine::{FinishReason, LogitsProcessor, SequenceRequest};
use picolm::tokenizer::StreamDecoder;
use tokio::sync::{OwnedSemaphorePermit, mpsc};

use super::error::{ApiError, ApiResult};
use crate::lifecycle::ModelLease;
use crate::output::{Channel, StopMatcher, ThinkSplitter};
use crate::privacy::SensitiveString;
use crate::state::SharedState;
use crate::worker::GenEvent;

/// Sampling knobs common to both endpoints, as sent.
#[derive(Debug, Default, Clone)]
pub struct Knobs {
    pub max_tokens: Option<u64>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<u32>,
    pub min_p: Option<f32>,
    pub seed: Option<u64>,
    pub frequency_penalty: Option<f32>,
    pub presence_penalty: Option<f32>,
    pub repeat_penalty: Option<f32>,
    pub stop: Vec<String>,
    pub n: Option<u32>,
    pub ignore_eos: bool,
}

fn in_range(v: Option<f32>, lo: f32, hi: f32, name: &str) -> ApiResult<()> {
    if let Some(x) = v
        && !(x.is_finite() && (lo..=hi).contains(&x))
    {
        return Err(
            ApiError::bad_request(format!("`{name}` must be between {lo} and {hi}")).param(name),
        );
    }
    Ok(())
}

impl Knobs {
    /// Checks ranges (before any model is loaded).
    pub fn validate(&self, st: &SharedState) -> ApiResult<()> {
        in_range(self.temperature, 0.0, 2.0, "temperature")?;
        in_range(self.top_p, 0.0, 1.0, "top_p")?;
        in_range(self.min_p, 0.0, 1.0, "min_p")?;
        in_range(self.frequency_penalty, -2.0, 2.0, "frequency_penalty")?;
        in_range(self.presence_penalty, -2.0, 2.0, "presence_penalty")?;
        in_range(self.repeat_penalty, 0.0, 10.0, "repeat_penalty")?;
        if let Some(n) = self.n
            && n != 1
        {
            return Err(ApiError::bad_request("only `n` = 1 is supported").param("n"));
        }
        if let Some(m) = self.max_tokens
            && (m == 0 || m > st.cfg.max_tokens_limit as u64)
        {
            return Err(ApiError::bad_request(format!(
                "`max_tokens` must be between 1 and {}",
                st.cfg.max_tokens_limit
            ))
            .param("max_tokens"));
        }
        if self.stop.len() > 4 || self.stop.iter().any(|s| s.len() > 256) {
            return Err(ApiError::bad_request(
                "`stop` takes at most 4 strings of at most 256 bytes",
            )
            .param("stop"));
        }
        Ok(())
    }

    fn params(&self) -> SamplingParams {
        let mut p = SamplingParams::default();
        if let Some(t) = self.temperature {
            p.temperature = t;
        }
        if let Some(t) = self.top_p {
            p.top_p = t;
        }
        if let Some(k) = self.top_k {
            p.top_k = k as usize;
        }
        if let Some(m) = self.min_p {
            p.min_p = m;
        }
        if let Some(r) = self.repeat_penalty {
            p.repeat_penalty = r;
        }
        p.frequency_penalty = self.frequency_penalty.unwrap_or(0.0);
        p.presence_penalty = self.presence_penalty.unwrap_or(0.0);
        p.seed = self.seed;
        p
    }
}

/// Takes a slot-or-queue permit, or refuses with 429.
pub fn admit(st: &SharedState) -> ApiResult<OwnedSemaphorePermit> {
    st.admission.clone().try_acquire_owned().map_err(|_| {
        st.metrics.rate_limited.with_label_values(&["queue"]).inc();
        ApiError::rate_limited("the request queue is full")
    })
}

/// Loads (or finds) the model.
pub async fn model(st: &SharedState, name: &str) -> ApiResult<ModelLease> {
    if name.is_empty() {
        return Err(ApiError::bad_request("`model` is required").param("model"));
    }
    st.pool.acquire(name).await.map_err(|e| match e {
        crate::Error::Other(m) if m.contains("busy") => ApiError::unavailable(m),
        other => {
            let mut a = ApiError::from(other);
            a.message = crate::privacy::sanitize_error(&a.message, false);
            a
        }
    })
}

/// Tokenizes `text` off the async threads.
pub async fn tokenize(
    lease: &ModelLease,
    text: SensitiveString,
    parse_special: bool,
) -> ApiResult<Vec<u32>> {
    let tok = lease.model.tokenizer.clone();
    tokio::task::spawn_blocking(move || {
        let t = text.as_str();
        let bos_in_text = tok
            .bos()
            .and_then(|b| tok.piece(b, true).ok())
            .is_some_and(|p| !p.is_empty() && t.as_bytes().starts_with(&p));
        tok.encode(t, !bos_in_text, parse_special)
    })
    .await
    .map_err(|_| ApiError::internal("tokenizer task failed"))?
    .map_err(|_| ApiError::bad_request("the input could not be tokenized"))
}

/// A running generation: the event receiver plus what is needed to report on it.
pub struct Running {
    pub rx: mpsc::UnboundedReceiver<GenEvent>,
    pub prompt_tokens: usize,
    pub started: Instant,
    pub lease: ModelLease,
    pub _permit: OwnedSemaphorePermit,
}

/// Submits `prompt` to the model's engine.
pub fn submit(
    st: &SharedState,
    lease: ModelLease,
    permit: OwnedSemaphorePermit,
    prompt: Vec<u32>,
    knobs: &Knobs,
    processor: Option<Box<dyn LogitsProcessor>>,
) -> ApiResult<Running> {
    let n_ctx = lease.model.n_ctx;
    if prompt.is_empty() {
        return Err(ApiError::bad_request("the prompt is empty"));
    }
    if prompt.len() + 1 > n_ctx {
        return Err(ApiError::bad_request(format!(
            "the prompt has {} tokens; this model's context is {n_ctx} tokens",
            prompt.len()
        ))
        .code("context_length_exceeded"));
    }
    let room = n_ctx - prompt.len();
    let max_tokens = knobs
        .max_tokens
        .map_or(room, |m| (m as usize).min(room))
        .min(st.cfg.max_tokens_limit);
    let params = knobs.params();
    params
        .validate()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let prompt_tokens = prompt.len();
    let rx = lease
        .model
        .worker
        .generate(SequenceRequest {
            prompt,
            params,
            max_tokens,
            ignore_eos: knobs.ignore_eos,
            stop_tokens: Vec::new(),
            processor,
        })
        .ok_or_else(|| ApiError::unavailable("the model is being unloaded; retry"))?;
    Ok(Running {
        rx,
        prompt_tokens,
        started: Instant::now(),
        lease,
        _permit: permit,
    })
}

/// Per-request detokenization, stop strings and reasoning split.
pub struct TextPipeline {
    decoder: StreamDecoder,
    stop: StopMatcher,
    think: Option<ThinkSplitter>,
    pub stopped: bool,
}

impl TextPipeline {
    pub fn new(lease: &ModelLease, stops: Vec<String>, think: Option<bool>) -> Self {
        TextPipeline {
            decoder: lease.model.tokenizer.stream_decoder(),
            stop: StopMatcher::new(stops),
            think: think.map(ThinkSplitter::new),
            stopped: false,
        }
    }

    fn route(&mut self, text: String) -> Vec<(Channel, String)> {
        if text.is_empty() {
            return Vec::new();
        }
        match &mut self.think {
            Some(t) => t.push(&text),
            None => vec![(Channel::Content, text)],
        }
    }

    pub fn push(&mut self, token: u32) -> Vec<(Channel, String)> {
        if self.stopped {
            return Vec::new();
        }
        let piece = self.decoder.push(token).unwrap_or_default();
        let (out, stopped) = self.stop.push(&piece);
        self.stopped = stopped;
        self.route(out)
    }

    pub fn finish(&mut self) -> Vec<(Channel, String)> {
        let mut v = Vec::new();
        if !self.stopped {
            let rest = self.decoder.flush();
            let (out, stopped) = self.stop.push(&rest);
            self.stopped = stopped;
            v.extend(self.route(out));
            if !self.stopped {
                let tail = self.stop.finish();
                v.extend(self.route(tail));
            }
        }
        if let Some(t) = &mut self.think {
            v.extend(t.finish());
        }
        v
    }
}

/// OpenAI's finish_reason.
pub fn finish_reason(reason: Option<FinishReason>, stopped_by_text: bool) -> &'static str {
    if stopped_by_text {
        return "stop";
    }
    match reason {
        Some(FinishReason::Length) => "length",
        _ => "stop",
    }
}

/// Sleeps until `timing_padding` has passed since `started` (timing side channel).
pub async fn pad(st: &SharedState, started: Instant) {
    if let Some(p) = st.cfg.timing_padding {
        let e = started.elapsed();
        if e < p {
            tokio::time::sleep(p - e).await;
        }
    }
}

/// Records metrics and an audit event for a finished inference.
#[allow(clippy::too_many_arguments)]
pub fn record(
    st: &SharedState,
    endpoint: &str,
    model: &str,
    request_id: Option<String>,
    principal: Option<String>,
    finish: &str,
    prompt_tokens: usize,
    completion_tokens: usize,
    started: Instant,
) {
    st.metrics
        .inference_requests
        .with_label_values(&[endpoint, finish])
        .inc();
    st.metrics
        .prompt_tokens
        .inc_by(st.count(prompt_tokens) as u64);
    st.metrics
        .completion_tokens
        .inc_by(st.count(completion_tokens) as u64);
    let mut ev = crate::audit::AuditEvent::new("inference");
    ev.request_id = request_id;
    ev.principal = principal;
    ev.model = Some(model.to_string());
    ev.outcome = Some(format!("{endpoint}:{finish}"));
    ev.prompt_tokens = Some(st.count(prompt_tokens));
    ev.completion_tokens = Some(st.count(completion_tokens));
    ev.duration_ms = Some(started.elapsed().as_millis() as u64);
    st.audit.log(&ev);
    st.metrics.audit_events.inc();
}
