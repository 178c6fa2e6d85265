//! `ModelConfig`: the checked hyper-parameters of a Llama-family model, built from GGUF
//! metadata or a Hugging Face `config.json` (`RawHfConfig -> ModelConfig`). Code after this
//! point never re-validates: heads divide evenly, head_dim is even, sizes are non-zero.

use serde::Deserialize;

use super::arch::{self, ArchSpec};
use super::gguf::GgufFile;
use super::rope::RopeScaling;
use super::ModelError;
use crate::backend::RopeStyle;

#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub arch: &'static ArchSpec,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rms_eps: f32,
    pub rope_theta: f64,
    pub rope_style: RopeStyle,
    pub rope_scaling: RopeScaling,
    pub max_position: usize,
    /// Q/K/V projections carry a bias (Qwen2, or an HF `attention_bias`).
    pub qkv_bias: bool,
    /// q and k are RMS-normalized per head before RoPE (Qwen3).
    pub qk_norm: bool,
    /// Each token attends to at most this many positions (itself included).
    pub sliding_window: Option<usize>,
}

impl ModelConfig {
    fn check(self) -> Result<Self, ModelError> {
        let bad = |m: String| Err(ModelError::Config(m));
        if self.num_layers == 0 || self.hidden_size == 0 || self.vocab_size == 0 {
            return bad(format!(
                "layers ({}), hidden size ({}) and vocab ({}) must be non-zero",
                self.num_layers, self.hidden_size, self.vocab_size
            ));
        }
        if self.num_kv_heads == 0 || !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return bad(format!(
                "attention heads ({}) must be a multiple of kv heads ({})",
                self.num_heads, self.num_kv_heads
            ));
        }
        if !self.head_dim.is_multiple_of(2) || self.head_dim == 0 {
            return bad(format!(
                "head_dim must be even and non-zero, given {}",
                self.head_dim
            ));
        }
        if self.sliding_window == Some(0) {
            return bad("sliding window must be >= 1, given 0".into());
        }
        Ok(self)
    }

    /// Inverse RoPE frequencies (`head_dim / 2` of them) with scaling applied.
    pub fn rope_inv_freq(&self, freq_factors: Option<&[f32]>) -> Vec<f64> {
        self.rope_scaling
            .inv_freq(self.rope_theta, self.head_dim, freq_factors)
    }

    pub fn from_gguf(g: &GgufFile) -> Result<Self, ModelError> {
        let arch_name = g
            .get("general.architecture")
            .and_then(|v| v.as_str())
            .ok_or_else(|| ModelError::Config("missing general.architecture".into()))?
            .to_string();
        let arch = arch::by_gguf(&arch_name).map_err(ModelError::Config)?;
        let key = |k: &str| format!("{arch_name}.{k}");
        let uint = |k: &str| -> Result<usize, ModelError> {
            g.get(&key(k))
                .and_then(|v| v.as_u64())
                .map(|v| v as usize)
                .ok_or_else(|| ModelError::Config(format!("missing or invalid `{}`", key(k))))
        };
        let float = |k: &str| g.get(&key(k)).and_then(|v| v.as_f64());
        let hidden = uint("embedding_length")?;
        let heads = uint("attention.head_count")?;
        let kv_heads = uint("attention.head_count_kv").unwrap_or(heads);
        let vocab = match g.get(&key("vocab_size")).and_then(|v| v.as_u64()) {
            Some(v) => v as usize,
            None => g
                .get("tokenizer.ggml.tokens")
                .and_then(|v| v.as_array())
                .map(|a| a.len())
                .ok_or_else(|| ModelError::Config("cannot determine the vocabulary size".into()))?,
        };
        let head_dim = match uint("attention.key_length") {
            Ok(v) => v,
            Err(_) if heads > 0 => hidden / heads,
            Err(e) => return Err(e),
        };
        let orig = |d: f64| float("rope.scaling.original_context_length").unwrap_or(d);
        let factor = |d: f64| float("rope.scaling.factor").unwrap_or(d);
        let rope_scaling = match g.get(&key("rope.scaling.type")).and_then(|v| v.as_str()) {
            Some("llama3") => RopeScaling::Llama3 {
                factor: factor(8.0),
                low_freq_factor: float("rope.scaling.low_freq_factor").unwrap_or(1.0),
                high_freq_factor: float("rope.scaling.high_freq_factor").unwrap_or(4.0),
                original_max_position: orig(8192.0),
            },
            Some("linear") => RopeScaling::Linear {
                factor: factor(1.0),
            },
            Some("yarn") => RopeScaling::Yarn {
                factor: factor(1.0),
                original_max_position: orig(4096.0),
                beta_fast: float("rope.scaling.yarn_beta_fast").unwrap_or(32.0),
                beta_slow: float("rope.scaling.yarn_beta_slow").unwrap_or(1.0),
            },
            Some("none") | None => RopeScaling::None,
            Some(other) => {
                return Err(ModelError::Config(format!(
                    "unsupported rope scaling `{other}` (supported: none, linear, llama3, yarn)"
                )))
            }
        };
        ModelConfig {
            arch,
            vocab_size: vocab,
            hidden_size: hidden,
            intermediate_size: uint("feed_forward_length")?,
            num_layers: uint("block_count")?,
            num_heads: heads,
            num_kv_heads: kv_heads,
            head_dim,
            rms_eps: float("attention.layer_norm_rms_epsilon").unwrap_or(1e-5) as f32,
            rope_theta: float("rope.freq_base").unwrap_or(10000.0),
            rope_style: arch.gguf_rope,
            rope_scaling,
            max_position: uint("context_length").unwrap_or(4096),
            qkv_bias: arch.qkv_bias,
            qk_norm: arch.qk_norm,
            sliding_window: uint("attention.sliding_window").ok().filter(|&w| w > 0),
        }
        .check()
    }

    pub fn from_hf_json(text: &str) -> Result<Self, ModelError> {
        let raw: RawHfConfig = serde_json::from_str(text)
            .map_err(|e| ModelError::Config(format!("config.json: {e}")))?;
        let arch = arch::by_hf(raw.model_type.as_deref().unwrap_or("<missing>"))
            .map_err(ModelError::Config)?;
        let rope_scaling = match &raw.rope_scaling {
            None => RopeScaling::None,
            Some(s) => match s.rope_type.as_deref().or(s.r#type.as_deref()) {
                Some("llama3") => RopeScaling::Llama3 {
                    factor: s.factor.unwrap_or(8.0),
                    low_freq_factor: s.low_freq_factor.unwrap_or(1.0),
                    high_freq_factor: s.high_freq_factor.unwrap_or(4.0),
                    original_max_position: s.original_max_position_embeddings.unwrap_or(8192.0),
                },
                Some("linear") => RopeScaling::Linear {
                    factor: s.factor.unwrap_or(1.0),
                },
                Some("yarn") => RopeScaling::Yarn {
                    factor: s.factor.unwrap_or(1.0),
                    original_max_position: s
                        .original_max_position_embeddings
                        .unwrap_or(raw.max_position_embeddings.unwrap_or(4096) as f64),
                    beta_fast: s.beta_fast.unwrap_or(32.0),
                    beta_slow: s.beta_slow.unwrap_or(1.0),
                },
                Some("default") | None => RopeScaling::None,
                Some(other) => {
                    return Err(ModelError::Config(format!(
                    "unsupported rope_scaling {other:?} (supported: llama3, linear, yarn, default)"
                )))
                }
            },
        };
        let heads = raw.num_attention_heads;
        // Qwen2 configs carry a window but switch it off with `use_sliding_window: false`.
        let sliding_window = raw
            .sliding_window
            .filter(|_| raw.use_sliding_window.unwrap_or(arch.name == "mistral"));
        ModelConfig {
            arch,
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_layers: raw.num_hidden_layers,
            num_heads: heads,
            num_kv_heads: raw.num_key_value_heads.unwrap_or(heads),
            head_dim: raw
                .head_dim
                .unwrap_or(raw.hidden_size.checked_div(heads).unwrap_or(0)),
            rms_eps: raw.rms_norm_eps.unwrap_or(1e-6) as f32,
            rope_theta: raw.rope_theta.unwrap_or(10000.0),
            rope_style: RopeStyle::Neox,
            rope_scaling,
            max_position: raw.max_position_embeddings.unwrap_or(4096),
            qkv_bias: arch.qkv_bias || raw.attention_bias.unwrap_or(false),
            qk_norm: arch.qk_norm,
            sliding_window,
        }
        .check()
    }
}

/// The fields of a Hugging Face `config.json` that ponder reads (others are ignored).
#[derive(Debug, Deserialize)]
pub struct RawHfConfig {
    pub model_type: Option<String>,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: Option<usize>,
    pub head_dim: Option<usize>,
    pub rms_norm_eps: Option<f64>,
    pub rope_theta: Option<f64>,
    pub rope_scaling: Option<RawRopeScaling>,
    pub max_position_embeddings: Option<usize>,
    pub tie_word_embeddings: Option<bool>,
    pub attention_bias: Option<bool>,
    pub sliding_window: Option<usize>,
    pub use_sliding_window: Option<bool>,
    pub torch_dtype: Option<String>,
    pub bos_token_id: Option<serde_json::Value>,
    pub eos_token_id: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
pub struct RawRopeScaling {
    pub rope_type: Option<String>,
    pub r#type: Option<String>,
    pub factor: Option<f64>,
    pub low_freq_factor: Option<f64>,
    pub high_freq_factor: Option<f64>,
    pub original_max_position_embeddings: Option<f64>,
    pub beta_fast: Option<f64>,
    pub beta_slow: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hf_config_qwen2_and_errors() {
        let j = r#"{"model_type":"qwen2","vocab_size":151936,"hidden_size":1536,
            "intermediate_size":8960,"num_hidden_layers":28,"num_attention_heads":12,
            "num_key_value_heads":2,"rms_norm_eps":1e-6,"rope_theta":10000.0,
            "max_position_embeddings":131072,"tie_word_embeddings":false}"#;
        let c = ModelConfig::from_hf_json(j).unwrap();
        assert_eq!(
            (c.arch.name, c.head_dim, c.num_kv_heads, c.qkv_bias),
            ("qwen2", 128, 2, true)
        );
        assert_eq!(c.rope_style, RopeStyle::Neox);
        let bad = j.replace("\"num_key_value_heads\":2", "\"num_key_value_heads\":5");
        let e = ModelConfig::from_hf_json(&bad).unwrap_err().to_string();
        assert!(
            e.contains("attention heads (12) must be a multiple of kv heads (5)"),
            "{e}"
        );
        let e = ModelConfig::from_hf_json(&j.replace("qwen2", "gpt2"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "model config: unsupported model_type \"gpt2\" (supported: llama, mistral, qwen2, qwen3)"
        );
        // Qwen3: q/k norm, no bias, head_dim from the config.
        let q3 = j.replace("qwen2", "qwen3").replace(
            "\"num_key_value_heads\":2",
            "\"num_key_value_heads\":2,\"head_dim\":96",
        );
        let c = ModelConfig::from_hf_json(&q3).unwrap();
        assert_eq!(
            (c.arch.name, c.head_dim, c.qkv_bias, c.qk_norm),
            ("qwen3", 96, false, true)
        );
        // Mistral's window applies; Qwen2's is off unless use_sliding_window.
        let m = j.replace("qwen2", "mistral").replace(
            "\"rms_norm_eps\"",
            "\"sliding_window\":4096,\"rms_norm_eps\"",
        );
        assert_eq!(
            ModelConfig::from_hf_json(&m).unwrap().sliding_window,
            Some(4096)
        );
        let q = j.replace(
            "\"rms_norm_eps\"",
            "\"sliding_window\":4096,\"rms_norm_eps\"",
        );
        assert_eq!(ModelConfig::from_hf_json(&q).unwrap().sliding_window, None);
    }

    #[test]
    fn llama3_scaling_keeps_high_and_divides_low_frequencies() {
        let j = r#"{"model_type":"llama","vocab_size":10,"hidden_size":64,
            "intermediate_size":8,"num_hidden_layers":1,"num_attention_heads":1,
            "rope_theta":500000.0,"rope_scaling":{"rope_type":"llama3","factor":8.0,
            "low_freq_factor":1.0,"high_freq_factor":4.0,
            "original_max_position_embeddings":8192}}"#;
        let c = ModelConfig::from_hf_json(j).unwrap();
        let f = c.rope_inv_freq(None);
        assert_eq!(f[0], 1.0);
        let raw_last = 1.0 / 500000f64.powf(62.0 / 64.0);
        assert!((f[31] - raw_last / 8.0).abs() < 1e-15);
    }
}
