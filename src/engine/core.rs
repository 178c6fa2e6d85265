//! The engine loop: the only owner (by `&mut`) of the scheduler, the KV cache (inside the
//! runner) and the per-request output state. One iteration = one scheduler step:
//!
//! ```text
//! intake commands -> drop cancelled requests -> schedule -> runner.execute (copy ops, forward)
//!   -> sample every seq in each logits row's sample_for -> scheduler.update_from_output
//!   -> per sample: detokenize, stop rules, emit Delta / Finished -> finish_seq frees blocks
//! ```
//!
//! Invariants: a request's events go only to its own channel; a finished or cancelled
//! sequence is removed from the scheduler in the same iteration (its blocks free at once);
//! sampling depends only on (seed, step), so batching and preemption never change a token.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc::UnboundedSender;

use super::detok::Detokenizer;
use super::runner::ModelRunner;
use super::types::{EngineEvent, EngineStats, GenerateRequest, TokenLogprob};
use crate::model::tokenizer::Tokenizer;
use crate::sample::{
    finish_on_token, fresh_seed, sample_seed, FinishReason, Sampler, SamplingParams, StopChecker,
    StopStatus, TokenHistory,
};
use crate::sched::{SchedError, Scheduler, SeqGroupRequest, SeqId};

/// A new request as handed to the loop.
pub struct Submission {
    pub req: GenerateRequest,
    pub tx: UnboundedSender<EngineEvent>,
    pub cancelled: Arc<AtomicBool>,
}

struct SampleState {
    seq: SeqId,
    seed: u64,
    history: TokenHistory,
    output: Vec<u32>,
    detok: Detokenizer,
    stop: StopChecker,
    /// Text decoded so far and how many of its bytes were sent.
    text: String,
    sent: usize,
    done: bool,
}

struct RequestState {
    params: SamplingParams,
    samples: Vec<SampleState>,
    tx: UnboundedSender<EngineEvent>,
    cancelled: Arc<AtomicBool>,
    live: usize,
}

pub struct EngineCore {
    sched: Scheduler,
    runner: Box<dyn ModelRunner>,
    sampler: Sampler,
    tokenizer: Arc<Tokenizer>,
    requests: HashMap<u64, RequestState>,
    /// seq id -> (request id, sample index)
    seq_owner: HashMap<SeqId, (u64, usize)>,
    next_request: u64,
}

impl EngineCore {
    pub fn new(sched: Scheduler, runner: Box<dyn ModelRunner>, tokenizer: Arc<Tokenizer>) -> Self {
        let sampler = Sampler::new(runner.vocab_size(), &tokenizer.eos_ids);
        EngineCore {
            sched,
            runner,
            sampler,
            tokenizer,
            requests: HashMap::new(),
            seq_owner: HashMap::new(),
            next_request: 1,
        }
    }

    pub fn has_work(&self) -> bool {
        !self.requests.is_empty()
    }

    pub fn scheduler(&self) -> &Scheduler {
        &self.sched
    }

    pub fn stats(&self) -> EngineStats {
        let kv = self.sched.kv().stats();
        EngineStats {
            num_running: self.sched.num_running(),
            num_waiting: self.sched.num_waiting(),
            kv_cache_usage: self.sched.kv_usage(),
            num_preemptions: self.sched.num_preemptions(),
            prefix_cache_queries: kv.prefix_cache_queries,
            prefix_cache_hits: kv.prefix_cache_hits,
        }
    }

    /// Admits a request into the scheduler; errors go to the request's own channel.
    pub fn add(&mut self, s: Submission) {
        let id = self.next_request;
        self.next_request += 1;
        let r = s.req;
        // A sequence longer than the whole cache could never be (re)admitted.
        let need = r.prompt_token_ids.len() + r.params.max_tokens as usize;
        let cap = self.sched.max_seq_tokens();
        if need > cap {
            let _ = s.tx.send(EngineEvent::Error(format!(
                "prompt ({} tokens) + max_tokens ({}) = {need} exceeds the KV cache capacity of {cap} tokens",
                r.prompt_token_ids.len(),
                r.params.max_tokens
            )));
            return;
        }
        let group = SeqGroupRequest {
            request_id: id,
            prompt: r.prompt_token_ids.clone(),
            n: r.n,
            priority: r.priority,
            arrival: id,
        };
        let seqs = match self.sched.add_group(group) {
            Ok(seqs) => seqs,
            Err(e) => {
                let msg = match e {
                    SchedError::QueueFull { limit } => {
                        format!("the waiting queue is full ({limit} requests)")
                    }
                    other => other.to_string(),
                };
                let _ = s.tx.send(EngineEvent::Error(msg));
                return;
            }
        };
        let base_seed = r.params.seed.unwrap_or_else(fresh_seed);
        let samples = seqs
            .iter()
            .enumerate()
            .map(|(i, &seq)| {
                self.seq_owner.insert(seq, (id, i));
                SampleState {
                    seq,
                    seed: sample_seed(base_seed, i as u32),
                    history: TokenHistory::new(&r.prompt_token_ids),
                    output: Vec::new(),
                    detok: Detokenizer::new(0),
                    stop: StopChecker::new(&r.params.stop),
                    text: String::new(),
                    sent: 0,
                    done: false,
                }
            })
            .collect::<Vec<_>>();
        let live = samples.len();
        self.requests.insert(
            id,
            RequestState {
                params: r.params,
                samples,
                tx: s.tx,
                cancelled: s.cancelled,
                live,
            },
        );
    }

    /// Drops requests whose client went away (stream dropped or receiver closed).
    pub fn reap_cancelled(&mut self) {
        let gone: Vec<u64> = self
            .requests
            .iter()
            .filter(|(_, r)| r.cancelled.load(Ordering::Acquire) || r.tx.is_closed())
            .map(|(&id, _)| id)
            .collect();
        for id in gone {
            self.remove_request(id);
        }
    }

    fn remove_request(&mut self, id: u64) {
        if let Some(r) = self.requests.remove(&id) {
            for s in &r.samples {
                self.seq_owner.remove(&s.seq);
            }
            self.sched.abort_request(id);
        }
    }

    /// Fails every request (engine shutting down after an internal error).
    pub fn fail_all(&mut self, msg: &str) {
        let ids: Vec<u64> = self.requests.keys().copied().collect();
        for id in ids {
            if let Some(r) = self.requests.get(&id) {
                let _ = r.tx.send(EngineEvent::Error(msg.to_string()));
            }
            self.remove_request(id);
        }
    }

    /// One scheduler step. Returns the number of tokens computed (0 = nothing runnable).
    pub fn step(&mut self) -> usize {
        let out = self.sched.schedule();
        if out.is_empty() {
            return 0;
        }
        let logits = self.runner.execute(&out);
        let vocab = self.runner.vocab_size();
        let layout = out.batch_layout();
        let mut sampled: Vec<(SeqId, u32)> = Vec::new();
        let mut events: Vec<(SeqId, u32, Option<TokenLogprob>)> = Vec::new();
        let mut failed: Vec<(u64, String)> = Vec::new();
        for (row, seqs) in layout.sample_for.iter().enumerate() {
            let lg = &logits[row * vocab..(row + 1) * vocab];
            for &seq in seqs {
                let Some(&(rid, si)) = self.seq_owner.get(&seq) else {
                    continue;
                };
                let Some(req) = self.requests.get(&rid) else {
                    continue;
                };
                let s = &req.samples[si];
                match self.sampler.sample(
                    lg,
                    &req.params,
                    &s.history,
                    s.seed,
                    s.output.len() as u32,
                ) {
                    Ok(t) => {
                        sampled.push((seq, t.token));
                        let lp = req.params.logprobs.then_some(TokenLogprob {
                            token: t.token,
                            logprob: t.logprob,
                            top: t.top_logprobs,
                        });
                        events.push((seq, t.token, lp));
                    }
                    Err(e) => failed.push((rid, format!("sampling failed: {e}"))),
                }
            }
        }
        self.sched.update_from_output(&out, &sampled);
        for (seq, token, lp) in events {
            self.emit(seq, token, lp);
        }
        for (rid, msg) in failed {
            if let Some(r) = self.requests.get(&rid) {
                let _ = r.tx.send(EngineEvent::Error(msg));
            }
            self.remove_request(rid);
        }
        out.num_batched_tokens
    }

    /// Appends a sampled token to its sample, streams what can be shown, finishes if due.
    fn emit(&mut self, seq: SeqId, token: u32, lp: Option<TokenLogprob>) {
        let Some(&(rid, si)) = self.seq_owner.get(&seq) else {
            return;
        };
        let Some(req) = self.requests.get_mut(&rid) else {
            return;
        };
        let params = &req.params;
        let s = &mut req.samples[si];
        s.output.push(token);
        s.history.push_output(token);
        let mut finish = finish_on_token(params, &self.tokenizer.eos_ids, token, s.output.len());
        s.text.push_str(&s.detok.step(&self.tokenizer, &s.output));
        let mut show_until = s.text.len();
        match s.stop.check(&s.text) {
            StopStatus::Stopped { truncate_at, .. } => {
                s.text.truncate(truncate_at);
                show_until = truncate_at;
                finish = Some(FinishReason::Stop);
            }
            StopStatus::Continue { stream_until } if finish.is_none() => show_until = stream_until,
            StopStatus::Continue { .. } => {}
        }
        let text = if show_until > s.sent {
            s.text[s.sent..show_until].to_string()
        } else {
            String::new()
        };
        s.sent = s.sent.max(show_until);
        let _ = req.tx.send(EngineEvent::Delta {
            sample: si,
            token_ids: vec![token],
            text,
            logprobs: lp.into_iter().collect(),
        });
        if let Some(reason) = finish {
            s.done = true;
            let _ = req.tx.send(EngineEvent::Finished {
                sample: si,
                reason,
                completion_tokens: s.output.len(),
            });
            req.live -= 1;
            let done_req = req.live == 0;
            self.seq_owner.remove(&seq);
            self.sched.finish_seq(seq);
            if done_req {
                self.requests.remove(&rid);
            }
        }
    }
}
