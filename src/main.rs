use std::path::PathBuf;

use clap::{Parser, Subcommand};
use ponder::model::{load_model, loader::default_model_path, template::ChatMessage};
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
            let m = load_model(&path)?;
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
                    serde_json::json!({"text": g.text, "token_ids": g.token_ids,
                    "prompt_token_ids": g.prompt_token_ids, "finish_reason": g.finish_reason.as_str()})
                );
            } else {
                println!("{}", g.text);
            }
        }
    }
    Ok(())
}
