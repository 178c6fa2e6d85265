//! Weight loading: tensor sources (GGUF, sharded safetensors), canonical tensor names, shape
//! checks, and the per-layer weight structs the forward pass reads.
//!
//! Canonical names are GGUF's (`blk.3.attn_q.weight`); Hugging Face names are mapped onto
//! them. Q/K/V and gate/up projections are fused into one matrix each at load when their
//! storage types match (one GEMM instead of three/two per layer). Block-quantized matrices
//! (Q4_0/Q4_1/Q8_0) are repacked into the CPU GEMM's Cg16 layout (`backend::packed`): one
//! owned copy of the same size, after which the mapped bytes are no longer read (the fused
//! matrices are packed straight from the parts). Float matrices stay zero-copy in the map.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use memmap2::Mmap;

use super::config::ModelConfig;
use super::forward::{Layer, Weights};
use super::gguf::GgufFile;
use super::ModelError;
use crate::backend::cpu::backend::CpuBackend;
use crate::backend::dtype::GgmlType;
use crate::backend::seam::Pack;
use crate::backend::tensor::{QMatrix, Storage};
use crate::backend::types::RopeParams;

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

/// Tensors held in memory under canonical names (random test models, benches).
#[derive(Default)]
pub struct MemSource {
    tensors: HashMap<String, (GgmlType, Vec<usize>, Storage)>,
}

impl MemSource {
    /// Adds `m` (row-major, as a checkpoint stores it) under `name` (shape `[rows, cols]`).
    pub fn matrix(&mut self, name: &str, m: QMatrix) {
        assert!(
            matches!(m.layout, crate::backend::tensor::Layout::RowMajor),
            "`{name}`: a source holds row-major matrices"
        );
        let shape = vec![m.rows, m.cols];
        self.tensors.insert(name.to_string(), (m.ty, shape, m.data));
    }

    /// Adds an f32 vector under `name`.
    pub fn vector(&mut self, name: &str, v: &[f32]) {
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        let data = Storage::Owned(bytes.into());
        self.tensors
            .insert(name.to_string(), (GgmlType::F32, vec![v.len()], data));
    }
}

impl TensorSource for MemSource {
    fn tensor(&self, name: &str) -> Option<RawTensor> {
        let (ty, shape, data) = self.tensors.get(name)?;
        Some(RawTensor {
            ty: *ty,
            shape: shape.clone(),
            data: data.clone(),
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
                ("self_attn.q_norm.weight", "attn_q_norm.weight"),
                ("self_attn.k_norm.weight", "attn_k_norm.weight"),
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

/// Reads every tensor a model of `cfg` needs from `src` and packs it with backend `b`
/// (fused Q/K/V and gate/up projections are handed over as their parts, stacked in order).
pub fn load<B: Pack>(
    b: &B,
    cfg: &ModelConfig,
    src: &dyn TensorSource,
) -> Result<Weights<B>, ModelError> {
    let h = cfg.hidden_size;
    let hd = cfg.head_dim;
    let qd = cfg.num_heads * hd;
    let kvd = cfg.num_kv_heads * hd;
    let f = cfg.intermediate_size;
    let (embed, tied) = packed::<B, _>(
        "token_embd.weight",
        b.table(matrix(src, "token_embd.weight", cfg.vocab_size, h)?),
    )?;
    let lm_head = match src.tensor("output.weight") {
        Some(_) => packed::<B, _>(
            "output.weight",
            b.matrix(vec![matrix(src, "output.weight", cfg.vocab_size, h)?], None),
        )?,
        None => tied.ok_or_else(|| {
            ModelError::Format(format!(
                "no `output.weight` and the {} backend cannot share the embedding table",
                B::NAME
            ))
        })?,
    };
    let mut layers = Vec::with_capacity(cfg.num_layers);
    for i in 0..cfg.num_layers {
        let n = |s: &str| format!("blk.{i}.{s}");
        let qkv_bias = if cfg.qkv_bias {
            let mut bias = vector(src, &n("attn_q.bias"), qd)?;
            bias.extend(vector(src, &n("attn_k.bias"), kvd)?);
            bias.extend(vector(src, &n("attn_v.bias"), kvd)?);
            Some(bias)
        } else {
            None
        };
        let qkv = vec![
            matrix(src, &n("attn_q.weight"), qd, h)?,
            matrix(src, &n("attn_k.weight"), kvd, h)?,
            matrix(src, &n("attn_v.weight"), kvd, h)?,
        ];
        let qk_norm = if cfg.qk_norm {
            let vec = |s: &str| -> Result<B::Vector, ModelError> {
                packed::<B, _>(&n(s), b.vector(&vector(src, &n(s), hd)?))
            };
            Some((vec("attn_q_norm.weight")?, vec("attn_k_norm.weight")?))
        } else {
            None
        };
        let norm = |s: &str| -> Result<B::Vector, ModelError> {
            packed::<B, _>(&n(s), b.vector(&vector(src, &n(s), h)?))
        };
        let gate_up = vec![
            matrix(src, &n("ffn_gate.weight"), f, h)?,
            matrix(src, &n("ffn_up.weight"), f, h)?,
        ];
        layers.push(Layer {
            attn_norm: norm("attn_norm.weight")?,
            qkv: packed::<B, _>(&n("attn_qkv"), b.matrix(qkv, qkv_bias))?,
            qk_norm,
            wo: packed::<B, _>(
                &n("attn_output.weight"),
                b.matrix(vec![matrix(src, &n("attn_output.weight"), h, qd)?], None),
            )?,
            ffn_norm: norm("ffn_norm.weight")?,
            gate_up: packed::<B, _>(&n("ffn_gate_up"), b.matrix(gate_up, None))?,
            down: packed::<B, _>(
                &n("ffn_down.weight"),
                b.matrix(vec![matrix(src, &n("ffn_down.weight"), h, f)?], None),
            )?,
        });
    }
    let rope_freqs = match src.tensor("rope_freqs.weight") {
        Some(_) => Some(vector(src, "rope_freqs.weight", hd / 2)?),
        None => None,
    };
    let rope = RopeParams {
        style: cfg.rope_style,
        head_dim: hd,
        inv_freq: cfg.rope_inv_freq(rope_freqs.as_deref()),
        attention_factor: cfg.rope_scaling.attention_factor() as f32,
    };
    Ok(Weights {
        embed,
        layers,
        final_norm: packed::<B, _>(
            "output_norm.weight",
            b.vector(&vector(src, "output_norm.weight", h)?),
        )?,
        lm_head,
        rope: packed::<B, _>("rope", b.rope(&rope))?,
    })
}

/// A packing result with the backend and tensor named in its error.
fn packed<B: Pack, T>(name: &str, r: Result<T, String>) -> Result<T, ModelError> {
    r.map_err(|e| ModelError::Format(format!("{} backend, `{name}`: {e}", B::NAME)))
}

/// Total bytes of CPU weights read per decoded token (all matrices, once each; the
/// embedding table is read one row per token and not counted).
pub fn bytes_per_token(w: &Weights<CpuBackend>) -> usize {
    let l: usize = w
        .layers
        .iter()
        .map(|l| {
            l.qkv.size_bytes() + l.wo.size_bytes() + l.gate_up.size_bytes() + l.down.size_bytes()
        })
        .sum();
    l + w.lm_head.size_bytes()
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
}
