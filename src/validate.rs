//! The request boundary: a `RawRequest` (what the client sent, already read from JSON by
//! `api::request` with types checked but no ranges) plus the tokenizer and chat template
//! becomes a `ValidRequest` — prompt token ids, sample count and checked `SamplingParams`.
//!
//! ```text
//!  RawRequest --model name--> 404 if not the served model
//!             --prompt------> chat template + tokenizer (or token ids checked < vocab)
//!             --ranges------> n in [1, max_n], max_tokens <= --max-tokens-limit,
//!                             RawSamplingParams::validate()
//!             --context-----> prompt + max_tokens <= context length
//!  = ValidRequest (nothing after this re-checks)
//! ```
//!
//! Every error carries the field (`param`), the limit and the value given.

use crate::budget::{Budget, BudgetConfig, BudgetContext, LoadSnapshot, RawBudget};
use crate::engine::GenerateRequest;
use crate::model::template::{ChatMessage, ChatTemplate};
use crate::model::tokenizer::Tokenizer;
use crate::reasoning::ReasoningFormat;
use crate::sample::{RawSamplingParams, SamplingParams, MAX_TOP_LOGPROBS};

mod error;
mod fim;
pub use error::ValidateError;
use fim::Fim;

/// Most samples (`n`) per request (lowered to `--max-num-seqs` when that is smaller).
pub const MAX_N: i64 = 16;

/// The prompt as sent.
#[derive(Debug, Clone, PartialEq)]
pub enum PromptInput {
    /// Chat messages, rendered with the model's template.
    Chat(Vec<ChatMessage>),
    /// A completions prompt string.
    Text(String),
    /// Completions prompt token ids (range-checked against the vocabulary here).
    TokenIds(Vec<i64>),
}

/// A request with types checked and ranges not yet checked. Integer fields are `i64` so a
/// negative or huge value reaches the range check with the value the client sent. Fields
/// named differently by the two endpoints carry the name they were given in.
#[derive(Debug, Clone, PartialEq)]
pub struct RawRequest {
    pub model: Option<String>,
    pub prompt: PromptInput,
    pub n: Option<i64>,
    /// (`max_tokens` or `max_completion_tokens`, value)
    pub max_tokens: Option<(&'static str, i64)>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<i64>,
    pub min_p: Option<f32>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub repetition_penalty: Option<f32>,
    pub seed: Option<u64>,
    pub logprobs: bool,
    /// (`top_logprobs` for chat, `logprobs` for completions, value)
    pub top_logprobs: Option<(&'static str, i64)>,
    pub stop: Vec<String>,
    pub stop_token_ids: Vec<i64>,
    pub ignore_eos: bool,
    pub min_tokens: Option<i64>,
    pub stream: bool,
    pub include_usage: bool,
    /// Thinking budget and test-time compute (`reasoning_effort`, `thinking_token_budget`,
    /// `min_thinking_tokens`, `ttc`).
    pub budget: RawBudget,
    /// `logit_bias` as sent: (key, bias); keys are checked as token ids here.
    pub logit_bias: Vec<(String, f32)>,
    /// Completions `echo`: the prompt text leads each choice's text.
    pub echo: bool,
    /// Completions `best_of` (> `n`): candidates generated, the `n` best returned.
    pub best_of: Option<i64>,
    /// Completions `suffix`: fill in the middle between the prompt and this text.
    pub suffix: Option<String>,
    /// `user` / `safety_identifier`: logged with the request.
    pub user: Option<String>,
    /// What the output must match (`response_format`, `guided_*`), with the field it came
    /// from (named in compile errors).
    pub constraint: Option<(String, crate::guided::Constraint)>,
    /// Chat `tools` / `tool_choice` / `parallel_tool_calls`.
    pub tools: Option<crate::tools::Tools>,
    /// Chat messages in OpenAI's shape (with `tool_calls`, `tool_call_id`), for templates.
    pub chat_json: Vec<serde_json::Value>,
}

impl RawRequest {
    /// A request for `prompt` with every optional field absent.
    pub fn new(prompt: PromptInput) -> Self {
        RawRequest {
            model: None,
            prompt,
            n: None,
            max_tokens: None,
            temperature: None,
            top_p: None,
            top_k: None,
            min_p: None,
            presence_penalty: None,
            frequency_penalty: None,
            repetition_penalty: None,
            seed: None,
            logprobs: false,
            top_logprobs: None,
            stop: Vec::new(),
            stop_token_ids: Vec::new(),
            ignore_eos: false,
            min_tokens: None,
            stream: false,
            include_usage: false,
            budget: RawBudget::default(),
            logit_bias: Vec::new(),
            echo: false,
            best_of: None,
            suffix: None,
            user: None,
            constraint: None,
            tools: None,
            chat_json: Vec::new(),
        }
    }
}

/// A checked request, ready for the engine.
#[derive(Debug, Clone)]
pub struct ValidRequest {
    pub prompt_token_ids: Vec<u32>,
    /// Choices in the response (1 for aggregated requests).
    pub n: usize,
    pub params: SamplingParams,
    pub stream: bool,
    pub include_usage: bool,
    /// Thinking limits and the aggregation plan (`budget::build`).
    pub budget: Budget,
    /// The rendered prompt ends inside thinking (its template opened `<think>`).
    pub starts_in_thinking: bool,
    /// Completions `echo`: the prompt text that leads each choice.
    pub echo: Option<String>,
    /// `user` / `safety_identifier` (logged with the request).
    pub user: Option<String>,
    /// The compiled constraint (its initial state), when the request has one.
    pub guide: Option<crate::guided::Guide>,
    /// Output text is parsed for tool calls in this format.
    pub tool_parser: Option<crate::tools::ToolParser>,
    /// Completions `best_of` > `n`: this many candidates run; the `n` with the highest mean
    /// token logprob are returned.
    pub best_of: Option<usize>,
}

impl ValidRequest {
    pub fn generate_request(&self) -> GenerateRequest {
        // best_of ranks candidates by their tokens' logprobs: the engine reports them.
        let params = match self.best_of {
            Some(_) if !self.params.logprobs => {
                let mut raw = self.params.clone().into_raw();
                raw.logprobs = true;
                raw.validate().unwrap_or_else(|_| self.params.clone())
            }
            _ => self.params.clone(),
        };
        GenerateRequest {
            prompt_token_ids: self.prompt_token_ids.clone(),
            n: self
                .budget
                .ttc
                .as_ref()
                .map_or(self.best_of.unwrap_or(self.n), |p| p.n),
            params,
            priority: 0,
            starts_in_thinking: self.starts_in_thinking,
            think: self.budget.think,
            ttc: self.budget.ttc.clone(),
            guide: self.guide.clone(),
        }
    }

    /// The request aggregates samples into one answer (a `ttc` report will follow).
    pub fn aggregated(&self) -> bool {
        self.budget.ttc.is_some()
    }
}

/// Limits the HTTP layer enforces per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    pub max_body_bytes: usize,
    pub max_tokens_limit: u32,
    /// Most samples (`n`) per request: `MAX_N`, or `--max-num-seqs` when lower
    /// (the engine cannot run a group larger than one step holds).
    pub max_n: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_body_bytes: 4 << 20,
            max_tokens_limit: 4096,
            max_n: MAX_N as usize,
        }
    }
}

/// What validation needs to know about the served model.
pub struct ModelView<'a> {
    pub tokenizer: &'a Tokenizer,
    pub template: &'a ChatTemplate,
    pub served_name: &'a str,
    /// Most tokens (prompt + completion) of one sequence.
    pub context_length: usize,
    /// Embedding rows; prompt token ids must be below it.
    pub vocab_size: usize,
    /// How the model marks thinking (`None`: no markers).
    pub reasoning: Option<&'a ReasoningFormat>,
    /// Grammar compiler for constrained decoding (`None`: constraints are a 400).
    pub guides: Option<&'a crate::guided::GuideFactory>,
    /// `--tool-call-parser`.
    pub tool_parser: crate::tools::ToolParser,
}

/// The server side of budget decisions: presets, load levels, and the load right now.
pub struct BudgetEnv<'a> {
    pub config: &'a BudgetConfig,
    pub load: LoadSnapshot,
}

/// Per-request limits: the model's (context, vocabulary) and the server's (from `ServeConfig`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub context_length: usize,
    pub vocab_size: usize,
    pub max_tokens_limit: u32,
    /// Most samples per request (<= `MAX_N`).
    pub max_n: usize,
}

/// Checks `raw` against the served model: the single entry point.
pub fn validate(
    mut raw: RawRequest,
    m: &ModelView<'_>,
    server: &HttpLimits,
    env: &BudgetEnv<'_>,
) -> Result<ValidRequest, ValidateError> {
    if let Some(given) = &raw.model {
        if given != m.served_name {
            return Err(ValidateError::ModelNotFound {
                given: given.clone(),
                served: m.served_name.to_string(),
            });
        }
    }
    let limits = Limits {
        context_length: m.context_length,
        vocab_size: m.vocab_size,
        max_tokens_limit: server.max_tokens_limit,
        max_n: server.max_n,
    };
    let fim = match raw.suffix.take() {
        None => None,
        Some(suffix) => Some(Fim::of(m.tokenizer, suffix)?),
    };
    let (ids, text) = match &raw.prompt {
        PromptInput::Chat(_) if tool_turns(&raw) => {
            let text = crate::tools::render(m.template, &raw.chat_json, raw.tools.as_ref())
                .map_err(|e| {
                    ValidateError::invalid(
                        "messages",
                        format!("the model's chat template rejected `messages`: {e}"),
                    )
                })?;
            (encode(m.tokenizer, &text)?, text)
        }
        PromptInput::Chat(messages) => {
            let text = m.template.render(messages, true).map_err(|e| {
                ValidateError::invalid(
                    "messages",
                    format!("the model's chat template rejected `messages`: {e}"),
                )
            })?;
            (encode(m.tokenizer, &text)?, text)
        }
        PromptInput::Text(text) => match &fim {
            None => (encode(m.tokenizer, text)?, text.clone()),
            Some(f) => (
                f.wrap(m.tokenizer, encode(m.tokenizer, text)?)?,
                text.clone(),
            ),
        },
        PromptInput::TokenIds(ids) => {
            let mut ids = token_ids(ids, limits.vocab_size)?;
            if let Some(f) = &fim {
                ids = f.wrap(m.tokenizer, ids)?;
            }
            // The tail is enough to see whether the prompt opened thinking.
            let tail = m
                .tokenizer
                .decode(&ids[ids.len().saturating_sub(8)..], false);
            (ids, tail)
        }
    };
    let echo = match (&raw.prompt, raw.echo) {
        (_, false) => None,
        (_, true) if raw.logprobs => {
            return Err(ValidateError::invalid(
                "echo",
                "`echo` with `logprobs` is not supported: prompt tokens are not scored",
            ))
        }
        (PromptInput::Text(t), true) => Some(t.clone()),
        (PromptInput::TokenIds(ids), true) => {
            let ids = token_ids(ids, limits.vocab_size)?;
            Some(m.tokenizer.decode(&ids, false))
        }
        (PromptInput::Chat(_), true) => None,
    };
    use crate::tools::{forced_grammar, ToolChoice, ToolParser};
    let mut tool_parser = None;
    if let Some(t) = &raw.tools {
        let forced = forced_grammar(t, m.tool_parser);
        match (&t.choice, m.tool_parser) {
            (ToolChoice::None, _) => {}
            (ToolChoice::Auto, ToolParser::None) => {
                return Err(ValidateError::invalid(
                    "tool_choice",
                    "`tool_choice` auto needs a tool-call parser: start the server with \
                     --tool-call-parser hermes or llama3_json",
                ))
            }
            (_, ToolParser::None) => tool_parser = Some(ToolParser::Hermes),
            (_, p) => tool_parser = Some(p),
        }
        if let Some(g) = forced {
            if let Some((param, _)) = &raw.constraint {
                return Err(ValidateError::invalid(
                    param.as_str(),
                    format!("`{param}` cannot be combined with a required or named `tool_choice`"),
                ));
            }
            raw.constraint = Some(("tool_choice".to_string(), g));
        }
    }
    let guide = match raw.constraint.take() {
        None => None,
        Some((param, c)) => {
            let f = m.guides.ok_or_else(|| {
                ValidateError::invalid(
                    param.as_str(),
                    format!("`{param}` is not available: the grammar engine failed to start for this model"),
                )
            })?;
            Some(
                f.compile(&c, &param)
                    .map_err(|e| ValidateError::invalid(e.param, e.message))?,
            )
        }
    };
    let raw_budget = std::mem::take(&mut raw.budget);
    let n_given = raw.n;
    let mut v = check(raw, ids, &limits)?;
    let cx = BudgetContext {
        config: env.config,
        load: env.load,
        has_reasoning: m.reasoning.is_some(),
        max_n: limits.max_n.min(MAX_N as usize),
        max_tokens: v.params.max_tokens,
        n_given,
    };
    v.budget = crate::budget::build(&raw_budget, &cx)?;
    v.starts_in_thinking = m.reasoning.is_some_and(|f| f.starts_in_thinking(&text));
    v.echo = echo;
    v.guide = guide;
    v.tool_parser = tool_parser;
    Ok(v)
}

/// The chat needs the tool-aware rendering: tools given, or tool calls / results in it.
fn tool_turns(raw: &RawRequest) -> bool {
    raw.tools.is_some()
        || raw
            .chat_json
            .iter()
            .any(|m| m.get("tool_calls").is_some() || m["role"] == "tool")
}

fn encode(t: &Tokenizer, text: &str) -> Result<Vec<u32>, ValidateError> {
    t.encode(text, t.add_bos)
        .map_err(|e| ValidateError::Internal(format!("tokenizing the prompt failed: {e}")))
}

fn token_ids(ids: &[i64], vocab: usize) -> Result<Vec<u32>, ValidateError> {
    ids.iter()
        .enumerate()
        .map(|(i, &id)| {
            u32::try_from(id)
                .ok()
                .filter(|&t| (t as usize) < vocab)
                .ok_or_else(|| {
                    ValidateError::invalid(
                        "prompt",
                        format!("`prompt[{i}]` must be a token id in [0, {vocab}), given {id}"),
                    )
                })
        })
        .collect()
}

fn out_of_range(
    param: &str,
    limit: impl std::fmt::Display,
    given: impl std::fmt::Display,
) -> ValidateError {
    ValidateError::invalid(param, format!("`{param}` must be {limit}, given {given}"))
}

/// Range checks and the context arithmetic, once the prompt is tokenized.
pub fn check(
    raw: RawRequest,
    prompt: Vec<u32>,
    lim: &Limits,
) -> Result<ValidRequest, ValidateError> {
    let param = if matches!(raw.prompt, PromptInput::Chat(_)) {
        "messages"
    } else {
        "prompt"
    };
    if prompt.is_empty() {
        return Err(ValidateError::invalid(
            param,
            format!("`{param}` must not be empty"),
        ));
    }
    let n = raw.n.unwrap_or(1);
    let max_n = i64::try_from(lim.max_n).unwrap_or(MAX_N).min(MAX_N);
    if !(1..=max_n).contains(&n) {
        return Err(out_of_range("n", format!("in [1, {max_n}]"), n));
    }
    let ctx = lim.context_length;
    let room = ctx.saturating_sub(prompt.len());
    // The context check comes first: a request over the context is told the context length
    // even when it is also over --max-tokens-limit.
    let max_tokens = match raw.max_tokens {
        Some((param, v)) if v < 1 => return Err(out_of_range(param, ">= 1", v)),
        Some((_, v)) => usize::try_from(v).unwrap_or(usize::MAX),
        None => room.min(lim.max_tokens_limit as usize).max(1),
    };
    if prompt.len().saturating_add(max_tokens) > ctx {
        return Err(ValidateError::ContextOverflow {
            param,
            limit: ctx,
            prompt: prompt.len(),
            max_tokens,
        });
    }
    if let Some((param, v)) = raw.max_tokens {
        if v > i64::from(lim.max_tokens_limit) {
            let limit = format!("<= {}", lim.max_tokens_limit);
            return Err(out_of_range(param, limit, v));
        }
    }
    let top_k = match raw.top_k {
        None => 0,
        Some(k) => {
            i32::try_from(k).map_err(|_| out_of_range("top_k", ">= -1 (0 or -1 disables it)", k))?
        }
    };
    let top_logprobs = match raw.top_logprobs {
        None => 0,
        Some((param, v)) => u32::try_from(v)
            .ok()
            .filter(|&v| v <= MAX_TOP_LOGPROBS)
            .ok_or_else(|| out_of_range(param, format!("in [0, {MAX_TOP_LOGPROBS}]"), v))?,
    };
    let min_tokens = match raw.min_tokens {
        None => 0,
        Some(v) => u32::try_from(v).map_err(|_| out_of_range("min_tokens", ">= 0", v))?,
    };
    let stop_token_ids = raw
        .stop_token_ids
        .iter()
        .enumerate()
        .map(|(i, &id)| {
            u32::try_from(id)
                .ok()
                .filter(|&t| (t as usize) < lim.vocab_size)
                .ok_or_else(|| {
                    out_of_range(
                        &format!("stop_token_ids[{i}]"),
                        format!("a token id in [0, {})", lim.vocab_size),
                        id,
                    )
                })
        })
        .collect::<Result<Vec<u32>, _>>()?;
    let best_of = match raw.best_of {
        None => None,
        Some(b) if b <= max_n => Some(b as usize),
        Some(b) => return Err(out_of_range("best_of", format!("in [n, {max_n}]"), b)),
    };
    let logit_bias = raw
        .logit_bias
        .iter()
        .map(|(k, b)| {
            k.trim()
                .parse::<u32>()
                .ok()
                .filter(|&t| (t as usize) < lim.vocab_size)
                .map(|t| (t, *b))
                .ok_or_else(|| {
                    ValidateError::invalid(
                        "logit_bias",
                        format!(
                            "`logit_bias` keys must be token ids in [0, {}), given \"{k}\"",
                            lim.vocab_size
                        ),
                    )
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let user = raw.user;
    let d = RawSamplingParams::default();
    let params = RawSamplingParams {
        temperature: raw.temperature.unwrap_or(d.temperature),
        top_k,
        top_p: raw.top_p.unwrap_or(d.top_p),
        min_p: raw.min_p.unwrap_or(d.min_p),
        repetition_penalty: raw.repetition_penalty.unwrap_or(d.repetition_penalty),
        presence_penalty: raw.presence_penalty.unwrap_or(d.presence_penalty),
        frequency_penalty: raw.frequency_penalty.unwrap_or(d.frequency_penalty),
        seed: raw.seed,
        logprobs: raw.logprobs,
        top_logprobs,
        max_tokens: max_tokens as u32,
        stop: raw.stop,
        stop_token_ids,
        ignore_eos: raw.ignore_eos,
        min_tokens,
        logit_bias,
    }
    .validate()?;
    Ok(ValidRequest {
        prompt_token_ids: prompt,
        n: n as usize,
        params,
        stream: raw.stream,
        include_usage: raw.include_usage,
        budget: Budget::default(),
        starts_in_thinking: false,
        echo: None,
        user,
        guide: None,
        tool_parser: None,
        best_of,
    })
}

#[cfg(test)]
mod tests;
