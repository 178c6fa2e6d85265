//! The one consumer of a request's engine events: `Fold` checks them (sample indices in
//! range, every sample finished, an aggregated request's report names a sample it has),
//! keeps the per-sample output the response needs and the token totals, and says what each
//! event changes for the client (`Step`). JSON responses (`response::collect`) read only the
//! `Outcome`; SSE (`stream.rs`) renders each `Step` as it comes, then the `Outcome`.
//!
//! ```text
//! EngineEvent            not aggregated                      aggregated (`ttc`)
//! Delta{sample}      ->  Step::Delta (stream) / kept (JSON)   kept until the report
//! Finished{sample}   ->  Step::Finish                          kept
//! Progress           ->  -                                     Step::Progress
//! Report             ->  internal error                        Step::Winner(choice) | NoAnswer
//! end of stream      ->  Outcome (every sample finished)       Outcome (report seen)
//! ```
//!
//! Memory: kept output is the text, reasoning and logprobs of each sample, bounded by the
//! request's `max_tokens` per sample; a streamed, non-aggregated request keeps nothing.

use super::body::Usage;
use super::error::ApiError;
use crate::budget::{TtcProgress, TtcReport};
use crate::engine::{EngineEvent, TokenLogprob};
use crate::sample::FinishReason;

/// One sample's output.
#[derive(Debug, Default, Clone)]
pub struct Choice {
    pub text: String,
    pub reasoning: String,
    pub logprobs: Vec<TokenLogprob>,
    pub finish: Option<FinishReason>,
}

impl Choice {
    /// OpenAI's finish_reason; a sample the controller stopped reads as `length` (its text
    /// is cut short; the `ttc` report says why).
    pub fn finish_reason(&self) -> &'static str {
        match self.finish {
            Some(FinishReason::Abort) => "length",
            Some(r) => r.as_str(),
            None => "length",
        }
    }
}

/// What one engine event changes for the client.
#[derive(Debug)]
pub enum Step {
    /// New output of choice `index` (streamed, non-aggregated requests only).
    Delta {
        index: usize,
        text: String,
        reasoning: String,
        logprobs: Vec<TokenLogprob>,
    },
    /// Choice `index` finished (non-aggregated).
    Finish { index: usize, reason: FinishReason },
    /// An aggregated request's progress.
    Progress(TtcProgress),
    /// An aggregated request's answer: the winning sample's whole output.
    Winner(Choice),
    /// An aggregated request none of whose samples completed: the stop rule that ended them.
    NoAnswer(&'static str),
}

/// The folded request, once the engine closed its stream.
#[derive(Debug)]
pub struct Outcome {
    /// Non-aggregated: every sample (empty when streamed). Aggregated: the winner, if any.
    pub choices: Vec<Choice>,
    /// Aggregated without a completed sample: the finish reason of the one choice.
    pub no_answer: Option<&'static str>,
    pub usage: Usage,
    pub report: Option<TtcReport>,
    /// Choice 0's finish reason (the request's, for the metrics).
    pub reason: &'static str,
}

pub struct Fold {
    id: String,
    aggregated: bool,
    /// Keep non-aggregated output (whole JSON responses).
    keep: bool,
    prompt_tokens: usize,
    choices: Vec<Choice>,
    finished: Vec<bool>,
    completion_tokens: usize,
    reasoning_tokens: usize,
    report: Option<TtcReport>,
    reason: &'static str,
}

impl Fold {
    /// `n` samples; `stream`: steps are rendered as they come, so non-aggregated output is
    /// not kept.
    pub fn new(id: &str, n: usize, aggregated: bool, stream: bool, prompt_tokens: usize) -> Self {
        Fold {
            id: id.to_string(),
            aggregated,
            keep: aggregated || !stream,
            prompt_tokens,
            choices: vec![Choice::default(); n],
            finished: vec![false; n],
            completion_tokens: 0,
            reasoning_tokens: 0,
            report: None,
            reason: "stop",
        }
    }

    fn internal(&self, detail: String) -> ApiError {
        ApiError::Internal {
            request_id: self.id.clone(),
            detail,
        }
    }

    fn check(&self, sample: usize) -> Result<(), ApiError> {
        let n = self.choices.len();
        if sample < n {
            Ok(())
        } else {
            Err(self.internal(format!(
                "the engine sent an event for sample {sample} of a request with n={n}"
            )))
        }
    }

    /// Folds one event in; `Ok(None)` when the client sees nothing of it yet.
    pub fn event(&mut self, ev: EngineEvent) -> Result<Option<Step>, ApiError> {
        match ev {
            EngineEvent::Delta {
                sample,
                text,
                reasoning,
                logprobs,
                ..
            } => {
                self.check(sample)?;
                if self.keep {
                    let c = &mut self.choices[sample];
                    c.text.push_str(&text);
                    c.reasoning.push_str(&reasoning);
                    c.logprobs.extend(logprobs);
                    return Ok(None);
                }
                Ok(Some(Step::Delta {
                    index: sample,
                    text,
                    reasoning,
                    logprobs,
                }))
            }
            EngineEvent::Finished {
                sample,
                reason,
                completion_tokens,
                reasoning_tokens,
                ..
            } => {
                self.check(sample)?;
                self.finished[sample] = true;
                self.completion_tokens += completion_tokens;
                self.reasoning_tokens += reasoning_tokens;
                self.choices[sample].finish = Some(reason);
                if self.aggregated {
                    return Ok(None);
                }
                if sample == 0 {
                    self.reason = self.choices[0].finish_reason();
                }
                Ok(Some(Step::Finish {
                    index: sample,
                    reason,
                }))
            }
            EngineEvent::Progress(p) => Ok(self.aggregated.then_some(Step::Progress(p))),
            EngineEvent::Report(r) => {
                let n = self.choices.len();
                let step = match r.winner_sample {
                    _ if !self.aggregated => {
                        return Err(self.internal("a report for a request without ttc".into()))
                    }
                    Some(w) if w < n => {
                        let c = self.choices[w].clone();
                        self.reason = c.finish_reason();
                        Step::Winner(c)
                    }
                    Some(w) => {
                        return Err(self.internal(format!(
                            "the aggregation report names sample {w}, beyond n={n}"
                        )))
                    }
                    None => {
                        self.reason = no_answer_reason(&r);
                        Step::NoAnswer(self.reason)
                    }
                };
                self.report = Some(*r);
                Ok(Some(step))
            }
            EngineEvent::Error(msg) => Err(ApiError::Engine(msg)),
        }
    }

    /// The engine closed the stream: the outcome, or the internal error of a stream that
    /// ended too early.
    pub fn finish(mut self) -> Result<Outcome, ApiError> {
        let usage = Usage::new(
            self.prompt_tokens,
            self.completion_tokens,
            self.reasoning_tokens,
        );
        let mut no_answer = None;
        if self.aggregated {
            let Some(report) = &self.report else {
                return Err(self.internal(
                    "the engine closed an aggregated request without its report".into(),
                ));
            };
            match report.winner_sample {
                Some(w) => self.choices = vec![std::mem::take(&mut self.choices[w])],
                None => {
                    no_answer = Some(no_answer_reason(report));
                    self.choices.clear();
                }
            }
        } else {
            if let Some(index) = self.finished.iter().position(|f| !f) {
                return Err(self.internal(format!(
                    "the engine closed the stream before sample {index} finished"
                )));
            }
            if !self.keep {
                self.choices.clear();
            }
        }
        Ok(Outcome {
            choices: self.choices,
            no_answer,
            usage,
            report: self.report,
            reason: self.reason,
        })
    }
}

/// `best_of`: the `keep` candidates with the highest mean token logprob, best first (ties:
/// the earlier sample).
pub fn best_of(mut choices: Vec<Choice>, keep: usize) -> Vec<Choice> {
    let mean = |c: &Choice| {
        let n = c.logprobs.len();
        if n == 0 {
            return f64::NEG_INFINITY;
        }
        c.logprobs.iter().map(|l| f64::from(l.logprob)).sum::<f64>() / n as f64
    };
    let mut order: Vec<(f64, usize)> = choices
        .iter()
        .enumerate()
        .map(|(i, c)| (mean(c), i))
        .collect();
    order.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut taken: Vec<Option<Choice>> = choices.drain(..).map(Some).collect();
    order
        .into_iter()
        .take(keep)
        .filter_map(|(_, i)| taken[i].take())
        .collect()
}

/// The finish reason of an aggregated request without a completed sample: the stop rule
/// that ended its samples.
pub fn no_answer_reason(r: &TtcReport) -> &'static str {
    r.stop_reason.map_or("length", |s| s.as_str())
}
