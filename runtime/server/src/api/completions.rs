//! `POST /v1/completions`: raw text in, text out (streaming or not).

use std::convert::Infallible;

use axum::Extension;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};

use super::error::{ApiError, ApiResult};
use super::generate::{self, Knobs, TextPipeline};
use super::types::*;
use super::{ApiJson, Principal, RequestId};
use crate::privacy::SensitiveString;
use crate::state::SharedState;
use crate::worker::GenEvent;

pub async fn completions(
    State(st): State<SharedState>,
    rid: Option<Extension<RequestId>>,
    principal: Option<Extension<Principal>>,
    ApiJson(req): ApiJson<CompletionRequest>,
) -> ApiResult<Response> {
    let knobs = Knobs {
        max_tokens: req.max_tokens,
        temperature: req.temperature,
        top_p: req.top_p,
        top_k: req.top_k,
        min_p: req.min_p,
        seed: req.seed,
        frequency_penalty: req.frequency_penalty,
        presence_penalty: req.presence_penalty,
        repeat_penalty: req.repeat_penalty,
        stop: req.stop.clone().map(Stop::into_vec).unwrap_or_default(),
        n: req.n,
        ignore_eos: req.ignore_eos.unwrap_or(false),
    };
    knobs.validate(&st)?;
    if req.echo == Some(true) {
        return Err(ApiError::bad_request("`echo` is not supported").param("echo"));
    }
    let text = match req.prompt {
        Prompt::One(s) => Some(s),
        Prompt::Many(mut v) if v.len() == 1 => v.pop(),
        Prompt::Many(_) => {
            return Err(ApiError::bad_request("exactly one prompt is supported").param("prompt"));
        }
        Prompt::Tokens(_) => None,
    };
    let permit = generate::admit(&st)?;
    let lease = generate::model(&st, &req.model).await?;
    let prompt = match text {
        Some(t) => generate::tokenize(&lease, SensitiveString::new(t), false).await?,
        None => {
            return Err(
                ApiError::bad_request("token-array prompts are not supported").param("prompt"),
            );
        }
    };
    let running = generate::submit(&st, lease, permit, prompt, &knobs, None)?;
    let id = format!("cmpl-{:024x}", rand::random::<u128>() >> 32);
    let created = crate::store::now_unix();
    let request_id = rid.map(|r| r.0.0.clone());
    let principal = principal.and_then(|p| p.0.0.clone());
    let include_usage = req.stream_options.as_ref().is_some_and(|o| o.include_usage);
    let model = req.model.clone();
    let mk = move |text: String, finish: Option<&'static str>, usage: Option<Usage>| Completion {
        id: id.clone(),
        object: "text_completion",
        created,
        model: model.clone(),
        choices: vec![CompletionChoice {
            index: 0,
            text,
            finish_reason: finish,
            logprobs: None,
        }],
        usage,
        system_fingerprint: "a3s-power",
    };
    let mut run = running;
    let mut pipe = TextPipeline::new(&run.lease, knobs.stop.clone(), None);
    if req.stream.unwrap_or(false) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Result<Event, Infallible>>();
        let events = super::until_shutdown(
            &st,
            tokio_stream::wrappers::UnboundedReceiverStream::new(rx),
            super::shutdown_tail(),
        );
        tokio::spawn(async move {
            let send = |c: &Completion| {
                tx.send(Ok(
                    Event::default().data(serde_json::to_string(c).unwrap_or_default())
                ))
                .is_ok()
            };
            let (mut pt, mut ct, mut cached, mut finish) = (run.prompt_tokens, 0, 0, None);
            while let Some(ev) = run.rx.recv().await {
                match ev {
                    GenEvent::Token(t) => {
                        ct += 1;
                        for (_, s) in pipe.push(t) {
                            if !send(&mk(s, None, None)) {
                                return;
                            }
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
                        (finish, pt, ct, cached) = (
                            Some(reason),
                            prompt_tokens,
                            completion_tokens,
                            cached_tokens,
                        );
                        break;
                    }
                    GenEvent::Failed(_) => {
                        let _ = tx.send(Ok(Event::default().data(
                            ApiError::unavailable("generation failed")
                                .body()
                                .to_string(),
                        )));
                        let _ = tx.send(Ok(Event::default().data("[DONE]")));
                        return;
                    }
                }
            }
            for (_, s) in pipe.finish() {
                let _ = send(&mk(s, None, None));
            }
            let reason = generate::finish_reason(finish, pipe.stopped);
            generate::pad(&st, run.started).await;
            let _ = send(&mk(String::new(), Some(reason), None));
            if include_usage {
                let mut c = mk(String::new(), None, Some(usage(&st, pt, ct, cached)));
                c.choices.clear();
                let _ = send(&c);
            }
            let _ = tx.send(Ok(Event::default().data("[DONE]")));
            generate::record(
                &st,
                "completions",
                &req.model,
                request_id,
                principal,
                reason,
                pt,
                ct,
                run.started,
            );
        });
        return Ok(Sse::new(events)
            .keep_alive(KeepAlive::default())
            .into_response());
    }
    let mut text = SensitiveString::default();
    let (mut pt, mut ct, mut cached, mut finish) = (run.prompt_tokens, 0, 0, None);
    while let Some(ev) = run.rx.recv().await {
        match ev {
            GenEvent::Token(t) => {
                ct += 1;
                for (_, s) in pipe.push(t) {
                    text.push_str(&s);
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
                (finish, pt, ct, cached) = (
                    Some(reason),
                    prompt_tokens,
                    completion_tokens,
                    cached_tokens,
                );
                break;
            }
            GenEvent::Failed(_) => return Err(ApiError::unavailable("generation failed; retry")),
        }
    }
    for (_, s) in pipe.finish() {
        text.push_str(&s);
    }
    let reason = generate::finish_reason(finish, pipe.stopped);
    generate::pad(&st, run.started).await;
    generate::record(
        &st,
        "completions",
        &req.model,
        request_id,
        principal,
        reason,
        pt,
        ct,
        run.started,
    );
    Ok(axum::Json(mk(
        text.as_str().to_string(),
        Some(reason),
        Some(usage(&st, pt, ct, cached)),
    ))
    .into_response())
}

fn usage(st: &SharedState, pt: usize, ct: usize, cached: usize) -> Usage {
    let (p, c) = (st.count(pt), st.count(ct));
    Usage {
        prompt_tokens: p,
        completion_tokens: c,
        total_tokens: p + c,
        prompt_tokens_details: PromptTokensDetails {
            cached_tokens: st.count(cached),
        },
    }
}
