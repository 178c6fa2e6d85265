use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use ponder::config::{Device, LogFormat, ServeConfig};
use ponder::engine::{cpu_core, EngineClient, EngineHandle};
use ponder::model::{load_model, loader::default_model_path, template::ChatMessage};
use ponder::reasoning::{ReasoningFormat, ReasoningParser};
use ponder::sample::RawSamplingParams;

#[derive(Parser)]
#[command(
    name = "ponder",
    version,
    about = "OpenAI-compatible LLM server for reasoning workloads"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve the model over the OpenAI-compatible HTTP API.
    Serve(Box<ServeConfig>),
    /// Generate a completion for one prompt and print it.
    Generate {
        /// Model: a .gguf file or a Hugging Face directory (default: the bundled SmolLM2).
        #[arg(long, env = "PONDER_MODEL")]
        model: Option<PathBuf>,
        #[arg(long)]
        prompt: String,
        /// Apply the model's chat template to the prompt as one user message.
        #[arg(long)]
        chat: bool,
        #[arg(long, default_value_t = 64)]
        max_tokens: u32,
        /// 0 = greedy.
        #[arg(long, default_value_t = 0.0)]
        temperature: f32,
        #[arg(long, default_value_t = 1.0)]
        top_p: f32,
        /// 0 = off.
        #[arg(long, default_value_t = 0)]
        top_k: i32,
        #[arg(long)]
        seed: Option<u64>,
        /// Stop string (repeatable).
        #[arg(long)]
        stop: Vec<String>,
        /// Print one JSON object {text, token_ids, prompt_token_ids, finish_reason}.
        #[arg(long)]
        json: bool,
    },
    /// Exit 0 when `GET <path>` on a running server answers 200 (the container HEALTHCHECK).
    Healthcheck {
        /// The server's listen address (a wildcard address is probed on loopback).
        #[arg(long, env = "PONDER_HOST", default_value = "127.0.0.1")]
        host: String,
        #[arg(long, env = "PONDER_PORT", default_value_t = 8000)]
        port: u16,
        #[arg(long, default_value = "/health")]
        path: String,
        /// Bound on connecting, sending and reading, e.g. 3s, 500ms.
        #[arg(long, default_value = "3s")]
        timeout: ponder::config::Seconds,
    },
}

fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Cmd::Serve(cfg) => return serve(*cfg),
        Cmd::Healthcheck {
            host,
            port,
            path,
            timeout,
        } => {
            let status = ponder::api::probe(&host, port, &path, timeout.0)?;
            anyhow::ensure!(status == 200, "GET {path} answered {status}");
            println!("ok: GET {path} answered 200");
        }
        Cmd::Generate {
            model,
            prompt,
            chat,
            max_tokens,
            temperature,
            top_p,
            top_k,
            seed,
            stop,
            json,
        } => {
            let params = RawSamplingParams {
                max_tokens,
                temperature,
                top_p,
                top_k,
                seed,
                stop,
                ..Default::default()
            }
            .validate()?;
            let path = match model {
                Some(p) => p,
                None => default_model_path()?,
            };
            let m = Arc::new(load_model(&path)?);
            let text = if chat {
                m.template
                    .render(&[ChatMessage::new("user", &prompt)], true)?
            } else {
                prompt
            };
            let ids = m.tokenizer.encode(&text, m.tokenizer.add_bos)?;
            let g = ponder::generate::generate(&m, &ids, &params).map_err(anyhow::Error::msg)?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"text": g.text, "reasoning": g.reasoning,
                    "token_ids": g.token_ids, "prompt_token_ids": g.prompt_token_ids,
                    "finish_reason": g.finish_reason.as_str()})
                );
            } else {
                if !g.reasoning.is_empty() {
                    println!("<think>{}</think>", g.reasoning);
                }
                println!("{}", g.text);
            }
        }
    }
    Ok(())
}

/// `ponder serve`: load the model, start the engine thread, serve HTTP until SIGTERM.
fn serve(cfg: ServeConfig) -> anyhow::Result<()> {
    init_logging(cfg.log_format);
    cfg.validate()?;
    let path = match &cfg.model {
        Some(p) => p.clone(),
        None => default_model_path()?,
    };
    cfg.budget_config()?;
    cfg.auth_config()?;
    tracing::info!(path = %path.display(), "loading model");
    let mut model = load_model(&path)?;
    if let Some(t) = &cfg.chat_template {
        let source = std::fs::read_to_string(t)
            .map_err(|e| anyhow::anyhow!("--chat-template {}: {e}", t.display()))?;
        model.template = ponder::model::template::ChatTemplate::new(
            &source,
            &model.tokenizer.bos_token,
            &model.tokenizer.eos_token,
        )
        .map_err(|e| anyhow::anyhow!("--chat-template {}: {e}", t.display()))?;
    }
    if cfg.reasoning_parser != ReasoningParser::Auto || cfg.chat_template.is_some() {
        model.reasoning = ReasoningFormat::resolve(
            cfg.reasoning_parser,
            model.template.source(),
            &*model.tokenizer,
        );
    }
    match &model.reasoning {
        Some(f) => {
            tracing::info!(parser = ?f.parser, start = %f.start, end = %f.end, "reasoning markers")
        }
        None => tracing::info!("reasoning markers: none (every sample is content)"),
    }
    let model = Arc::new(model);
    let core = build_core(&cfg, model.clone())?;
    let engine: Arc<dyn EngineClient> = Arc::new(EngineHandle::spawn(core, cfg.max_waiting)?);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(ponder::api::serve(cfg, engine, model))
}

/// Logs to stdout: text (ANSI colours only when stdout is a terminal) or one JSON object per
/// line (`--log-format json`); the level from `RUST_LOG` (default `info`).
fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => b.with_ansi(std::io::stdout().is_terminal()).init(),
        LogFormat::Json => b
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

/// Picks the backend for `--device` and builds the engine core on it.
fn build_core(
    cfg: &ServeConfig,
    model: Arc<ponder::model::LoadedModel>,
) -> anyhow::Result<ponder::engine::core::EngineCore> {
    let ecfg = cfg.engine_config()?;
    #[cfg(feature = "cuda")]
    {
        let probe = ponder::backend::cuda::cuda_available();
        match (cfg.device, probe) {
            (Device::Cuda, Err(why)) => {
                anyhow::bail!("--device cuda: no usable CUDA device: {why}")
            }
            (Device::Cuda, Ok(_)) | (Device::Auto, Ok(_)) => {
                tracing::info!("device: cuda:0");
                return ponder::engine::cuda_core(model, &ecfg, 0, None)
                    .map_err(|e| anyhow::anyhow!("CUDA engine: {e}"));
            }
            (Device::Auto, Err(why)) => tracing::info!(%why, "device: cpu (no usable CUDA device)"),
            (Device::Cpu, _) => tracing::info!("device: cpu"),
        }
    }
    #[cfg(not(feature = "cuda"))]
    match cfg.device {
        Device::Cuda => anyhow::bail!(
            "--device cuda: this binary was built without CUDA support (rebuild with `--features cuda`)"
        ),
        Device::Auto => tracing::info!("device: cpu (built without CUDA support)"),
        Device::Cpu => tracing::info!("device: cpu"),
    }
    cpu_core(model, &ecfg).map_err(anyhow::Error::msg)
}
