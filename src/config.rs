//! `ponder serve` configuration: every flag, its `PONDER_*` environment fallback, its
//! default, and the boot-time validation that rejects a bad value with the flag, the limit
//! and the value given.
//!
//! Invariant: code that receives a `ServeConfig` after `validate()` never re-checks it.
//! Each component takes its own slice: `http_limits()` for the API, `engine_config()` for
//! the engine; `model`, `device`, `host`, `port` are read by `ponder serve` itself.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::backend::KvDtype;
use crate::budget::{BudgetConfig, LoadRule};
use crate::engine::{ActivationBits, EngineConfig};
use crate::reasoning::ReasoningParser;
use crate::sched::SchedConfig;
use crate::validate::HttpLimits;

/// Where the model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Device {
    /// The CPU backend.
    Cpu,
    /// An NVIDIA GPU (fails at boot when none is usable).
    Cuda,
    /// CUDA when a usable GPU is found, the CPU otherwise.
    Auto,
}

/// A size in bytes, parsed from `1073741824`, `1GiB`, `512MiB`, `1.5GB`, `64k` (case-insensitive;
/// `K/M/G/T` and `KiB/MiB/...` are powers of 1024, `KB/MB/...` powers of 1000).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let bad = || format!("invalid size `{s}` (examples: 1048576, 512MiB, 1GiB, 2GB)");
        let num: f64 = num.parse().map_err(|_| bad())?;
        let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1.0,
            "k" | "kib" => 1024.0,
            "m" | "mib" => 1024f64.powi(2),
            "g" | "gib" => 1024f64.powi(3),
            "t" | "tib" => 1024f64.powi(4),
            "kb" => 1e3,
            "mb" => 1e6,
            "gb" => 1e9,
            "tb" => 1e12,
            _ => return Err(bad()),
        };
        let bytes = (num * mult).round();
        if !bytes.is_finite() || bytes > u64::MAX as f64 {
            return Err(bad());
        }
        Ok(ByteSize(bytes as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes", self.0)
    }
}

/// A duration parsed from `30`, `30s`, `500ms`, `2m` (a bare number is seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seconds(pub Duration);

impl FromStr for Seconds {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let bad = || format!("invalid duration `{s}` (examples: 30, 30s, 500ms, 2m)");
        let num: f64 = num.parse().map_err(|_| bad())?;
        let secs = match unit.trim() {
            "" | "s" => num,
            "ms" => num / 1000.0,
            "m" | "min" => num * 60.0,
            _ => return Err(bad()),
        };
        Duration::try_from_secs_f64(secs)
            .map(Seconds)
            .map_err(|_| bad())
    }
}

/// Flags of `ponder serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeConfig {
    /// Model: a .gguf file or a Hugging Face directory (default: the bundled SmolLM2).
    #[arg(long, env = "PONDER_MODEL")]
    pub model: Option<PathBuf>,

    /// Address to listen on.
    #[arg(long, env = "PONDER_HOST", default_value = "127.0.0.1")]
    pub host: String,

    /// TCP port to listen on (0 = any free port, logged at start).
    #[arg(long, env = "PONDER_PORT", default_value_t = 8000)]
    pub port: u16,

    /// Where the model runs.
    #[arg(long, env = "PONDER_DEVICE", value_enum, default_value = "auto")]
    pub device: Device,

    /// Largest accepted request body; larger bodies get 413.
    #[arg(long, env = "PONDER_MAX_BODY_BYTES", default_value = "4MiB")]
    pub max_body_bytes: ByteSize,

    /// Most sequences (samples) in one engine step.
    #[arg(long, env = "PONDER_MAX_NUM_SEQS", default_value_t = 64)]
    pub max_num_seqs: usize,

    /// Most tokens (prefill + decode) in one engine step. Long prompts are prefilled in
    /// chunks of this size, interleaved with the running sequences' decode steps.
    #[arg(long, env = "PONDER_MAX_NUM_BATCHED_TOKENS", default_value_t = 512)]
    pub max_num_batched_tokens: usize,

    /// Target duration in ms of a step that prefills prompts while other sequences decode:
    /// the prompt tokens of such a step are capped to what the measured cost per token fits
    /// (at least 16), so running streams pause at most about this long while new prompts
    /// are admitted. 0 = off (prompts take the token budget left after the decodes). For
    /// slow CPUs, where a 512-token step takes seconds.
    #[arg(long, env = "PONDER_MAX_STEP_MS", default_value_t = 0)]
    pub max_step_ms: u32,

    /// Most requests waiting for admission; beyond it requests get 429 with Retry-After.
    #[arg(long, env = "PONDER_MAX_WAITING", default_value_t = 256)]
    pub max_waiting: usize,

    /// Memory for the KV cache (e.g. 512MiB, 4GiB); the block count is derived from it.
    #[arg(long, env = "PONDER_KV_CACHE_MEMORY", default_value = "512MiB")]
    pub kv_cache_memory: ByteSize,

    /// Bits of the integer activations in the CPU GEMM. 12: greedy outputs match an f64
    /// reference on the golden prompts. 8: llama.cpp's precision class, half the multiply
    /// work (prefill ~1.4x faster), logits further from the reference. auto (the default):
    /// measured at load on a built-in text (two prefills of ~290 tokens): 8 when its mean
    /// KL divergence from 12 is at most 0.001 nats per token (Qwen2.5-0.5B: 0.0003, 8
    /// chosen), else 12 (SmolLM2-135M: 0.0029). Fixed values apply to the CPU backend only.
    #[arg(long, env = "PONDER_ACTIVATION_BITS", default_value = "auto", value_parser = ActivationBits::parse)]
    pub activation_bits: ActivationBits,

    /// Run decode steps of the CUDA backend as captured CUDA graphs (one launch per step
    /// instead of ~10 kernel launches per layer; `false` launches every kernel). CUDA only.
    #[arg(long, env = "PONDER_CUDA_GRAPHS", default_value_t = true, action = clap::ArgAction::Set)]
    pub cuda_graphs: bool,

    /// Element type of the CPU KV cache: f16 (half the memory and the bytes attention
    /// reads) or f32 (K/V kept exactly as computed). The CUDA cache is always bf16.
    #[arg(long, env = "PONDER_KV_CACHE_DTYPE", default_value = "f16", value_parser = KvDtype::parse)]
    pub kv_cache_dtype: KvDtype,

    /// Tokens per KV block (a power of two).
    #[arg(long, env = "PONDER_BLOCK_SIZE", default_value_t = 16)]
    pub block_size: usize,

    /// Largest `max_tokens` a request may ask for; also caps the default (context length
    /// minus prompt length) when a request gives none.
    #[arg(long, env = "PONDER_MAX_TOKENS_LIMIT", default_value_t = 4096)]
    pub max_tokens_limit: u32,

    /// On SIGTERM / Ctrl-C: stop accepting, let in-flight requests finish for up to this long
    /// (e.g. 30s, 2m), then exit.
    #[arg(long, env = "PONDER_SHUTDOWN_TIMEOUT", default_value = "30s")]
    pub shutdown_timeout: Seconds,

    /// Model id clients send and `/v1/models` lists (default: the model's file or directory name).
    #[arg(long, env = "PONDER_SERVED_MODEL_NAME")]
    pub served_model_name: Option<String>,

    /// How the model marks thinking: `auto` finds `<think>` in the chat template or the
    /// vocabulary; `deepseek_r1` treats output as thinking until `</think>`; `qwen3` thinks only
    /// when the prompt or output opens `<think>`; `none` makes every sample plain content.
    #[arg(
        long,
        env = "PONDER_REASONING_PARSER",
        value_enum,
        default_value = "auto"
    )]
    pub reasoning_parser: ReasoningParser,

    /// Jinja chat template file replacing the model's own (as vLLM's `--chat-template`), e.g.
    /// one whose generation prompt opens `<think>` so a model without native thinking
    /// reasons inside markers; reasoning markers are then detected from it (see
    /// `--reasoning-parser`).
    #[arg(long, env = "PONDER_CHAT_TEMPLATE")]
    pub chat_template: Option<std::path::PathBuf>,

    /// JSON file overriding `reasoning_effort` presets, e.g.
    /// `{"high": {"thinking_token_budget": 4096, "n": 8, "min_samples": 4, "esc_window": 3}}`.
    #[arg(long, env = "PONDER_EFFORT_PRESETS")]
    pub effort_presets: Option<std::path::PathBuf>,

    /// JSON file with the probe prompts of the model family (certaindex answer probes and
    /// self-verification): `{"answer": "...", "verify": "...", "verify_open": "...",
    /// "yes": ["Yes"], "no": ["No"]}`. Default: ChatML turns when the chat template uses
    /// them, plain text otherwise.
    #[arg(long, env = "PONDER_PROBE_PROMPTS")]
    pub probe_prompts: Option<std::path::PathBuf>,

    /// Waiting requests at which aggregated samples and thinking budgets shrink (load level 1;
    /// twice this is level 2).
    #[arg(long, env = "PONDER_LOAD_QUEUE_HIGH", default_value_t = 8)]
    pub load_queue_high: usize,

    /// KV cache use (0..1) at which budgets shrink (load level 1).
    #[arg(long, env = "PONDER_LOAD_KV_HIGH", default_value_t = 0.85)]
    pub load_kv_high: f64,

    /// KV cache use (0..1) at which budgets shrink to one sample (load level 2).
    #[arg(long, env = "PONDER_LOAD_KV_CRITICAL", default_value_t = 0.95)]
    pub load_kv_critical: f64,

    /// How the waiting queue is ordered: `certainty` (a later wave of an aggregated request
    /// waits ahead of new requests, the most settled request first, behind a new request of
    /// no larger gang such as a plain 1-sample one; new requests the smallest gang first; no
    /// entry is passed by more than 32 later arrivals) or `fcfs` (arrival order: a later
    /// wave at the back of the queue, like a new request).
    #[arg(
        long,
        env = "PONDER_WAVE_PRIORITY",
        value_enum,
        default_value = "certainty"
    )]
    pub wave_priority: WavePriority,

    /// Log lines as `text` (colours only when stdout is a terminal) or `json` (one object per
    /// line, with the request id and span fields).
    #[arg(long, env = "PONDER_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// API key clients must send as `Authorization: Bearer <key>` on /v1/*, /tokenize and
    /// /detokenize (repeatable; no key = no authentication). /health, /ready and /metrics
    /// stay open (see --protect-metrics).
    #[arg(long = "api-key", env = "PONDER_API_KEY")]
    pub api_keys: Vec<String>,

    /// File of API keys, one per line (blank lines and `#` comments skipped); adds to --api-key.
    #[arg(long, env = "PONDER_API_KEY_FILE")]
    pub api_key_file: Option<PathBuf>,

    /// /metrics needs an API key too.
    #[arg(long, env = "PONDER_PROTECT_METRICS")]
    pub protect_metrics: bool,

    /// Requests per API key, e.g. `10/s` or `600/m` (a bucket of that many, refilled
    /// evenly); beyond it 429 with Retry-After. Needs API keys.
    #[arg(long, env = "PONDER_RATE_LIMIT_PER_KEY")]
    pub rate_limit_per_key: Option<Rate>,

    /// Also export metrics under another server's names: `vllm` adds `vllm:num_requests_waiting`,
    /// `vllm:kv_cache_usage_perc`, ... (with a `model_name` label) for vLLM dashboards and
    /// LLM-aware routers; `none` exports only the native `ponder_*` names.
    #[arg(
        long,
        env = "PONDER_METRICS_COMPAT",
        value_enum,
        default_value = "none"
    )]
    pub metrics_compat: MetricsCompat,

    /// How tool calls are written in model output (read for `tool_choice` auto, forced for
    /// required / named): `hermes` (`<tool_call>{json}</tool_call>`, Qwen and Hermes models,
    /// and the prompt ponder writes for templates without tool support), `llama3_json`
    /// (the whole output is `{"name", "parameters"}`), `none` (auto is a 400).
    #[arg(
        long,
        env = "PONDER_TOOL_CALL_PARSER",
        value_enum,
        default_value = "hermes"
    )]
    pub tool_call_parser: crate::tools::ToolParser,

    /// Origins allowed by CORS, comma-separated (`*` = any); default none (no CORS headers).
    #[arg(long, env = "PONDER_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
}

/// `--metrics-compat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MetricsCompat {
    None,
    Vllm,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `--wave-priority`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WavePriority {
    Certainty,
    Fcfs,
}

/// A flag outside its allowed range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("`--{flag}` must be {limit}, given {given}")]
pub struct ConfigError {
    pub flag: &'static str,
    pub limit: String,
    pub given: String,
}

fn check(
    ok: bool,
    flag: &'static str,
    limit: impl Into<String>,
    given: impl fmt::Display,
) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError {
            flag,
            limit: limit.into(),
            given: given.to_string(),
        })
    }
}

impl ServeConfig {
    /// Checks every flag; the first violation is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check(
            !self.host.trim().is_empty(),
            "host",
            "a host name or IP address",
            "\"\"",
        )?;
        let body = self.max_body_bytes.0;
        check(
            (1024..=1 << 30).contains(&body),
            "max-body-bytes",
            "in [1KiB, 1GiB]",
            self.max_body_bytes,
        )?;
        check(
            self.max_num_seqs >= 1,
            "max-num-seqs",
            ">= 1",
            self.max_num_seqs,
        )?;
        check(
            self.max_num_batched_tokens >= self.max_num_seqs,
            "max-num-batched-tokens",
            format!(">= --max-num-seqs ({})", self.max_num_seqs),
            self.max_num_batched_tokens,
        )?;
        check(
            self.max_waiting >= 1,
            "max-waiting",
            ">= 1",
            self.max_waiting,
        )?;
        let bs = self.block_size;
        check(
            bs.is_power_of_two() && bs <= 256,
            "block-size",
            "a power of two in [1, 256]",
            bs,
        )?;
        check(
            self.kv_cache_memory.0 >= 1 << 20,
            "kv-cache-memory",
            ">= 1MiB",
            self.kv_cache_memory,
        )?;
        check(
            self.max_tokens_limit >= 1,
            "max-tokens-limit",
            ">= 1",
            self.max_tokens_limit,
        )?;
        check(
            self.load_queue_high >= 1,
            "load-queue-high",
            ">= 1",
            self.load_queue_high,
        )?;
        check(
            self.load_kv_high > 0.0 && self.load_kv_high <= 1.0,
            "load-kv-high",
            "in (0, 1]",
            self.load_kv_high,
        )?;
        check(
            self.load_kv_critical >= self.load_kv_high && self.load_kv_critical <= 1.0,
            "load-kv-critical",
            format!("in [--load-kv-high ({}), 1]", self.load_kv_high),
            self.load_kv_critical,
        )?;
        let st = self.shutdown_timeout.0;
        check(
            st <= Duration::from_secs(3600),
            "shutdown-timeout",
            "<= 3600s",
            format!("{}s", st.as_secs_f64()),
        )?;
        if let Some(name) = &self.served_model_name {
            check(
                !name.trim().is_empty(),
                "served-model-name",
                "non-empty",
                "\"\"",
            )?;
        }
        Ok(())
    }

    /// The auth sub-config: keys from --api-key and --api-key-file, the rate limit, CORS.
    pub fn auth_config(&self) -> anyhow::Result<AuthConfig> {
        let mut keys: Vec<String> = self.api_keys.iter().map(|k| k.trim().to_string()).collect();
        if let Some(path) = &self.api_key_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("--api-key-file {}: {e}", path.display()))?;
            keys.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_string),
            );
        }
        if let Some(i) = keys
            .iter()
            .position(|k| k.is_empty() || !k.bytes().all(|b| b.is_ascii_graphic()))
        {
            anyhow::bail!(
                "API key {} must be non-empty visible ASCII (no spaces)",
                i + 1
            );
        }
        if self.rate_limit_per_key.is_some() && keys.is_empty() {
            anyhow::bail!("--rate-limit-per-key needs at least one --api-key or --api-key-file");
        }
        if self.protect_metrics && keys.is_empty() {
            anyhow::bail!("--protect-metrics needs at least one --api-key or --api-key-file");
        }
        let origins: Vec<String> = self
            .allowed_origins
            .iter()
            .map(|o| o.trim().to_string())
            .filter(|o| !o.is_empty())
            .collect();
        // Each origin must be a valid header value (what the CORS layer sends back).
        if let Some(o) = origins
            .iter()
            .find(|o| axum::http::HeaderValue::from_str(o).is_err())
        {
            anyhow::bail!("--allowed-origins: `{o}` is not a valid origin");
        }
        Ok(AuthConfig {
            keys,
            protect_metrics: self.protect_metrics,
            rate: self.rate_limit_per_key,
            allowed_origins: origins,
        })
    }

    /// The budget sub-config: presets (from `--effort-presets`) and load levels.
    pub fn budget_config(&self) -> anyhow::Result<BudgetConfig> {
        let mut b = BudgetConfig {
            load: LoadRule {
                queue_high: self.load_queue_high,
                kv_high: self.load_kv_high,
                kv_critical: self.load_kv_critical,
            },
            ..BudgetConfig::default()
        };
        if let Some(path) = &self.effort_presets {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("--effort-presets {}: {e}", path.display()))?;
            b = b
                .with_presets_json(&text)
                .map_err(|e| anyhow::anyhow!("--effort-presets {}: {e}", path.display()))?;
        }
        Ok(b)
    }

    /// The engine's sizing from the flags (prefix caching on, priority scheduling off).
    pub fn engine_config(&self) -> anyhow::Result<EngineConfig> {
        let probe_texts = match &self.probe_prompts {
            None => None,
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("--probe-prompts {}: {e}", path.display()))?;
                Some(
                    crate::engine::probes::ProbeTexts::from_json(&text)
                        .map_err(|e| anyhow::anyhow!("--probe-prompts {}: {e}", path.display()))?,
                )
            }
        };
        Ok(EngineConfig {
            sched: SchedConfig {
                max_num_batched_tokens: self.max_num_batched_tokens,
                max_num_seqs: self.max_num_seqs,
                // Admission control (429) happens in the engine handle against
                // `--max-waiting`; the scheduler itself never refuses a handed-over request.
                max_waiting: usize::MAX / 2,
                enable_priority: false,
                wave_priority: self.wave_priority == WavePriority::Certainty,
            },
            block_size: self.block_size,
            kv_cache_bytes: usize::try_from(self.kv_cache_memory.0).unwrap_or(usize::MAX),
            kv_cache_dtype: self.kv_cache_dtype,
            enable_prefix_caching: true,
            probe_texts,
            max_step_ms: self.max_step_ms,
            activation_bits: self.activation_bits,
            cuda_graphs: self.cuda_graphs,
        })
    }

    /// The per-request limits of the HTTP layer.
    pub fn http_limits(&self) -> HttpLimits {
        HttpLimits {
            max_body_bytes: usize::try_from(self.max_body_bytes.0).unwrap_or(usize::MAX),
            max_tokens_limit: self.max_tokens_limit,
            max_n: self.max_num_seqs.min(crate::validate::MAX_N as usize),
        }
    }
}

/// A request rate: `count` requests per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per: std::time::Duration,
}

impl std::str::FromStr for Rate {
    type Err = String;
    /// `10/s`, `600/m` (also `/sec`, `/min`).
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("invalid rate `{s}` (examples: 10/s, 600/m)");
        let (n, unit) = s.trim().split_once('/').ok_or_else(bad)?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        let per = match unit.trim() {
            "s" | "sec" | "second" => std::time::Duration::from_secs(1),
            "m" | "min" | "minute" => std::time::Duration::from_secs(60),
            _ => return Err(bad()),
        };
        if count == 0 {
            return Err(format!("invalid rate `{s}`: the count must be >= 1"));
        }
        Ok(Rate { count, per })
    }
}

/// The auth sub-config (`ponder serve` flags, checked at boot).
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// Accepted bearer tokens; empty = no authentication.
    pub keys: Vec<String>,
    /// `/metrics` needs a key too.
    pub protect_metrics: bool,
    /// Per-key request rate (a bucket of `count` requests, refilled over `per`).
    pub rate: Option<Rate>,
    /// CORS origins (`*` = any); empty = no CORS headers, preflights are 405.
    pub allowed_origins: Vec<String>,
}

#[cfg(test)]
mod tests;
