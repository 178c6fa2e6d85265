//! Opens a checkpoint — a `.gguf` file or a Hugging Face directory — and returns the model,
//! its tokenizer and its chat template. Also resolves the embedded default model.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::config::ModelConfig;
use super::forward::{Model, Weights};
use super::gguf::GgufFile;
use super::template::{ChatTemplate, CHATML};
use super::tokenizer::Tokenizer;
use super::weights::{self, SafetensorsDir, TensorSource};
use super::{CpuModel, ModelError};
use crate::backend::cpu::backend::CpuBackend;
use crate::backend::seam::Pack;

pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
pub const FETCH_COMMAND: &str = "scripts/fetch-model";

pub struct LoadedModel {
    /// The model packed for the CPU backend.
    pub model: CpuModel,
    /// The checkpoint's tensors (memory-mapped; their pages are released once packed), for
    /// another backend to pack its own copy from (`pack_for`).
    pub source: Arc<dyn TensorSource + Send + Sync>,
    pub tokenizer: Arc<Tokenizer>,
    pub template: ChatTemplate,
    /// How the model marks thinking (`auto`-detected at load; `--reasoning-parser` overrides).
    pub reasoning: Option<crate::reasoning::ReasoningFormat>,
    /// Model id reported by the API (file stem or directory name).
    pub name: String,
    pub path: PathBuf,
}

/// Where the default model is looked for: `$PONDER_MODEL_DIR`, `./models`, and `models/`
/// next to the executable's ancestors (so `target/release/ponder` finds the repo's copy).
pub fn default_model_candidates() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Ok(d) = std::env::var("PONDER_MODEL_DIR") {
        dirs.push(PathBuf::from(d));
    }
    dirs.push(PathBuf::from("models"));
    if let Ok(exe) = std::env::current_exe() {
        for a in exe.ancestors().skip(1).take(4) {
            dirs.push(a.join("models"));
        }
    }
    dirs.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models"));
    dirs.into_iter()
        .map(|d| d.join(DEFAULT_MODEL_FILE))
        .collect()
}

/// The default model's path, or an error that says how to fetch it.
pub fn default_model_path() -> Result<PathBuf, ModelError> {
    let c = default_model_candidates();
    c.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
        ModelError::Io(format!(
            "no --model given and the default model {DEFAULT_MODEL_FILE} was not found (looked in: {}); \
             fetch it with `{FETCH_COMMAND}` from the repository root",
            c.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        ))
    })
}

pub fn load_model(path: &Path) -> Result<LoadedModel, ModelError> {
    if !path.exists() {
        return Err(ModelError::Io(format!(
            "model path {} does not exist",
            path.display()
        )));
    }
    let name = path
        .file_name()
        .map(|s| s.to_string_lossy().trim_end_matches(".gguf").to_string())
        .unwrap_or_else(|| "model".into());
    if path.is_dir() {
        return load_hf_dir(path, name);
    }
    let g = Arc::new(GgufFile::open(path)?);
    let cfg = ModelConfig::from_gguf(&g)?;
    let weights = weights::load(&CpuBackend::new(), &cfg, &*g)?;
    let tokenizer = Tokenizer::from_gguf(&g)?;
    let template = g
        .get("tokenizer.chat_template")
        .and_then(|v| v.as_str())
        .map(str::to_string);
    assemble(cfg, weights, g, tokenizer, template.as_deref(), name, path)
}

/// Checks the tokenizer against the model, compiles the chat template (ChatML when the
/// checkpoint has none) and puts the parts together.
#[allow(clippy::too_many_arguments)]
fn assemble(
    cfg: ModelConfig,
    weights: Weights<CpuBackend>,
    source: Arc<dyn TensorSource + Send + Sync>,
    tokenizer: Tokenizer,
    template: Option<&str>,
    name: String,
    path: &Path,
) -> Result<LoadedModel, ModelError> {
    check_vocab(&cfg, &tokenizer)?;
    let template = ChatTemplate::new(
        template.unwrap_or(CHATML),
        &tokenizer.bos_token,
        &tokenizer.eos_token,
    )?;
    let reasoning = crate::reasoning::ReasoningFormat::resolve(
        crate::reasoning::ReasoningParser::Auto,
        template.source(),
        &tokenizer,
    );
    Ok(LoadedModel {
        model: Model::new(cfg, weights),
        source,
        tokenizer: Arc::new(tokenizer),
        template,
        reasoning,
        name,
        path: path.into(),
    })
}

impl LoadedModel {
    /// The model packed by backend `b` from the checkpoint (refused at once when `b` cannot
    /// run it).
    pub fn pack_for<B: Pack>(
        &self,
        b: &B,
        kv_dtype: crate::backend::KvDtype,
    ) -> Result<Model<B>, ModelError> {
        let cfg = self.model.cfg.clone();
        b.check(&Model::<B>::needs(&cfg, kv_dtype))
            .map_err(|e| ModelError::Config(format!("the {} backend {e}", B::NAME)))?;
        let w = weights::load(b, &cfg, &*self.source)?;
        Ok(Model::new(cfg, w))
    }
}

fn read(p: &Path) -> Result<String, ModelError> {
    std::fs::read_to_string(p).map_err(|e| ModelError::Io(format!("{}: {e}", p.display())))
}

fn load_hf_dir(dir: &Path, name: String) -> Result<LoadedModel, ModelError> {
    let cfg = ModelConfig::from_hf_json(&read(&dir.join("config.json"))?)?;
    let st = Arc::new(SafetensorsDir::open(dir)?);
    let weights = weights::load(&CpuBackend::new(), &cfg, &*st)?;
    let tc_path = dir.join("tokenizer_config.json");
    let tc: serde_json::Value = if tc_path.is_file() {
        serde_json::from_str(&read(&tc_path)?)
            .map_err(|e| ModelError::Tokenizer(format!("{}: {e}", tc_path.display())))?
    } else {
        serde_json::Value::Null
    };
    let tokenizer = Tokenizer::from_hf_files(&read(&dir.join("tokenizer.json"))?, &tc)?;
    let template = tc.get("chat_template").and_then(|v| v.as_str());
    assemble(cfg, weights, st, tokenizer, template, name, dir)
}

fn check_vocab(cfg: &ModelConfig, t: &Tokenizer) -> Result<(), ModelError> {
    // The embedding may be padded beyond the tokenizer (Qwen2), never the other way round.
    if t.vocab_size() > cfg.vocab_size {
        return Err(ModelError::Tokenizer(format!(
            "tokenizer has {} tokens but the embedding only {} rows",
            t.vocab_size(),
            cfg.vocab_size
        )));
    }
    Ok(())
}
