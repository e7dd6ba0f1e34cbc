//! Token sampling: penalties, top-k, top-p, min-p, temperature, seeded draws.
//!
//! The chain runs in llama.cpp's default order — penalties, top-k, top-p, min-p, temperature,
//! then a draw — and a temperature of zero (or below) is greedy. A fixed seed gives the same
//! tokens for the same logits. Buffers are reused, so sampling does not allocate per token.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::error::{Error, Result};

/// Per-sequence sampling parameters (OpenAI and llama.cpp names).
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    /// 0 or below: greedy.
    pub temperature: f32,
    /// 0: disabled.
    pub top_k: usize,
    /// 1.0: disabled.
    pub top_p: f32,
    /// 0.0: disabled.
    pub min_p: f32,
    /// 1.0: disabled. Divides positive logits and multiplies negative ones of recent tokens.
    pub repeat_penalty: f32,
    /// How many recent tokens the penalties look at.
    pub penalty_last_n: usize,
    /// Subtracted once per occurrence (OpenAI `frequency_penalty`).
    pub frequency_penalty: f32,
    /// Subtracted once if present (OpenAI `presence_penalty`).
    pub presence_penalty: f32,
    /// `None`: seeded from the OS.
    pub seed: Option<u64>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            penalty_last_n: 64,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            seed: None,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding with no penalties.
    pub fn greedy() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            ..Default::default()
        }
    }

    /// Reject values that would make sampling meaningless, naming the parameter.
    pub fn validate(&self) -> Result<()> {
        let bad = |name: &str, why: &str| Err(Error::Request(format!("{name}: {why}")));
        if !self.temperature.is_finite() || self.temperature > 100.0 {
            return bad("temperature", "must be a finite number ≤ 100");
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad("top_p", "must be in (0, 1]");
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad("min_p", "must be in [0, 1]");
        }
        if !(self.repeat_penalty.is_finite() && self.repeat_penalty > 0.0) {
            return bad("repeat_penalty", "must be positive");
        }
        if !(-2.0..=2.0).contains(&self.frequency_penalty) {
            return bad("frequency_penalty", "must be in [-2, 2]");
        }
        if !(-2.0..=2.0).contains(&self.presence_penalty) {
            return bad("presence_penalty", "must be in [-2, 2]");
        }
        Ok(())
    }
}

/// A sampler for one sequence.
#[derive(Debug)]
pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
    /// Ring of the last `penalty_last_n` tokens.
    history: Vec<u32>,
    history_pos: usize,
    cand: Vec<(u32, f32)>,
    counts: Vec<u32>,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Self {
        let rng = match params.seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_os_rng(),
        };
        let n = params.penalty_last_n;
        Sampler {
            params,
            rng,
            history: Vec::with_capacity(n),
            history_pos: 0,
            cand: Vec::new(),
            counts: Vec::with_capacity(n),
        }
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Record a token of the context (prompt or generated) for the penalties.
    pub fn accept(&mut self, token: u32) {
        let n = self.params.penalty_last_n;
        if n == 0 {
            return;
        }
        if self.history.len() < n {
            self.history.push(token);
        } else {
            self.history[self.history_pos] = token;
            self.history_pos = (self.history_pos + 1) % n;
        }
    }

    fn penalties_active(&self) -> bool {
        let p = &self.params;
        !self.history.is_empty()
            && (p.repeat_penalty != 1.0 || p.frequency_penalty != 0.0 || p.presence_penalty != 0.0)
    }

    fn apply_penalties(&mut self, logits: &mut [f32]) {
        if !self.penalties_active() {
            return;
        }
        let p = &self.params;
        self.counts.clear();
        self.counts.extend_from_slice(&self.history);
        self.counts.sort_unstable();
        let mut i = 0;
        while i < self.counts.len() {
            let tok = self.counts[i];
            let mut j = i;
            while j < self.counts.len() && self.counts[j] == tok {
                j += 1;
            }
            let count = (j - i) as f32;
            if let Some(l) = logits.get_mut(tok as usize) {
                if *l <= 0.0 {
                    *l *= p.repeat_penalty;
                } else {
                    *l /= p.repeat_penalty;
                }
                *l -= count * p.frequency_penalty + p.presence_penalty;
            }
            i = j;
        }
    }

    /// Pick the next token from `logits` (modified in place by the penalties).
    pub fn sample(&mut self, logits: &mut [f32]) -> u32 {
        self.apply_penalties(logits);
        let p = self.params.clone();
        if p.temperature <= 0.0 {
            return argmax(logits);
        }
        let cand = &mut self.cand;
        cand.clear();
        cand.extend(logits.iter().enumerate().map(|(i, &l)| (i as u32, l)));
        // Sorted by logit, descending (ties by id for determinism).
        let by_logit = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if p.top_k > 0 && p.top_k < cand.len() {
            cand.select_nth_unstable_by(p.top_k - 1, by_logit);
            cand.truncate(p.top_k);
        }
        cand.sort_unstable_by(by_logit);
        // Softmax at temperature 1 for the top-p / min-p cuts, as llama.cpp does.
        let max = cand[0].1;
        let probs_sum: f64 = cand.iter().map(|c| f64::from((c.1 - max).exp())).sum();
        if p.top_p < 1.0 {
            let mut cum = 0f64;
            let mut keep = cand.len();
            for (i, c) in cand.iter().enumerate() {
                cum += f64::from((c.1 - max).exp()) / probs_sum;
                if cum >= f64::from(p.top_p) {
                    keep = i + 1;
                    break;
                }
            }
            cand.truncate(keep.max(1));
        }
        if p.min_p > 0.0 {
            // p_i >= min_p * p_max  <=>  l_i >= l_max + ln(min_p)
            let cut = max + p.min_p.ln();
            let keep = cand.iter().take_while(|c| c.1 >= cut).count();
            cand.truncate(keep.max(1));
        }
        let inv_t = 1.0 / p.temperature;
        let mut total = 0f64;
        for c in cand.iter_mut() {
            c.1 = ((c.1 - max) * inv_t).exp();
            total += f64::from(c.1);
        }
        let mut r = self.rng.random::<f64>() * total;
        for c in cand.iter() {
            r -= f64::from(c.1);
            if r <= 0.0 {
                return c.0;
            }
        }
        cand[cand.len() - 1].0
    }
}

/// Index of the largest logit (the first one on ties).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logits() -> Vec<f32> {
        (0..100).map(|i| ((i * 37) % 100) as f32 / 10.0).collect()
    }

    #[test]
    fn greedy_is_argmax() {
        let mut s = Sampler::new(SamplingParams::greedy());
        let mut l = logits();
        let best = argmax(&l);
        assert_eq!(s.sample(&mut l), best);
        assert_eq!(l[best as usize], 9.9);
    }

    #[test]
    fn same_seed_same_tokens_different_seed_differs() {
        let run = |seed| {
            let mut s = Sampler::new(SamplingParams {
                seed: Some(seed),
                temperature: 1.5,
                top_k: 0,
                top_p: 1.0,
                min_p: 0.0,
                ..Default::default()
            });
            (0..64).map(|_| s.sample(&mut logits())).collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn top_k_one_is_greedy_and_top_k_bounds_choices() {
        let mut s = Sampler::new(SamplingParams {
            seed: Some(1),
            temperature: 5.0,
            top_k: 1,
            ..Default::default()
        });
        for _ in 0..20 {
            assert_eq!(s.sample(&mut logits()), argmax(&logits()));
        }
        let mut s = Sampler::new(SamplingParams {
            seed: Some(1),
            temperature: 50.0,
            top_k: 3,
            top_p: 1.0,
            min_p: 0.0,
            ..Default::default()
        });
        let mut sorted: Vec<_> = logits()
            .iter()
            .enumerate()
            .map(|(i, &l)| (l, i as u32))
            .collect();
        sorted.sort_by(|a, b| b.0.total_cmp(&a.0));
        let top3: Vec<u32> = sorted[..3].iter().map(|x| x.1).collect();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..300 {
            let t = s.sample(&mut logits());
            assert!(top3.contains(&t));
            seen.insert(t);
        }
        assert_eq!(seen.len(), 3, "a high temperature should reach all three");
    }

    #[test]
    fn min_p_and_top_p_cut_the_tail() {
        // One dominant token: min_p 0.5 leaves only it.
        let mut l = vec![0.0f32; 50];
        l[10] = 10.0;
        let mut s = Sampler::new(SamplingParams {
            seed: Some(3),
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.5,
            ..Default::default()
        });
        for _ in 0..50 {
            assert_eq!(s.sample(&mut l.clone()), 10);
        }
        let mut s = Sampler::new(SamplingParams {
            seed: Some(3),
            temperature: 1.0,
            top_k: 0,
            top_p: 0.5,
            min_p: 0.0,
            ..Default::default()
        });
        for _ in 0..50 {
            assert_eq!(s.sample(&mut l.clone()), 10);
        }
    }

    #[test]
    fn penalties_follow_llama_cpp() {
        let mut s = Sampler::new(SamplingParams {
            repeat_penalty: 2.0,
            frequency_penalty: 0.5,
            presence_penalty: 0.25,
            ..SamplingParams::greedy()
        });
        s.accept(1);
        s.accept(1);
        s.accept(2);
        let mut l = vec![4.0, 4.0, -4.0, 4.0];
        s.sample(&mut l);
        assert_eq!(
            l,
            vec![
                4.0,
                4.0 / 2.0 - 2.0 * 0.5 - 0.25,
                -4.0 * 2.0 - 0.5 - 0.25,
                4.0
            ]
        );
    }

    #[test]
    fn history_is_a_window() {
        let mut s = Sampler::new(SamplingParams {
            penalty_last_n: 2,
            repeat_penalty: 2.0,
            ..SamplingParams::greedy()
        });
        s.accept(0);
        s.accept(1);
        s.accept(2); // pushes 0 out
        let mut l = vec![1.0, 1.0, 1.0];
        s.sample(&mut l);
        assert_eq!(l, vec![1.0, 0.5, 0.5]);
    }

    #[test]
    fn validation_names_the_parameter() {
        let e = SamplingParams {
            top_p: 0.0,
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("top_p"));
        let e = SamplingParams {
            temperature: f32::NAN,
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("temperature"));
        assert!(SamplingParams::default().validate().is_ok());
    }
}
