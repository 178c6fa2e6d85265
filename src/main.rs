use std::path::PathBuf;

use clap::{Parser, Subcommand};
use ponder::model::{load_model, loader::default_model_path, template::ChatMessage};

#[derive(Parser)]
#[command(name = "ponder", version, about = "OpenAI-compatible LLM server for reasoning workloads")]
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
        max_tokens: usize,
        #[arg(long)]
        json: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Generate { model, prompt, chat, max_tokens, json } => {
            let path = match model {
                Some(p) => p,
                None => default_model_path()?,
            };
            let m = load_model(&path)?;
            let text = if chat {
                m.template.render(&[ChatMessage::new("user", &prompt)], true)?
            } else {
                prompt
            };
            let ids = m.tokenizer.encode(&text, m.tokenizer.add_bos)?;
            let g = ponder::generate::generate_greedy(&m, &ids, max_tokens);
            let out = m.tokenizer.decode(&g.token_ids, true);
            if json {
                println!("{}", serde_json::json!({"text": out, "token_ids": g.token_ids,
                    "prompt_token_ids": g.prompt_token_ids, "finish_reason": g.finish_reason}));
            } else {
                println!("{out}");
            }
        }
    }
    Ok(())
}
