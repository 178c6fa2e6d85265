//! Weight loading: tensor sources (GGUF, sharded safetensors), canonical tensor names, shape
//! checks, and the per-layer weight structs the forward pass reads.
//!
//! Canonical names are GGUF's (`blk.3.attn_q.weight`); Hugging Face names are mapped onto
//! them. Q/K/V and gate/up projections are fused into one matrix each at load when their
//! storage types match (one GEMM instead of three/two per layer). Block-quantized matrices
//! (Q4_0/Q4_1/Q8_0) are repacked into the CPU GEMM's Cg16 layout (`backend::packed`): one
//! owned copy of the same size, after which the mapped bytes are no longer read (the fused
//! matrices are packed straight from the parts). Float matrices stay zero-copy in the map.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use memmap2::Mmap;

use super::config::ModelConfig;
use super::gguf::GgufFile;
use super::ModelError;
use crate::backend::dtype::GgmlType;
use crate::backend::tensor::{QMatrix, Storage};

/// A tensor as stored: shape outermost-first (`[rows, cols]` for matrices).
pub struct RawTensor {
    pub ty: GgmlType,
    pub shape: Vec<usize>,
    pub data: Storage,
}

/// Where weights come from.
pub trait TensorSource {
    /// The tensor with canonical (GGUF-style) name `name`, if present.
    fn tensor(&self, name: &str) -> Option<RawTensor>;
}

impl TensorSource for GgufFile {
    fn tensor(&self, name: &str) -> Option<RawTensor> {
        let t = GgufFile::tensor(self, name)?;
        Some(RawTensor {
            ty: t.ty,
            shape: t.dims.iter().rev().map(|&d| d as usize).collect(),
            data: Storage::Mapped(self.map().clone(), t.start..t.start + t.len),
        })
    }
}

/// All `*.safetensors` files of a Hugging Face directory, memory-mapped.
pub struct SafetensorsDir {
    /// canonical name -> (shard index, dtype, shape, byte range in shard)
    index: HashMap<String, (usize, GgmlType, Vec<usize>, std::ops::Range<usize>)>,
    maps: Vec<Arc<Mmap>>,
}

impl SafetensorsDir {
    pub fn open(dir: &Path) -> Result<Self, ModelError> {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| ModelError::Io(format!("{}: {e}", dir.display())))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(ModelError::Io(format!(
                "no *.safetensors files in {}",
                dir.display()
            )));
        }
        let mut index = HashMap::new();
        let mut maps = Vec::new();
        for (i, path) in files.iter().enumerate() {
            let f =
                File::open(path).map_err(|e| ModelError::Io(format!("{}: {e}", path.display())))?;
            // SAFETY: read-only private map of a checkpoint file we never write.
            let map = unsafe { Mmap::map(&f) }
                .map_err(|e| ModelError::Io(format!("{}: {e}", path.display())))?;
            let st = safetensors::SafeTensors::deserialize(&map)
                .map_err(|e| ModelError::Format(format!("{}: {e}", path.display())))?;
            let base = map.as_ptr() as usize;
            for (name, view) in st.tensors() {
                let ty = match view.dtype() {
                    safetensors::Dtype::F32 => GgmlType::F32,
                    safetensors::Dtype::F16 => GgmlType::F16,
                    safetensors::Dtype::BF16 => GgmlType::BF16,
                    other => {
                        return Err(ModelError::Format(format!(
                            "tensor `{name}` in {} has dtype {other:?} (supported: F32, F16, BF16)",
                            path.display()
                        )))
                    }
                };
                let start = view.data().as_ptr() as usize - base;
                let range = start..start + view.data().len();
                index.insert(
                    hf_to_canonical(&name),
                    (i, ty, view.shape().to_vec(), range),
                );
            }
            maps.push(Arc::new(map));
        }
        Ok(SafetensorsDir { index, maps })
    }
}

impl TensorSource for SafetensorsDir {
    fn tensor(&self, name: &str) -> Option<RawTensor> {
        let (i, ty, shape, r) = self.index.get(name)?;
        Some(RawTensor {
            ty: *ty,
            shape: shape.clone(),
            data: Storage::Mapped(self.maps[*i].clone(), r.clone()),
        })
    }
}

/// Hugging Face Llama/Qwen2 tensor name -> canonical GGUF name (unknown names pass through).
pub fn hf_to_canonical(name: &str) -> String {
    let fixed = [
        ("model.embed_tokens.weight", "token_embd.weight"),
        ("model.norm.weight", "output_norm.weight"),
        ("lm_head.weight", "output.weight"),
    ];
    if let Some((_, c)) = fixed.iter().find(|(h, _)| *h == name) {
        return c.to_string();
    }
    if let Some(rest) = name.strip_prefix("model.layers.") {
        if let Some((layer, sub)) = rest.split_once('.') {
            let map = [
                ("input_layernorm.weight", "attn_norm.weight"),
                ("post_attention_layernorm.weight", "ffn_norm.weight"),
                ("self_attn.q_proj.weight", "attn_q.weight"),
                ("self_attn.k_proj.weight", "attn_k.weight"),
                ("self_attn.v_proj.weight", "attn_v.weight"),
                ("self_attn.o_proj.weight", "attn_output.weight"),
                ("self_attn.q_proj.bias", "attn_q.bias"),
                ("self_attn.k_proj.bias", "attn_k.bias"),
                ("self_attn.v_proj.bias", "attn_v.bias"),
                ("mlp.gate_proj.weight", "ffn_gate.weight"),
                ("mlp.up_proj.weight", "ffn_up.weight"),
                ("mlp.down_proj.weight", "ffn_down.weight"),
            ];
            if let Some((_, c)) = map.iter().find(|(h, _)| *h == sub) {
                return format!("blk.{layer}.{c}");
            }
        }
    }
    name.to_string()
}

pub struct Linear {
    /// `[out, in]` as row blocks stacked in order: one matrix, or (a fused projection whose
    /// parts are stored in different types) one per run of parts of one type.
    pub parts: Vec<QMatrix>,
    /// `[out]`
    pub bias: Option<Vec<f32>>,
}

impl Linear {
    pub fn new(w: QMatrix, bias: Option<Vec<f32>>) -> Self {
        Linear {
            parts: vec![w],
            bias,
        }
    }

    /// Output features (rows of all parts).
    pub fn rows(&self) -> usize {
        self.parts.iter().map(|p| p.rows).sum()
    }

    /// Input features.
    pub fn cols(&self) -> usize {
        self.parts[0].cols
    }

    /// Bytes of the weights in memory.
    pub fn size_bytes(&self) -> usize {
        self.parts.iter().map(|p| p.size_bytes()).sum()
    }

    /// All rows as one matrix: the only part, or the parts decoded to f32 (for a backend
    /// that converts every weight at upload anyway).
    pub fn single(&self) -> Cow<'_, QMatrix> {
        match &self.parts[..] {
            [w] => Cow::Borrowed(w),
            parts => {
                let vals: Vec<f32> = parts.iter().flat_map(|p| p.to_f32()).collect();
                Cow::Owned(QMatrix::from_f32(self.rows(), self.cols(), &vals))
            }
        }
    }
}

pub struct LayerWeights {
    pub attn_norm: Vec<f32>,
    /// Fused `[q_dim + 2 * kv_dim, hidden]`.
    pub qkv: Linear,
    pub wo: Linear,
    pub ffn_norm: Vec<f32>,
    /// Fused `[2 * ffn, hidden]`: gate rows then up rows.
    pub gate_up: Linear,
    pub down: Linear,
}

pub struct LlamaWeights {
    /// `[vocab, hidden]`
    pub embed: QMatrix,
    pub layers: Vec<LayerWeights>,
    pub final_norm: Vec<f32>,
    /// `[vocab, hidden]`; the embedding table when embeddings are tied.
    pub lm_head: QMatrix,
    /// Optional Llama-3 RoPE frequency factors from GGUF (`rope_freqs.weight`).
    pub rope_freqs: Option<Vec<f32>>,
}

impl LlamaWeights {
    /// Total bytes of weights read per decoded token (all matrices, once each).
    pub fn bytes_per_token(&self) -> usize {
        let l: usize = self
            .layers
            .iter()
            .map(|l| {
                l.qkv.size_bytes()
                    + l.wo.size_bytes()
                    + l.gate_up.size_bytes()
                    + l.down.size_bytes()
            })
            .sum();
        l + self.lm_head.size_bytes()
    }

    pub fn load(cfg: &ModelConfig, src: &dyn TensorSource) -> Result<Self, ModelError> {
        let h = cfg.hidden_size;
        let qd = cfg.num_heads * cfg.head_dim;
        let kvd = cfg.num_kv_heads * cfg.head_dim;
        let f = cfg.intermediate_size;
        // Tied: one packed table serves the lookup (row by row) and the LM head.
        let embed = matrix(src, "token_embd.weight", cfg.vocab_size, h)?.to_cg16();
        let lm_head = if src.tensor("output.weight").is_none() {
            embed.clone()
        } else {
            matrix(src, "output.weight", cfg.vocab_size, h)?.to_cg16()
        };
        let mut layers = Vec::with_capacity(cfg.num_layers);
        for i in 0..cfg.num_layers {
            let n = |s: &str| format!("blk.{i}.{s}");
            let q = matrix(src, &n("attn_q.weight"), qd, h)?;
            let k = matrix(src, &n("attn_k.weight"), kvd, h)?;
            let v = matrix(src, &n("attn_v.weight"), kvd, h)?;
            let qkv_bias = if cfg.qkv_bias {
                let mut b = vector(src, &n("attn_q.bias"), qd)?;
                b.extend(vector(src, &n("attn_k.bias"), kvd)?);
                b.extend(vector(src, &n("attn_v.bias"), kvd)?);
                Some(b)
            } else {
                None
            };
            let gate = matrix(src, &n("ffn_gate.weight"), f, h)?;
            let up = matrix(src, &n("ffn_up.weight"), f, h)?;
            layers.push(LayerWeights {
                attn_norm: vector(src, &n("attn_norm.weight"), h)?,
                qkv: Linear {
                    parts: concat_rows(&[&q, &k, &v])?,
                    bias: qkv_bias,
                },
                wo: Linear::new(
                    matrix(src, &n("attn_output.weight"), h, qd)?.to_cg16(),
                    None,
                ),
                ffn_norm: vector(src, &n("ffn_norm.weight"), h)?,
                gate_up: Linear {
                    parts: concat_rows(&[&gate, &up])?,
                    bias: None,
                },
                down: Linear::new(matrix(src, &n("ffn_down.weight"), h, f)?.to_cg16(), None),
            });
        }
        let rope_freqs = match src.tensor("rope_freqs.weight") {
            Some(_) => Some(vector(src, "rope_freqs.weight", cfg.head_dim / 2)?),
            None => None,
        };
        Ok(LlamaWeights {
            embed,
            layers,
            final_norm: vector(src, "output_norm.weight", h)?,
            lm_head,
            rope_freqs,
        })
    }
}

fn matrix(
    src: &dyn TensorSource,
    name: &str,
    rows: usize,
    cols: usize,
) -> Result<QMatrix, ModelError> {
    let t = src
        .tensor(name)
        .ok_or_else(|| ModelError::MissingTensor(name.to_string()))?;
    if t.shape != [rows, cols] {
        return Err(ModelError::Shape {
            name: name.into(),
            expected: vec![rows, cols],
            found: t.shape,
        });
    }
    QMatrix::new(t.ty, rows, cols, t.data)
        .map_err(|e| ModelError::Format(format!("tensor `{name}`: {e}")))
}

fn vector(src: &dyn TensorSource, name: &str, len: usize) -> Result<Vec<f32>, ModelError> {
    let t = src
        .tensor(name)
        .ok_or_else(|| ModelError::MissingTensor(name.to_string()))?;
    if t.shape.iter().product::<usize>() != len || t.shape.len() != 1 {
        return Err(ModelError::Shape {
            name: name.into(),
            expected: vec![len],
            found: t.shape,
        });
    }
    let m = QMatrix::new(t.ty, 1, len, t.data)
        .map_err(|e| ModelError::Format(format!("tensor `{name}`: {e}")))?;
    let v = m.to_f32();
    m.data.release_pages();
    Ok(v)
}

/// Stacks matrices with equal column counts row-wise, packed (Cg16) when the type has that
/// form: each run of consecutive parts of one storage type becomes one matrix (its rows
/// copied as bytes; the row-major concatenation is dropped once packed), so a projection
/// fused from parts of different types (Q/K in Q5_0, V in Q8_0) stays quantized as
/// several row blocks.
fn concat_rows(parts: &[&QMatrix]) -> Result<Vec<QMatrix>, ModelError> {
    let cols = parts[0].cols;
    let mut out = Vec::new();
    for run in parts.chunk_by(|a, b| a.ty == b.ty) {
        let rows: usize = run.iter().map(|p| p.rows).sum();
        let mut bytes = Vec::with_capacity(run.iter().map(|p| p.size_bytes()).sum());
        for p in run {
            bytes.extend_from_slice(p.data.bytes());
            p.data.release_pages();
        }
        let m = QMatrix::new(run[0].ty, rows, cols, Storage::Owned(Arc::new(bytes)))
            .map_err(ModelError::Format)?;
        out.push(m.to_cg16());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hf_names_map_to_gguf_names() {
        assert_eq!(
            hf_to_canonical("model.layers.12.mlp.up_proj.weight"),
            "blk.12.ffn_up.weight"
        );
        assert_eq!(
            hf_to_canonical("model.layers.0.self_attn.k_proj.bias"),
            "blk.0.attn_k.bias"
        );
        assert_eq!(hf_to_canonical("lm_head.weight"), "output.weight");
        assert_eq!(
            hf_to_canonical("model.rotary_emb.inv_freq"),
            "model.rotary_emb.inv_freq"
        );
    }

    #[test]
    fn concat_mixed_types_keeps_runs_of_one_type() {
        let a = QMatrix::from_f32(1, 2, &[1.0, 2.0]);
        let b = QMatrix::new(
            GgmlType::F16,
            1,
            2,
            Storage::Owned(Arc::new(
                [half::f16::from_f32(3.0), half::f16::from_f32(4.0)]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
            )),
        )
        .unwrap();
        let c = concat_rows(&[&a, &a, &b]).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(
            (c[0].ty, c[0].rows, c[1].ty, c[1].rows),
            (GgmlType::F32, 2, GgmlType::F16, 1)
        );
        let l = Linear {
            parts: c,
            bias: None,
        };
        assert_eq!(l.single().to_f32(), vec![1.0, 2.0, 1.0, 2.0, 3.0, 4.0]);
    }
}
