//! `POST /v1/chat/completions`: messages → the model's chat template → the engine, with
//! streaming, tools (`tool_choice` auto/required/named; forced calls are grammar-constrained),
//! `response_format` json_object/json_schema (grammar-constrained), and `<think>` blocks split
//! into `reasoning_content`.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use picolm::chat::ChatMessage;
use picolm::engine::{FinishReason, LogitsProcessor};
use picolm::grammar::{Grammar, GrammarProcessor, compile_json_object, compile_schema};
use serde_json::{Value, json};
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::error::{ApiError, ApiResult};
use super::generate::{self, Knobs, TextPipeline};
use super::types::*;
use super::{ApiJson, Principal, RequestId};
use crate::output::{Channel, parse_tool_calls};
use crate::privacy::SensitiveString;
use crate::state::SharedState;
use crate::worker::GenEvent;

/// How tools are used in this request.
#[derive(Debug, Clone, PartialEq)]
enum ToolMode {
    None,
    Auto,
    /// Output is constrained to a call of one of these tools.
    Forced,
}

fn flatten(content: Option<Content>, idx: usize) -> ApiResult<Option<String>> {
    match content {
        None => Ok(None),
        Some(Content::Text(s)) => Ok(Some(s)),
        Some(Content::Parts(parts)) => {
            let mut s = String::new();
            for p in parts {
                match (p.kind.as_str(), p.text) {
                    ("text", Some(t)) => s.push_str(&t),
                    ("text", None) => {
                        return Err(ApiError::bad_request("a text part needs `text`")
                            .param(format!("messages[{idx}].content")));
                    }
                    _ => {
                        return Err(ApiError::bad_request(
                            "only text content parts are supported by this model",
                        )
                        .param(format!("messages[{idx}].content")));
                    }
                }
            }
            Ok(Some(s))
        }
    }
}

fn messages(req: &mut ChatRequest) -> ApiResult<Vec<ChatMessage>> {
    if req.messages.is_empty() {
        return Err(ApiError::bad_request("`messages` must not be empty").param("messages"));
    }
    let mut out = Vec::with_capacity(req.messages.len());
    for (i, m) in std::mem::take(&mut req.messages).into_iter().enumerate() {
        let role = match m.role.as_str() {
            "system" | "developer" => "system",
            "user" => "user",
            "assistant" => "assistant",
            "tool" | "function" => "tool",
            _ => {
                return Err(ApiError::bad_request(
                    "role must be one of system, developer, user, assistant, tool",
                )
                .param(format!("messages[{i}].role")));
            }
        };
        let content = flatten(m.content, i)?;
        if role != "assistant" && content.is_none() {
            return Err(ApiError::bad_request("this message needs `content`")
                .param(format!("messages[{i}].content")));
        }
        let tool_calls = match m.tool_calls {
            None => None,
            Some(calls) => {
                let mut v = Vec::new();
                for (j, c) in calls.into_iter().enumerate() {
                    // Templates need `arguments` as an object, OpenAI sends a JSON string.
                    let args = match c.function.arguments {
                        Value::String(s) => serde_json::from_str::<Value>(&s).ok(),
                        Value::Null => Some(json!({})),
                        o @ Value::Object(_) => Some(o),
                        _ => None,
                    }
                    .filter(Value::is_object)
                    .ok_or_else(|| {
                        ApiError::bad_request("tool call `arguments` must be a JSON object")
                            .param(format!("messages[{i}].tool_calls[{j}].function.arguments"))
                    })?;
                    v.push(json!({
                        "id": c.id.unwrap_or_else(|| format!("call_{j}")),
                        "type": c.kind.unwrap_or_else(|| "function".into()),
                        "function": {"name": c.function.name, "arguments": args},
                    }));
                }
                Some(Value::Array(v))
            }
        };
        out.push(ChatMessage {
            role: role.to_string(),
            // A tool-calling assistant turn has no content; templates that concatenate
            // `message['content']` need a string (llama.cpp does the same).
            content: Some(content.unwrap_or_default()),
            name: m.name,
            tool_calls,
            tool_call_id: m.tool_call_id,
        });
    }
    Ok(out)
}

/// The grammar for this request, if any, and how tools are used.
fn constraint(req: &ChatRequest) -> ApiResult<(Option<Arc<Grammar>>, ToolMode)> {
    let tools = req.tools.as_deref().unwrap_or(&[]);
    for (i, t) in tools.iter().enumerate() {
        if t.kind != "function" || t.function.name.is_empty() {
            return Err(ApiError::bad_request("tools must be functions with a name")
                .param(format!("tools[{i}]")));
        }
    }
    let mode = match &req.tool_choice {
        _ if tools.is_empty() => ToolMode::None,
        None => ToolMode::Auto,
        Some(Value::String(s)) if s == "auto" => ToolMode::Auto,
        Some(Value::String(s)) if s == "none" => ToolMode::None,
        Some(Value::String(s)) if s == "required" => ToolMode::Forced,
        Some(Value::Object(_)) => ToolMode::Forced,
        Some(_) => {
            return Err(ApiError::bad_request(
                "tool_choice must be \"auto\", \"none\", \"required\" or a function",
            )
            .param("tool_choice"));
        }
    };
    if mode == ToolMode::Forced {
        let named = req
            .tool_choice
            .as_ref()
            .and_then(|c| c.pointer("/function/name"))
            .and_then(Value::as_str);
        let chosen: Vec<&ToolDef> = match named {
            Some(n) => {
                let t: Vec<_> = tools.iter().filter(|t| t.function.name == n).collect();
                if t.is_empty() {
                    return Err(
                        ApiError::bad_request("tool_choice names a tool not in `tools`")
                            .param("tool_choice"),
                    );
                }
                t
            }
            None => tools.iter().collect(),
        };
        let alts: Vec<Value> = chosen
            .iter()
            .map(|t| {
                json!({
                    "type": "object",
                    "properties": {
                        "name": {"const": t.function.name},
                        "arguments": t.function.parameters.clone()
                            .unwrap_or_else(|| json!({"type": "object"})),
                    },
                    "required": ["name", "arguments"],
                })
            })
            .collect();
        let schema = if alts.len() == 1 {
            alts[0].clone()
        } else {
            json!({"anyOf": alts})
        };
        let g = compile_schema(&schema)
            .map_err(|e| ApiError::unprocessable(format!("tool parameters: {e}")).param("tools"))?;
        return Ok((Some(g), mode));
    }
    let g = match &req.response_format {
        None => None,
        Some(f) => match f.kind.as_str() {
            "text" => None,
            "json_object" => Some(compile_json_object()),
            "json_schema" => {
                let js = f.json_schema.as_ref().ok_or_else(|| {
                    ApiError::bad_request("response_format json_schema needs `json_schema`")
                        .param("response_format")
                })?;
                // OpenAI nests the schema in {"name", "schema", "strict"}; the seed README
                // passes the schema itself.
                let schema = match js.get("schema") {
                    Some(s) if js.get("name").is_some() || js.get("strict").is_some() => s,
                    Some(s) if !s.is_object() || js.get("type").is_none() => s,
                    _ => js,
                };
                Some(compile_schema(schema).map_err(|e| {
                    ApiError::unprocessable(e.to_string()).param("response_format.json_schema")
                })?)
            }
            _ => {
                return Err(ApiError::bad_request(
                    "response_format.type must be text, json_object or json_schema",
                )
                .param("response_format"));
            }
        },
    };
    Ok((g, mode))
}

pub async fn chat(
    State(st): State<SharedState>,
    rid: Option<Extension<RequestId>>,
    principal: Option<Extension<Principal>>,
    ApiJson(mut req): ApiJson<ChatRequest>,
) -> ApiResult<Response> {
    let knobs = Knobs {
        max_tokens: req.max_completion_tokens.or(req.max_tokens),
        temperature: req.temperature,
        top_p: req.top_p,
        top_k: req.top_k,
        min_p: req.min_p,
        seed: req.seed,
        frequency_penalty: req.frequency_penalty,
        presence_penalty: req.presence_penalty,
        repeat_penalty: req.repeat_penalty,
        stop: req.stop.take().map(Stop::into_vec).unwrap_or_default(),
        n: req.n,
        ignore_eos: req.ignore_eos.unwrap_or(false),
    };
    knobs.validate(&st)?;
    let msgs = messages(&mut req)?;
    let (grammar, tool_mode) = constraint(&req)?;
    let permit = generate::admit(&st)?;
    let lease = generate::model(&st, &req.model).await?;
    let template = lease
        .model
        .template
        .as_ref()
        .ok_or_else(|| ApiError::bad_request("this model has no usable chat template"))?;
    let tools_json = match (&req.tools, &tool_mode) {
        (Some(t), m) if *m != ToolMode::None => {
            Some(serde_json::to_value(t).unwrap_or(Value::Null))
        }
        _ => None,
    };
    let rendered = template
        .render(&msgs, true, tools_json.as_ref())
        .map_err(|e| ApiError::from(crate::Error::Engine(e)))?;
    drop(msgs);
    let opened_think = rendered.trim_end().ends_with("<think>");
    let prompt = generate::tokenize(&lease, SensitiveString::new(rendered), true).await?;
    let processor: Option<Box<dyn LogitsProcessor>> = match grammar {
        Some(g) => {
            let model = lease.model.clone();
            let trie = tokio::task::spawn_blocking(move || model.trie())
                .await
                .map_err(|_| ApiError::internal("grammar task failed"))?;
            Some(Box::new(GrammarProcessor::new(
                g,
                trie,
                lease.model.tokenizer.clone(),
            )))
        }
        None => None,
    };
    let model_name = req.model.clone();
    let stream = req.stream.unwrap_or(false);
    let include_usage = req.stream_options.as_ref().is_some_and(|o| o.include_usage);
    let running = generate::submit(&st, lease, permit, prompt, &knobs, processor)?;
    let ctx = Ctx {
        st: st.clone(),
        model: model_name,
        id: format!("chatcmpl-{:024x}", rand::random::<u128>() >> 32),
        created: crate::store::now_unix(),
        tool_mode,
        request_id: rid.map(|r| r.0.0.clone()),
        principal: principal.and_then(|p| p.0.0.clone()),
        think: opened_think,
    };
    if stream {
        Ok(stream_chat(ctx, running, knobs.stop, include_usage).into_response())
    } else {
        Ok(complete_chat(ctx, running, knobs.stop)
            .await?
            .into_response())
    }
}

struct Ctx {
    st: SharedState,
    model: String,
    id: String,
    created: u64,
    tool_mode: ToolMode,
    request_id: Option<String>,
    principal: Option<String>,
    think: bool,
}

impl Ctx {
    fn usage(&self, prompt: usize, completion: usize, cached: usize) -> Usage {
        let p = self.st.count(prompt);
        let c = self.st.count(completion);
        Usage {
            prompt_tokens: p,
            completion_tokens: c,
            total_tokens: p + c,
            prompt_tokens_details: PromptTokensDetails {
                cached_tokens: self.st.count(cached),
            },
        }
    }
    fn chunk(&self, delta: Delta, finish: Option<&'static str>) -> ChatChunk {
        ChatChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk",
            created: self.created,
            model: self.model.clone(),
            choices: vec![ChunkChoice {
                index: 0,
                delta,
                finish_reason: finish,
                logprobs: None,
            }],
            usage: None,
            system_fingerprint: "a3s-power",
        }
    }
}

async fn complete_chat(
    ctx: Ctx,
    mut run: generate::Running,
    stops: Vec<String>,
) -> ApiResult<axum::Json<ChatCompletion>> {
    let mut pipe = TextPipeline::new(&run.lease, stops, Some(ctx.think));
    let mut content = SensitiveString::default();
    let mut reasoning = SensitiveString::default();
    let mut finish = None;
    let (mut pt, mut ct, mut cached) = (run.prompt_tokens, 0, 0);
    let mut sink = |parts: Vec<(Channel, String)>| {
        for (c, s) in parts {
            match c {
                Channel::Content => content.push_str(&s),
                Channel::Reasoning => reasoning.push_str(&s),
            }
        }
    };
    while let Some(ev) = run.rx.recv().await {
        match ev {
            GenEvent::Token(t) => {
                ct += 1;
                sink(pipe.push(t));
                if pipe.stopped {
                    break; // dropping the receiver cancels the sequence
                }
            }
            GenEvent::Finished {
                reason,
                prompt_tokens,
                completion_tokens,
                cached_tokens,
            } => {
                finish = Some(reason);
                pt = prompt_tokens;
                ct = completion_tokens;
                cached = cached_tokens;
                break;
            }
            GenEvent::Failed(_) => {
                return Err(ApiError::unavailable("generation failed; retry"));
            }
        }
    }
    sink(pipe.finish());
    let mut reason = generate::finish_reason(finish, pipe.stopped);
    if finish == Some(FinishReason::Cancelled) && !pipe.stopped {
        return Err(ApiError::unavailable("generation was cancelled"));
    }
    let mut message = MessageOut {
        role: "assistant",
        content: Some(content.as_str().to_string()),
        reasoning_content: (!reasoning.is_empty()).then(|| reasoning.as_str().to_string()),
        tool_calls: None,
    };
    if ctx.tool_mode != ToolMode::None
        && let Some((calls, rest)) = parse_tool_calls(content.as_str())
    {
        message.tool_calls = Some(
            calls
                .into_iter()
                .map(|mut c| {
                    c.index = None;
                    c
                })
                .collect(),
        );
        message.content = (!rest.is_empty()).then_some(rest);
        reason = "tool_calls";
    }
    generate::pad(&ctx.st, run.started).await;
    generate::record(
        &ctx.st,
        "chat",
        &ctx.model,
        ctx.request_id.clone(),
        ctx.principal.clone(),
        reason,
        pt,
        ct,
        run.started,
    );
    Ok(axum::Json(ChatCompletion {
        id: ctx.id.clone(),
        object: "chat.completion",
        created: ctx.created,
        model: ctx.model.clone(),
        choices: vec![ChatChoice {
            index: 0,
            message,
            finish_reason: reason,
            logprobs: None,
        }],
        usage: ctx.usage(pt, ct, cached),
        system_fingerprint: "a3s-power",
    }))
}

fn event(v: &impl serde::Serialize) -> Event {
    Event::default().data(serde_json::to_string(v).unwrap_or_else(|_| "{}".into()))
}

/// Streams one SSE event per token, then the finish chunk, the usage chunk (if asked) and
/// `[DONE]`. A task drives the generation; when the client goes away its channel closes, the
/// task ends, and dropping the engine receiver cancels the sequence.
fn stream_chat(
    ctx: Ctx,
    mut run: generate::Running,
    stops: Vec<String>,
    include_usage: bool,
) -> impl IntoResponse {
    let st = ctx.st.clone();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Result<Event, Infallible>>();
    tokio::spawn(async move {
        let send = |e: Event| tx.send(Ok(e)).is_ok();
        let role = Delta {
            role: Some("assistant"),
            content: Some(String::new()),
            ..Delta::default()
        };
        if !send(event(&ctx.chunk(role, None))) {
            return;
        }
        let mut pipe = TextPipeline::new(&run.lease, stops, Some(ctx.think));
        // With tools on auto, text that starts like a tool call is held until the end.
        let mut held = SensitiveString::default();
        let mut holding = ctx.tool_mode == ToolMode::Forced;
        let mut decided = ctx.tool_mode != ToolMode::Auto;
        let mut finish = None;
        let (mut pt, mut ct, mut cached) = (run.prompt_tokens, 0, 0);
        let mut failed = false;
        let emit = |parts: Vec<(Channel, String)>,
                    held: &mut SensitiveString,
                    holding: &mut bool,
                    decided: &mut bool|
         -> bool {
            for (c, s) in parts {
                match c {
                    Channel::Reasoning => {
                        let d = Delta {
                            reasoning_content: Some(s),
                            ..Delta::default()
                        };
                        if !send(event(&ctx.chunk(d, None))) {
                            return false;
                        }
                    }
                    Channel::Content => {
                        if !*decided {
                            held.push_str(&s);
                            let t = held.as_str().trim_start();
                            if t.is_empty() || "<tool_call>".starts_with(t) {
                                continue;
                            }
                            *decided = true;
                            *holding = t.starts_with("<tool_call>") || t.starts_with('{');
                            if *holding {
                                continue;
                            }
                            let d = Delta {
                                content: Some(held.as_str().to_string()),
                                ..Delta::default()
                            };
                            *held = SensitiveString::default();
                            if !send(event(&ctx.chunk(d, None))) {
                                return false;
                            }
                            continue;
                        }
                        if *holding {
                            held.push_str(&s);
                            continue;
                        }
                        let d = Delta {
                            content: Some(s),
                            ..Delta::default()
                        };
                        if !send(event(&ctx.chunk(d, None))) {
                            return false;
                        }
                    }
                }
            }
            true
        };
        while let Some(ev) = run.rx.recv().await {
            match ev {
                GenEvent::Token(t) => {
                    ct += 1;
                    let parts = pipe.push(t);
                    if !emit(parts, &mut held, &mut holding, &mut decided) {
                        return;
                    }
                    if pipe.stopped {
                        break;
                    }
                }
                GenEvent::Finished {
                    reason,
                    prompt_tokens,
                    completion_tokens,
                    cached_tokens,
                } => {
                    finish = Some(reason);
                    pt = prompt_tokens;
                    ct = completion_tokens;
                    cached = cached_tokens;
                    break;
                }
                GenEvent::Failed(_) => {
                    failed = true;
                    break;
                }
            }
        }
        if failed {
            let e = ApiError::unavailable("generation failed");
            let _ = send(Event::default().data(e.body().to_string()));
            let _ = send(Event::default().data("[DONE]"));
            return;
        }
        let parts = pipe.finish();
        if !emit(parts, &mut held, &mut holding, &mut decided) {
            return;
        }
        let mut reason = generate::finish_reason(finish, pipe.stopped);
        if !held.is_empty() {
            match parse_tool_calls(held.as_str()).filter(|_| ctx.tool_mode != ToolMode::None) {
                Some((calls, rest)) => {
                    if !rest.is_empty() {
                        let d = Delta {
                            content: Some(rest),
                            ..Delta::default()
                        };
                        let _ = send(event(&ctx.chunk(d, None)));
                    }
                    let d = Delta {
                        tool_calls: Some(calls),
                        ..Delta::default()
                    };
                    let _ = send(event(&ctx.chunk(d, None)));
                    reason = "tool_calls";
                }
                None => {
                    let d = Delta {
                        content: Some(held.as_str().to_string()),
                        ..Delta::default()
                    };
                    let _ = send(event(&ctx.chunk(d, None)));
                }
            }
        }
        generate::pad(&ctx.st, run.started).await;
        let _ = send(event(&ctx.chunk(Delta::default(), Some(reason))));
        if include_usage {
            let mut c = ctx.chunk(Delta::default(), None);
            c.choices.clear();
            c.usage = Some(ctx.usage(pt, ct, cached));
            let _ = send(event(&c));
        }
        let _ = send(Event::default().data("[DONE]"));
        generate::record(
            &ctx.st,
            "chat",
            &ctx.model,
            ctx.request_id.clone(),
            ctx.principal.clone(),
            reason,
            pt,
            ct,
            run.started,
        );
    });
    let events = super::until_shutdown(
        &st,
        UnboundedReceiverStream::new(rx),
        super::shutdown_tail(),
    );
    Sse::new(events).keep_alive(KeepAlive::default())
}
