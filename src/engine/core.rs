//! The engine loop: the only owner (by `&mut`) of the scheduler, the KV cache (inside the
//! runner) and the per-request output state. One iteration = one scheduler step:
//!
//! ```text
//! intake commands -> drop cancelled requests -> deadlines, load level (core/lifecycle.rs)
//!   -> prompt-token cap (--max-step-ms: step_time.rs) -> schedule -> runner.execute
//!      (guided samples' grammar masks meanwhile: guide.rs; the step's time feeds the cap)
//!   -> per seq in each logits row's sample_for: forced token (thinking budget) or a draw
//!      (s1 "Wait" filter; masked by its grammar, which the token then advances)
//!   -> scheduler.update_from_output
//!   -> per sample: detokenize, split reasoning/content, stop rules, Delta / Finished,
//!      budget controller (aggregated requests) -> Launch wave / Stop sample / Finish + Report
//! ```
//!
//! Invariants: a request's events go only to its own channel; a finished, stopped or
//! cancelled sequence is removed from the scheduler in the same iteration (its blocks free at
//! once); sampling depends only on (seed, sample index, step), so batching, preemption and
//! waves never change a token. Each wave of an aggregated request is its own scheduler group
//! (ids from the same counter as requests).

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc::UnboundedSender;

use std::collections::VecDeque;

use super::probes::{argmax, yes_share, Probe, ProbePrompts};
use super::reqstate::{RequestState, SampleState};
use super::runner::{step_batch, ModelRunner};
use super::step_time::StepClock;
use super::types::{EngineEvent, EngineStats, GenerateRequest, TokenLogprob};
use crate::budget::{Action, Controller, EarlyStop, ProbeKind, ProbeResult, Tok};
use crate::model::tokenizer::Tokenizer;
use crate::reasoning::ReasoningFormat;
use crate::sample::{fresh_seed, sample_seed, FinishReason, SampledToken, Sampler};
use crate::sched::{SchedError, Scheduler, SeqGroupRequest, SeqId};

mod emit;
mod lifecycle;
mod probing;

/// Rows sampled in parallel from this many up (below, the engine thread samples them
/// itself: a parallel region costs about what sampling one row does, ~30 us).
const PARALLEL_SAMPLING_ROWS: usize = 4;

/// One logits row to sample: its sample and the token forced on it, if any.
struct Job {
    row: usize,
    seq: SeqId,
    rid: u64,
    si: usize,
    forced: Option<u32>,
}

thread_local! {
    /// A sampler per worker thread (its scratch: 12 bytes per vocabulary entry), made from
    /// the engine's on first use and kept.
    static THREAD_SAMPLER: std::cell::RefCell<Option<Sampler>> =
        const { std::cell::RefCell::new(None) };
}

/// Runs `f` on this thread's sampler (configured as `proto`).
fn with_thread_sampler<R>(proto: &Sampler, f: impl FnOnce(&mut Sampler) -> R) -> R {
    THREAD_SAMPLER.with(|cell| {
        let mut slot = cell.borrow_mut();
        let fits = slot.as_ref().is_some_and(|s| {
            s.vocab_size() == proto.vocab_size() && s.eos_token_ids() == proto.eos_token_ids()
        });
        if !fits {
            *slot = None;
        }
        f(slot.get_or_insert_with(|| Sampler::new(proto.vocab_size(), proto.eos_token_ids())))
    })
}

/// A new request as handed to the loop.
pub struct Submission {
    pub req: GenerateRequest,
    pub tx: UnboundedSender<EngineEvent>,
    pub cancelled: Arc<AtomicBool>,
}

pub struct EngineCore {
    sched: Scheduler,
    runner: Box<dyn ModelRunner>,
    sampler: Sampler,
    tokenizer: Arc<Tokenizer>,
    reasoning: Option<ReasoningFormat>,
    requests: HashMap<u64, RequestState>,
    /// seq id -> (request id, sample index)
    seq_owner: HashMap<SeqId, (u64, usize)>,
    next_request: u64,
    /// The runner's logits buffer, kept between steps (`[rows, vocab]`: 6.3 MB at 32 rows
    /// of a 49,152-token vocabulary; bounded by the scheduler's `max_num_seqs` rows).
    logits: Vec<f32>,
    /// Probes in flight, by their sequence id (each a scheduler sequence, so bounded by
    /// `max_num_seqs`).
    probes: HashMap<SeqId, Probe>,
    prompts: ProbePrompts,
    /// `--max-step-ms`: caps the prompt tokens of steps that also decode.
    clock: Option<StepClock>,
}

impl EngineCore {
    pub fn new(sched: Scheduler, runner: Box<dyn ModelRunner>, tokenizer: Arc<Tokenizer>) -> Self {
        let sampler = Sampler::new(runner.vocab_size(), &tokenizer.eos_ids);
        EngineCore {
            sched,
            runner,
            sampler,
            tokenizer,
            reasoning: None,
            requests: HashMap::new(),
            seq_owner: HashMap::new(),
            next_request: 1,
            logits: Vec::new(),
            probes: HashMap::new(),
            prompts: ProbePrompts::default(),
            clock: None,
        }
    }

    /// Bounds the time of steps that prefill while others decode (`step_time.rs`; 0: off).
    pub fn with_step_target(mut self, max_step_ms: u32) -> Self {
        self.clock = StepClock::new(max_step_ms);
        self
    }

    /// The model family's probe prompts (certaindex and verification probes).
    pub fn with_probe_prompts(mut self, prompts: ProbePrompts) -> Self {
        self.prompts = prompts;
        self
    }

    /// The model's reasoning format (splits reasoning from content, enables thinking budgets).
    pub fn with_reasoning(mut self, fmt: Option<ReasoningFormat>) -> Self {
        self.reasoning = fmt;
        self
    }

    pub fn has_work(&self) -> bool {
        !self.requests.is_empty()
    }

    pub fn scheduler(&self) -> &Scheduler {
        &self.sched
    }

    pub fn stats(&self) -> EngineStats {
        let kv = self.sched.kv().stats();
        let running = self.sched.running_request_ids();
        let requests_running = self
            .requests
            .values()
            .filter(|r| r.sched_ids.iter().any(|id| running.contains(id)))
            .count();
        EngineStats {
            num_running: self.sched.num_running(),
            num_waiting: self.sched.num_waiting(),
            requests_running,
            requests_waiting: self.requests.len() - requests_running,
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
        let now = Instant::now();
        let deadline = r.ttc.as_ref().and_then(|p| p.deadline).map(|d| now + d);
        let mut ctrl = r.ttc.map(Controller::new);
        let first = match ctrl.as_mut() {
            Some(c) => c.start(),
            None => vec![Action::Launch {
                first: 0,
                count: r.n,
                thinking: None,
                urgent: false,
            }],
        };
        self.requests.insert(
            id,
            RequestState {
                base_seed: r.params.seed.unwrap_or_else(fresh_seed),
                params: r.params,
                think: r.think,
                starts_in_thinking: r.starts_in_thinking,
                prompt: r.prompt_token_ids,
                priority: r.priority,
                samples: Vec::new(),
                sched_ids: Vec::new(),
                tx: s.tx,
                cancelled: s.cancelled,
                live: 0,
                ctrl,
                admitted: now,
                deadline,
                progress: None,
                guide: r.guide,
            },
        );
        self.apply(id, first);
    }

    /// Starts samples `first..first + count` of request `rid` as one scheduler group
    /// (`thinking`: their thinking budget, when not the request's; `urgent`: a later wave
    /// that no new request may pass, its deadline being near).
    fn launch(
        &mut self,
        rid: u64,
        first: usize,
        count: usize,
        thinking: Option<u32>,
        urgent: bool,
    ) -> Result<(), String> {
        let sid = self.next_request;
        self.next_request += 1;
        let Some(req) = self.requests.get_mut(&rid) else {
            return Ok(());
        };
        // A later wave keeps its request's arrival and is ranked by the certainty the
        // request has reached (the leading answer's share): see the sched module header.
        let continuation = (first > 0).then(|| {
            let share = req.ctrl.as_ref().map_or(0.0, |c| c.progress().leader_share);
            ((1.0 - share.clamp(0.0, 1.0)) * 1000.0).round() as u32
        });
        let arrival = req.sched_ids.first().copied().unwrap_or(sid);
        let group = SeqGroupRequest {
            request_id: sid,
            prompt: req.prompt.clone(),
            n: count,
            priority: req.priority,
            arrival,
            continuation,
            urgent,
        };
        let seqs = self.sched.add_group(group).map_err(|e| match e {
            SchedError::QueueFull { limit } => {
                format!("the waiting queue is full ({limit} requests)")
            }
            other => other.to_string(),
        })?;
        req.sched_ids.push(sid);
        let mut limits = req.think;
        if let Some(t) = thinking {
            limits.budget = Some(t);
            limits.min_thinking = limits.min_thinking.min(t);
        }
        for (k, &seq) in seqs.iter().enumerate() {
            let i = first + k;
            debug_assert_eq!(i, req.samples.len());
            self.seq_owner.insert(seq, (rid, i));
            let mut sample = SampleState::new(
                seq,
                sample_seed(req.base_seed, i as u32),
                &req.prompt,
                &req.params,
                self.reasoning.as_ref(),
                req.starts_in_thinking,
                limits,
            );
            sample.guide = req.guide.clone();
            req.samples.push(sample);
        }
        req.live += seqs.len();
        Ok(())
    }

    /// Carries out the controller's (or a plain request's) actions, and those they lead to
    /// (a probe that cannot start is reported back at once).
    fn apply(&mut self, rid: u64, actions: Vec<Action>) {
        let changes = actions
            .iter()
            .any(|a| matches!(a, Action::Launch { .. } | Action::Stop { .. }));
        let mut queue: VecDeque<Action> = actions.into();
        while let Some(a) = queue.pop_front() {
            match a {
                Action::Launch {
                    first,
                    count,
                    thinking,
                    urgent,
                } => {
                    if let Err(msg) = self.launch(rid, first, count, thinking, urgent) {
                        self.fail(rid, msg);
                        return;
                    }
                }
                Action::Stop { sample, reason } => {
                    self.cancel_probes(rid, Some(sample));
                    self.stop_sample(rid, sample, reason)
                }
                Action::Probe { sample, kind } => {
                    if let Err(more) = self.start_probe(rid, sample, kind) {
                        queue.extend(more);
                    }
                }
                Action::EndThinking { sample } => {
                    // Its answer probe (if one is out) has nothing left to decide.
                    self.cancel_probes(rid, Some(sample));
                    let fmt = self.reasoning.as_ref();
                    if let Some(s) = self
                        .requests
                        .get_mut(&rid)
                        .and_then(|r| r.samples.get_mut(sample))
                    {
                        s.think.end_now(fmt);
                    }
                }
                Action::Finish => {
                    self.cancel_probes(rid, None);
                    if let Some(req) = self.requests.get(&rid) {
                        if let Some(c) = &req.ctrl {
                            let _ = req.tx.send(EngineEvent::Report(Box::new(c.report())));
                        }
                    }
                }
            }
        }
        if changes {
            self.send_progress(rid);
        }
        if self.requests.get(&rid).is_some_and(RequestState::complete) {
            self.remove_request(rid);
        }
    }

    /// Sends request `rid`'s progress if it changed since the last one (aggregated requests
    /// that have not finished).
    fn send_progress(&mut self, rid: u64) {
        let Some(req) = self.requests.get_mut(&rid) else {
            return;
        };
        let Some(c) = req.ctrl.as_ref().filter(|c| !c.is_finished()) else {
            return;
        };
        let p = c.progress();
        if req.progress.as_ref() != Some(&p) {
            req.progress = Some(p.clone());
            let _ = req.tx.send(EngineEvent::Progress(p));
        }
    }

    /// Ends a live sample at the controller's request; its blocks are freed at once.
    fn stop_sample(&mut self, rid: u64, si: usize, reason: EarlyStop) {
        let Some(req) = self.requests.get_mut(&rid) else {
            return;
        };
        let Some(s) = req.samples.get_mut(si).filter(|s| !s.done) else {
            return;
        };
        s.done = true;
        let flush = s.stop_early(si);
        let _ = req.tx.send(flush);
        let _ = req
            .tx
            .send(s.finished_event(si, FinishReason::Abort, Some(reason)));
        req.live -= 1;
        if let Some(seq) = s.seq.take() {
            self.seq_owner.remove(&seq);
            self.sched.finish_seq(seq);
        }
    }

    /// One scheduler step. Returns the number of tokens computed (0 = nothing runnable).
    pub fn step(&mut self) -> usize {
        self.reap_deadlines();
        self.observe_load();
        if let Some(c) = &self.clock {
            let cap = c.cap(self.sched.num_running());
            self.sched.set_prefill_cap(cap);
        }
        let out = self.sched.schedule();
        // Probes preempted for blocks are gone: their controllers hear it.
        for &seq in &out.preempted {
            if self.probes.contains_key(&seq) {
                self.end_probe(seq, ProbeResult::Dropped);
            }
        }
        if out.is_empty() {
            return 0;
        }
        for row in &out.seqs {
            if let Some(p) = self.probes.get_mut(&row.seq_id) {
                p.tokens += row.token_ids.len();
            }
        }
        let mut logits = std::mem::take(&mut self.logits);
        let (batch, sample_for) = step_batch(&out);
        // Guided samples' masks are computed on a helper thread during the forward pass.
        let guided = super::guide::guided_samples(&self.requests, &self.seq_owner, &sample_for);
        let started = Instant::now();
        if guided.is_empty() {
            self.runner.execute(&out.copy_ops, &batch, &mut logits);
        } else {
            let (requests, runner) = (&mut self.requests, &mut self.runner);
            std::thread::scope(|sc| {
                let masks = sc.spawn(|| super::guide::compute_masks(requests, &guided));
                runner.execute(&out.copy_ops, &batch, &mut logits);
                let _ = masks.join();
            });
        }
        if let Some(c) = &mut self.clock {
            c.observe(out.num_batched_tokens, started.elapsed());
        }
        let vocab = self.runner.vocab_size();
        let mut sampled: Vec<(SeqId, u32)> = Vec::new();
        let mut events: Vec<(SeqId, u32, Tok, Option<TokenLogprob>)> = Vec::new();
        let mut failed: Vec<(u64, String)> = Vec::new();
        let mut probe_results: Vec<(SeqId, ProbeResult)> = Vec::new();
        let fmt = self.reasoning.as_ref();
        // 1. Which sample each logits row feeds, and the tokens the thinking budget forces
        //    (the think state changes here, in row order). Probe rows are read greedily.
        let mut jobs: Vec<Job> = Vec::new();
        for (row, seqs) in sample_for.iter().enumerate() {
            for &seq in seqs {
                let lg = &logits[row * vocab..(row + 1) * vocab];
                if let Some(p) = self.probes.get(&seq) {
                    match p.kind {
                        ProbeKind::Answer => sampled.push((seq, argmax(lg))),
                        ProbeKind::Verify => {
                            let score = yes_share(lg, &self.prompts.yes, &self.prompts.no);
                            probe_results.push((seq, ProbeResult::Score(score)));
                        }
                    }
                    continue;
                }
                let Some(&(rid, si)) = self.seq_owner.get(&seq) else {
                    continue;
                };
                let Some(req) = self.requests.get_mut(&rid) else {
                    continue;
                };
                let s = &mut req.samples[si];
                let forced = s.think.forced_token(fmt, &s.limits);
                jobs.push(Job {
                    row,
                    seq,
                    rid,
                    si,
                    forced,
                });
            }
        }
        // Verification probes are done after their one row: freed before the update, their
        // scores told after this step's tokens.
        let mut scored: Vec<(Probe, ProbeResult)> = Vec::new();
        for (seq, r) in probe_results {
            if let Some(p) = self.probes.remove(&seq) {
                self.sched.finish_seq(seq);
                scored.push((p, r));
            }
        }
        // 2. Draw (or score) every row: a pure function of the logits, the parameters, the
        //    history and (seed, step), so the rows are independent and run in parallel.
        let requests = &self.requests;
        let draw = |sampler: &mut Sampler, j: &Job| {
            let req = &requests[&j.rid];
            let s = &req.samples[j.si];
            let lg = &logits[j.row * vocab..(j.row + 1) * vocab];
            match j.forced {
                Some(t) => sampler.score(lg, &req.params, &s.history, t),
                None => sampler.sample_guided(
                    lg,
                    &req.params,
                    &s.history,
                    s.seed,
                    s.output.len() as u32,
                    s.mask.as_ref(),
                ),
            }
        };
        let draws: Vec<_> = if jobs.len() >= PARALLEL_SAMPLING_ROWS {
            use rayon::prelude::*;
            let proto = &self.sampler;
            jobs.par_iter()
                .map(|j| with_thread_sampler(proto, |sm| draw(sm, j)))
                .collect()
        } else {
            jobs.iter().map(|j| draw(&mut self.sampler, j)).collect()
        };
        // 3. s1 "Wait" forcing may replace a freely drawn token (rare: rescored here).
        for (j, drawn) in jobs.iter().zip(draws) {
            let (seq, rid) = (j.seq, j.rid);
            let Some(req) = self.requests.get_mut(&rid) else {
                continue;
            };
            let s = &mut req.samples[j.si];
            let thinking = s.think.in_thinking();
            let mut forced = j.forced.is_some();
            let had_mask = s.mask.take().is_some();
            if let Some(e) = s.mask_err.take() {
                failed.push((rid, format!("constrained decoding failed: {e}")));
                continue;
            }
            let drawn = match (j.forced, drawn) {
                (None, Ok(t)) => {
                    let eos = self.sampler.eos_token_ids();
                    let f = s.think.filter(t.token, fmt, &s.limits, eos);
                    if f == t.token {
                        Ok(t)
                    } else {
                        forced = true;
                        let lg = &logits[j.row * vocab..(j.row + 1) * vocab];
                        self.sampler.score(lg, &req.params, &s.history, f)
                    }
                }
                (_, d) => d,
            };
            match drawn {
                Ok(SampledToken {
                    token,
                    logprob,
                    top_logprobs,
                }) => {
                    if had_mask && !self.sampler.eos_token_ids().contains(&token) {
                        if let Some(Err(e)) = s.guide.as_mut().map(|g| g.advance(token)) {
                            failed.push((rid, format!("constrained decoding failed: {e}")));
                            continue;
                        }
                    }
                    sampled.push((seq, token));
                    let lp = req.params.logprobs.then_some(TokenLogprob {
                        token,
                        logprob,
                        top: top_logprobs,
                    });
                    let tok = Tok {
                        logprob,
                        forced,
                        thinking,
                    };
                    events.push((seq, token, tok, lp));
                }
                Err(e) => failed.push((rid, format!("sampling failed: {e}"))),
            }
        }
        self.sched.update_from_output(&out, &sampled);
        let done_probes = self.advance_answer_probes(&sampled);
        // The samples' tokens first, then what the probes decided: a certaindex exit then
        // applies from the next step on, after the tokens the sample has seen.
        for (seq, token, tok, lp) in events {
            self.emit(seq, token, tok, lp);
        }
        for (seq, r) in done_probes {
            self.end_probe(seq, r);
        }
        for (p, r) in scored {
            self.tell_probe(p, r);
        }
        for (rid, msg) in failed {
            self.fail(rid, msg);
        }
        self.logits = logits;
        out.num_batched_tokens
    }
}
