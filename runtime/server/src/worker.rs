//! The engine sits behind a channel: one OS thread owns a picolm [`Engine`] and loops on
//! `step()`; handlers send it [`Job`]s that carry their own event sender and read tokens back.
//! A job whose receiver is gone (client disconnected, stop string matched) is cancelled at the
//! next token. Jobs beyond the engine's free slots wait in a FIFO inside the worker.

use std::collections::{HashMap, VecDeque};
use std::sync::mpsc as std_mpsc;
use std::time::Instant;

use picolm::engine::{Engine, FinishReason, SeqId, SequenceRequest, StepEvent};
use tokio::sync::{mpsc, oneshot};

use crate::metrics::Metrics;

/// What a generation job reports back.
#[derive(Debug)]
pub enum GenEvent {
    Token(u32),
    Finished {
        reason: FinishReason,
        prompt_tokens: usize,
        completion_tokens: usize,
        cached_tokens: usize,
    },
    Failed(String),
}

/// A generation request with its reply channel.
pub struct Job {
    pub request: SequenceRequest,
    pub events: mpsc::UnboundedSender<GenEvent>,
    pub admitted: Instant,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("prompt_tokens", &self.request.prompt.len())
            .finish_non_exhaustive()
    }
}

/// Messages to the worker thread.
#[derive(Debug)]
pub enum Command {
    Generate(Job),
    Embed {
        tokens: Vec<u32>,
        reply: oneshot::Sender<picolm::Result<Vec<f32>>>,
    },
    /// Finish nothing more: cancel everything and drop the engine (wiping its KV cache).
    Shutdown,
}

/// The operations the worker needs; implemented by picolm's engine and by test doubles.
pub trait BatchEngine: Send + 'static {
    fn add(&mut self, req: SequenceRequest) -> picolm::Result<SeqId>;
    fn cancel(&mut self, seq: SeqId);
    fn step(&mut self) -> picolm::Result<Vec<StepEvent>>;
    fn has_work(&self) -> bool;
    fn free_slots(&self) -> usize;
    fn embed(&mut self, tokens: &[u32]) -> picolm::Result<Vec<f32>>;
}

impl BatchEngine for Engine {
    fn add(&mut self, req: SequenceRequest) -> picolm::Result<SeqId> {
        Engine::add(self, req)
    }
    fn cancel(&mut self, seq: SeqId) {
        Engine::cancel(self, seq)
    }
    fn step(&mut self) -> picolm::Result<Vec<StepEvent>> {
        Engine::step(self)
    }
    fn has_work(&self) -> bool {
        Engine::has_work(self)
    }
    fn free_slots(&self) -> usize {
        Engine::free_slots(self)
    }
    fn embed(&mut self, tokens: &[u32]) -> picolm::Result<Vec<f32>> {
        Engine::embed(self, tokens)
    }
}

/// The async side's handle to a worker thread.
#[derive(Debug, Clone)]
pub struct WorkerHandle {
    tx: std_mpsc::Sender<Command>,
}

impl WorkerHandle {
    /// Starts the worker thread for `engine`.
    pub fn spawn<E: BatchEngine>(engine: E, name: &str, metrics: Metrics) -> std::io::Result<Self> {
        let (tx, rx) = std_mpsc::channel();
        std::thread::Builder::new()
            .name(format!(
                "engine-{}",
                name.chars().take(8).collect::<String>()
            ))
            .spawn(move || run(engine, rx, metrics))?;
        Ok(WorkerHandle { tx })
    }

    /// Submits a generation; events arrive on the returned receiver.
    pub fn generate(&self, request: SequenceRequest) -> Option<mpsc::UnboundedReceiver<GenEvent>> {
        let (events, rx) = mpsc::unbounded_channel();
        self.tx
            .send(Command::Generate(Job {
                request,
                events,
                admitted: Instant::now(),
            }))
            .ok()?;
        Some(rx)
    }

    pub async fn embed(&self, tokens: Vec<u32>) -> Option<picolm::Result<Vec<f32>>> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Command::Embed { tokens, reply }).ok()?;
        rx.await.ok()
    }

    pub fn shutdown(&self) {
        let _ = self.tx.send(Command::Shutdown);
    }
}

fn run<E: BatchEngine>(mut engine: E, rx: std_mpsc::Receiver<Command>, metrics: Metrics) {
    let mut pending: VecDeque<Job> = VecDeque::new();
    let mut running: HashMap<SeqId, mpsc::UnboundedSender<GenEvent>> = HashMap::new();
    let mut first_token: HashMap<SeqId, Instant> = HashMap::new();
    let mut started: HashMap<SeqId, Instant> = HashMap::new();
    loop {
        // Block only when there is nothing to step.
        let idle = !engine.has_work() && pending.is_empty();
        let first = if idle {
            match rx.recv() {
                Ok(c) => Some(c),
                Err(_) => break,
            }
        } else {
            None
        };
        let mut shutdown = false;
        for cmd in first
            .into_iter()
            .chain(std::iter::from_fn(|| rx.try_recv().ok()))
        {
            match cmd {
                Command::Generate(job) => pending.push_back(job),
                Command::Embed { tokens, reply } => {
                    let _ = reply.send(engine.embed(&tokens));
                }
                Command::Shutdown => shutdown = true,
            }
        }
        if shutdown {
            for (seq, tx) in running.drain() {
                engine.cancel(seq);
                let _ = tx.send(GenEvent::Failed("the server is shutting down".into()));
            }
            for job in pending.drain(..) {
                let _ = job
                    .events
                    .send(GenEvent::Failed("the server is shutting down".into()));
            }
            metrics.queue_depth.set(0);
            break;
        }
        // Admit waiting jobs into free slots (dropping those whose client already left).
        while engine.free_slots() > 0 {
            let Some(job) = pending.pop_front() else {
                break;
            };
            if job.events.is_closed() {
                continue;
            }
            match engine.add(job.request) {
                Ok(seq) => {
                    running.insert(seq, job.events);
                    started.insert(seq, job.admitted);
                }
                Err(e) => {
                    let _ = job.events.send(GenEvent::Failed(e.to_string()));
                }
            }
        }
        metrics.queue_depth.set(pending.len() as i64);
        metrics.active_sequences.set(running.len() as i64);
        if !engine.has_work() {
            continue;
        }
        let events = match engine.step() {
            Ok(ev) => ev,
            Err(e) => {
                // A failed step poisons every running sequence; report and cancel them.
                for (seq, tx) in running.drain() {
                    engine.cancel(seq);
                    let _ = tx.send(GenEvent::Failed(e.to_string()));
                }
                continue;
            }
        };
        for ev in events {
            match ev {
                StepEvent::Token { seq, token } => {
                    if let Some(at) = started.get(&seq)
                        && let std::collections::hash_map::Entry::Vacant(e) = first_token.entry(seq)
                    {
                        metrics.ttft.observe(at.elapsed().as_secs_f64());
                        e.insert(Instant::now());
                    }
                    let alive = running
                        .get(&seq)
                        .is_some_and(|tx| tx.send(GenEvent::Token(token)).is_ok());
                    if !alive {
                        engine.cancel(seq);
                    }
                }
                StepEvent::Finished {
                    seq,
                    reason,
                    prompt_tokens,
                    completion_tokens,
                    cached_tokens,
                } => {
                    if let Some(t0) = first_token.remove(&seq) {
                        let s = t0.elapsed().as_secs_f64();
                        if completion_tokens > 1 && s > 0.0 {
                            metrics
                                .decode_tps
                                .observe((completion_tokens - 1) as f64 / s);
                        }
                    }
                    started.remove(&seq);
                    if let Some(tx) = running.remove(&seq) {
                        let _ = tx.send(GenEvent::Finished {
                            reason,
                            prompt_tokens,
                            completion_tokens,
                            cached_tokens,
                        });
                    }
                }
            }
        }
    }
    metrics.active_sequences.set(0);
    drop(engine);
}

#[cfg(test)]
pub(crate) mod fake {
    //! A deterministic stand-in for the engine: each sequence emits `prompt[i % len] + 1`
    //! tokens, one per step, then finishes with Length (or Stop on a stop token).
    use super::*;

    #[derive(Debug, Default)]
    pub struct FakeEngine {
        pub slots: usize,
        #[allow(clippy::type_complexity)]
        seqs: Vec<(SeqId, Vec<u32>, usize, usize, Vec<u32>, bool)>,
        next: SeqId,
        cancelled: Vec<SeqId>,
    }

    impl FakeEngine {
        pub fn new(slots: usize) -> Self {
            FakeEngine {
                slots,
                ..Default::default()
            }
        }
    }

    impl BatchEngine for FakeEngine {
        fn add(&mut self, req: SequenceRequest) -> picolm::Result<SeqId> {
            if self.seqs.len() >= self.slots {
                return Err(picolm::Error::Request("no free slot".into()));
            }
            self.next += 1;
            self.seqs.push((
                self.next,
                req.prompt,
                req.max_tokens,
                0,
                req.stop_tokens,
                false,
            ));
            Ok(self.next)
        }
        fn cancel(&mut self, seq: SeqId) {
            self.cancelled.push(seq);
        }
        fn step(&mut self) -> picolm::Result<Vec<StepEvent>> {
            let mut out = Vec::new();
            let cancelled = std::mem::take(&mut self.cancelled);
            self.seqs.retain(|(seq, p, _, done, _, _)| {
                if cancelled.contains(seq) {
                    out.push(StepEvent::Finished {
                        seq: *seq,
                        reason: FinishReason::Cancelled,
                        prompt_tokens: p.len(),
                        completion_tokens: *done,
                        cached_tokens: 0,
                    });
                    false
                } else {
                    true
                }
            });
            for (seq, p, max, done, stops, fin) in &mut self.seqs {
                let tok = p[*done % p.len()] + 1;
                if stops.contains(&tok) {
                    *fin = true;
                    out.push(StepEvent::Finished {
                        seq: *seq,
                        reason: FinishReason::Stop,
                        prompt_tokens: p.len(),
                        completion_tokens: *done,
                        cached_tokens: 0,
                    });
                    continue;
                }
                *done += 1;
                out.push(StepEvent::Token {
                    seq: *seq,
                    token: tok,
                });
                if *done >= *max {
                    *fin = true;
                    out.push(StepEvent::Finished {
                        seq: *seq,
                        reason: FinishReason::Length,
                        prompt_tokens: p.len(),
                        completion_tokens: *done,
                        cached_tokens: 0,
                    });
                }
            }
            self.seqs.retain(|s| !s.5);
            Ok(out)
        }
        fn has_work(&self) -> bool {
            !self.seqs.is_empty() || !self.cancelled.is_empty()
        }
        fn free_slots(&self) -> usize {
            self.slots.saturating_sub(self.seqs.len())
        }
        fn embed(&mut self, tokens: &[u32]) -> picolm::Result<Vec<f32>> {
            let n = (tokens.len() as f32).sqrt();
            Ok(tokens.iter().map(|_| 1.0 / n).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeEngine;
    use super::*;
    use picolm::SamplingParams;

    fn req(prompt: Vec<u32>, max: usize) -> SequenceRequest {
        SequenceRequest {
            prompt,
            params: SamplingParams::default(),
            max_tokens: max,
            ignore_eos: false,
            stop_tokens: vec![],
            processor: None,
        }
    }

    async fn collect(
        mut rx: mpsc::UnboundedReceiver<GenEvent>,
    ) -> (Vec<u32>, Option<FinishReason>) {
        let mut toks = Vec::new();
        while let Some(e) = rx.recv().await {
            match e {
                GenEvent::Token(t) => toks.push(t),
                GenEvent::Finished { reason, .. } => return (toks, Some(reason)),
                GenEvent::Failed(_) => return (toks, None),
            }
        }
        (toks, None)
    }

    #[tokio::test]
    async fn queues_beyond_slots_and_keeps_streams_apart() {
        let w = WorkerHandle::spawn(FakeEngine::new(2), "t", Metrics::new()).expect("spawn");
        let rxs: Vec<_> = (0..6u32)
            .map(|i| w.generate(req(vec![i * 100], 5)).expect("send"))
            .collect();
        for (i, rx) in rxs.into_iter().enumerate() {
            let (toks, reason) = collect(rx).await;
            assert_eq!(toks, vec![i as u32 * 100 + 1; 5]);
            assert!(matches!(reason, Some(FinishReason::Length)));
        }
        let e = w.embed(vec![1, 2, 3, 4]).await.expect("reply").expect("ok");
        assert_eq!(e.len(), 4);
        w.shutdown();
    }

    #[tokio::test]
    async fn dropped_receiver_cancels() {
        let w = WorkerHandle::spawn(FakeEngine::new(1), "t", Metrics::new()).expect("spawn");
        let rx = w.generate(req(vec![1], 1_000_000)).expect("send");
        drop(rx);
        // The slot frees up only if the first sequence was cancelled.
        let (toks, reason) = collect(w.generate(req(vec![7], 3)).expect("send")).await;
        assert_eq!(toks, vec![8, 8, 8]);
        assert!(matches!(reason, Some(FinishReason::Length)));
    }
}
