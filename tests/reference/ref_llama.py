"""Reference Llama / Qwen2 / Qwen3 forward pass (numpy, float64) for ponder's golden tests.

Reads a GGUF file with the `gguf` Python package, dequantizes every tensor
with `gguf.quants.dequantize` (-> float32) and then does all arithmetic in
float64, so its logits are the "true" values for the quantized weights.
`Llama.from_hf_dir` reads a Hugging Face directory instead (config.json and
F32/F16/BF16 *.safetensors, parsed by hand) into the same structure.

Model (llama.cpp's "llama", "qwen2" and "qwen3" architectures, as stored in
GGUF):

    x = token_embd[token]
    for each layer:
        h  = rmsnorm(x) * attn_norm
        q, k, v = Wq h, Wk h, Wv h            (split into heads of head_dim;
                                               + bq, bk, bv where the file has
                                               attn_{q,k,v}.bias: qwen2)
        q, k = rmsnorm(q) * attn_q_norm,      (per head, over head_dim, same
               rmsnorm(k) * attn_k_norm        eps; only where the file has
                                               attn_{q,k}_norm.weight: qwen3)
        q, k = rope(q, pos), rope(k, pos)     (llama: interleaved pairs;
                                               qwen2/qwen3: NeoX halves, see
                                               rope())
        att = softmax(q k^T / sqrt(head_dim) + causal mask)   (GQA: query
              head i reads kv head i // (n_head / n_head_kv))
        x  = x + Wo (att v)
        h  = rmsnorm(x) * ffn_norm
        x  = x + Wdown (silu(Wgate h) * Wup h)
    logits = (rmsnorm(x) * output_norm) @ output^T   (output = token_embd when
                                                      output.weight is absent)

Every hyper-parameter comes from the GGUF metadata (`llama.*` / `qwen2.*` /
`qwen3.*`, including the RoPE base). head_dim is `{arch}.attention.key_length`
when the file has it (qwen3: may differ from n_embd / n_head; the attention
scale is 1/sqrt(head_dim) and RoPE turns all of it unless
`rope.dimension_count` says otherwise), else n_embd / n_head. qwen2 keeps an
untied `output.weight`; qwen3 may or may not.

Usage:
    python ref_llama.py MODEL.gguf "prompt text" [N_TOKENS]
    python ref_llama.py HF_DIR "prompt text" [N_TOKENS]   (tokenizer.json)
"""

import json
import os
import sys
from dataclasses import dataclass

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize


ARCHS = ("llama", "qwen2", "qwen3")
NEOX_ARCHS = ("qwen2", "qwen3")


@dataclass
class Hparams:
    arch: str
    n_layer: int
    n_embd: int
    n_ff: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_rot: int
    rope_base: float
    rms_eps: float
    n_vocab: int
    context_length: int
    # RoPE pairing: False = interleaved (x[2i], x[2i+1]) as llama.cpp's llama;
    # True = NeoX halves (x[i], x[i + n_rot/2]) as llama.cpp's qwen2 / qwen3
    # (and every Hugging Face checkpoint: rotate_half).
    rope_neox: bool


def _scalar(reader, key, default=None):
    f = reader.fields.get(key)
    if f is None:
        if default is None:
            raise KeyError(key)
        return default
    return f.contents()


def read_hparams(reader):
    arch = _scalar(reader, "general.architecture")
    if arch not in ARCHS:
        raise ValueError(f"unsupported architecture {arch!r} (supported: {', '.join(ARCHS)})")
    key = lambda k: f"{arch}.{k}"  # noqa: E731
    n_embd = int(_scalar(reader, key("embedding_length")))
    n_head = int(_scalar(reader, key("attention.head_count")))
    # llama.cpp: n_embd_head_k = key_length if present, else n_embd / n_head
    head_dim = int(_scalar(reader, key("attention.key_length"), n_embd // n_head))
    v_dim = int(_scalar(reader, key("attention.value_length"), head_dim))
    if v_dim != head_dim:
        raise ValueError(f"value_length {v_dim} != key_length {head_dim} is not handled")
    n_vocab = _scalar(reader, key("vocab_size"), -1)
    if n_vocab == -1:
        n_vocab = len(reader.fields["tokenizer.ggml.tokens"].data)
    return Hparams(
        arch=arch,
        n_layer=int(_scalar(reader, key("block_count"))),
        n_embd=n_embd,
        n_ff=int(_scalar(reader, key("feed_forward_length"))),
        n_head=n_head,
        n_head_kv=int(_scalar(reader, key("attention.head_count_kv"), n_head)),
        head_dim=head_dim,
        n_rot=int(_scalar(reader, key("rope.dimension_count"), head_dim)),
        # float32 values in the file, widened exactly to Python floats
        rope_base=float(_scalar(reader, key("rope.freq_base"), 10000.0)),
        rms_eps=float(_scalar(reader, key("attention.layer_norm_rms_epsilon"))),
        n_vocab=int(n_vocab),
        context_length=int(_scalar(reader, key("context_length"))),
        rope_neox=arch in NEOX_ARCHS,
    )


def load_tensor(t):
    """Dequantize one GGUF tensor into a float64 array in numpy (row-major)
    order: GGUF shape [ne0, ne1] becomes numpy shape (ne1, ne0), so a matrix
    is (out_features, in_features)."""
    w = dequantize(t.data, t.tensor_type)  # float32
    shape = tuple(int(d) for d in reversed(t.shape))
    return np.asarray(w, dtype=np.float64).reshape(shape)


# Hugging Face tensor names -> GGUF names (llama.cpp's convert_hf_to_gguf
# mapping for these architectures; `{}` is the layer index).
HF_TO_GGUF = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
HF_LAYER_TO_GGUF = {
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.q_norm.weight": "attn_q_norm.weight",
    "self_attn.k_norm.weight": "attn_k_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


def hf_to_gguf_name(name):
    if name in HF_TO_GGUF:
        return HF_TO_GGUF[name]
    parts = name.split(".", 3)  # model, layers, N, rest
    if len(parts) == 4 and parts[:2] == ["model", "layers"] and parts[3] in HF_LAYER_TO_GGUF:
        return f"blk.{int(parts[2])}.{HF_LAYER_TO_GGUF[parts[3]]}"
    raise ValueError(f"unknown Hugging Face tensor name {name!r}")


def read_safetensors(path):
    """{name: float32 array} from one .safetensors file: an 8-byte
    little-endian header length, a JSON header {name: {dtype, shape,
    data_offsets: [begin, end)} (+ "__metadata__")}, then the raw
    little-endian data."""
    with open(path, "rb") as f:
        blob = f.read()
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + n].decode("utf-8"))
    data = memoryview(blob)[8 + n :]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        raw = data[b:e]
        dt = info["dtype"]
        if dt == "F32":
            a = np.frombuffer(raw, dtype="<f4")
        elif dt == "F16":
            a = np.frombuffer(raw, dtype="<f2").astype(np.float32)
        elif dt == "BF16":
            a = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            raise ValueError(f"{path}: tensor {name!r} has dtype {dt}, not handled")
        shape = tuple(info["shape"])
        assert a.size == int(np.prod(shape, dtype=np.int64)), name
        out[name] = a.reshape(shape).astype(np.float32)
    return out


def read_hf_config(path):
    """(Hparams, tie_word_embeddings) from a Hugging Face config.json. RoPE is
    always NeoX (rotate_half) for HF checkpoints. The RMS epsilon and RoPE base
    are rounded to float32, as GGUF stores them and as torch applies them to
    float32 activations."""
    with open(path) as f:
        c = json.load(f)
    arch = c.get("model_type")
    if arch not in ARCHS:
        raise ValueError(f"unsupported model_type {arch!r} (supported: {', '.join(ARCHS)})")
    n_embd = int(c["hidden_size"])
    n_head = int(c["num_attention_heads"])
    head_dim = int(c.get("head_dim") or n_embd // n_head)
    rope = c.get("rope_parameters") or {}
    scaling = c.get("rope_scaling") or {}
    for r in (rope, scaling):
        kind = r.get("rope_type", r.get("type", "default"))
        if kind != "default":
            raise ValueError(f"rope type {kind!r} is not handled")
    theta = c.get("rope_theta", rope.get("rope_theta", 10000.0))
    if arch == "qwen2":
        assert c.get("attention_bias", True), "qwen2 without Q/K/V bias"
    elif c.get("attention_bias", False):
        raise ValueError(f"{arch} with attention_bias is not handled")
    hp = Hparams(
        arch=arch,
        n_layer=int(c["num_hidden_layers"]),
        n_embd=n_embd,
        n_ff=int(c["intermediate_size"]),
        n_head=n_head,
        n_head_kv=int(c.get("num_key_value_heads") or n_head),
        head_dim=head_dim,
        n_rot=head_dim,
        rope_base=float(np.float32(theta)),
        rms_eps=float(np.float32(c["rms_norm_eps"])),
        n_vocab=int(c["vocab_size"]),
        context_length=int(c["max_position_embeddings"]),
        rope_neox=True,
    )
    return hp, bool(c.get("tie_word_embeddings", False))


class Llama:
    def __init__(self, gguf_path):
        reader = GGUFReader(gguf_path)
        self.reader = reader
        tensors = {t.name: t for t in reader.tensors}
        self._build(read_hparams(reader), set(tensors), lambda name: load_tensor(tensors[name]))

    @classmethod
    def from_hf_dir(cls, path):
        """A Hugging Face directory (config.json, *.safetensors): tensors are
        renamed to their GGUF names (`HF_TO_GGUF`) and kept in HF's layout,
        which for Q/K rows is the NeoX order (no permutation)."""
        self = cls.__new__(cls)
        self.reader = None
        hp, tied = read_hf_config(os.path.join(path, "config.json"))
        raw = {}
        for f in sorted(os.listdir(path)):
            if f.endswith(".safetensors"):
                raw.update(read_safetensors(os.path.join(path, f)))
        tensors = {hf_to_gguf_name(n): a for n, a in raw.items()}
        assert len(tensors) == len(raw)
        if tied:
            assert "output.weight" not in tensors, "tie_word_embeddings but lm_head.weight present"
        else:
            assert "output.weight" in tensors, "lm_head.weight missing (tie_word_embeddings is false)"
        self._build(hp, set(tensors), lambda name: tensors[name].astype(np.float64))
        return self

    def _build(self, hp, names, W):
        """`names`: the tensor names present (GGUF naming); `W(name)`: that
        tensor as float64 in numpy (out, in) order."""
        self.hp = hp
        self.tok_embd = W("token_embd.weight")  # (n_vocab, n_embd)
        assert self.tok_embd.shape == (hp.n_vocab, hp.n_embd)
        self.output_norm = W("output_norm.weight")
        # tied embeddings: no output.weight -> reuse token_embd
        self.output = W("output.weight") if "output.weight" in names else self.tok_embd
        self.layers = []
        for i in range(hp.n_layer):
            p = f"blk.{i}."
            layer = {
                "attn_norm": W(p + "attn_norm.weight"),
                "wq": W(p + "attn_q.weight"),
                "wk": W(p + "attn_k.weight"),
                "wv": W(p + "attn_v.weight"),
                "wo": W(p + "attn_output.weight"),
                "ffn_norm": W(p + "ffn_norm.weight"),
                "w_gate": W(p + "ffn_gate.weight"),
                "w_up": W(p + "ffn_up.weight"),
                "w_down": W(p + "ffn_down.weight"),
            }
            for b in ("q", "k", "v"):  # qwen2: Q/K/V biases
                if p + f"attn_{b}.bias" in names:
                    layer["b" + b] = W(p + f"attn_{b}.bias")
            if hp.arch == "qwen3":  # per-head RMSNorm of q and k (required)
                layer["q_norm"] = W(p + "attn_q_norm.weight")
                layer["k_norm"] = W(p + "attn_k_norm.weight")
                assert layer["q_norm"].shape == layer["k_norm"].shape == (hp.head_dim,)
            else:
                assert p + "attn_q_norm.weight" not in names, f"{hp.arch} with attn_q_norm"
            assert layer["wq"].shape == (hp.n_head * hp.head_dim, hp.n_embd)
            assert layer["wk"].shape == (hp.n_head_kv * hp.head_dim, hp.n_embd)
            assert layer["wv"].shape == (hp.n_head_kv * hp.head_dim, hp.n_embd)
            assert layer["wo"].shape == (hp.n_embd, hp.n_head * hp.head_dim)
            assert layer["w_gate"].shape == (hp.n_ff, hp.n_embd)
            assert layer["w_down"].shape == (hp.n_embd, hp.n_ff)
            self.layers.append(layer)

        # RoPE inverse frequencies: theta_i = base^(-2i/n_rot), i in [0, n_rot/2)
        i = np.arange(hp.n_rot // 2, dtype=np.float64)
        self.inv_freq = hp.rope_base ** (-2.0 * i / hp.n_rot)

    # -- building blocks -------------------------------------------------

    def rmsnorm(self, x, w):
        ms = np.mean(x * x, axis=-1, keepdims=True)
        return x / np.sqrt(ms + self.hp.rms_eps) * w

    def rope(self, x, positions):
        """RoPE with angle pos * base^(-2i/n_rot) for pair i, i in [0, n_rot/2).
        llama: interleaved ("normal", GPT-J style) pairs (x[2i], x[2i+1]) of
        each head, as llama.cpp applies it to the llama architecture.
        qwen2 / qwen3: NeoX ("rotate-half") pairs (x[i], x[i + n_rot/2]), as
        llama.cpp applies it to them (their GGUF Q/K rows are not permuted) and
        as transformers' rotate_half does.
        x: (seq, n_heads, head_dim); positions: (seq,)."""
        n_rot = self.hp.n_rot
        ang = positions[:, None].astype(np.float64) * self.inv_freq[None, :]  # (seq, n_rot/2)
        cos = np.cos(ang)[:, None, :]
        sin = np.sin(ang)[:, None, :]
        out = x.copy()
        if self.hp.rope_neox:
            half = n_rot // 2
            x0 = x[..., 0:half]
            x1 = x[..., half:n_rot]
            out[..., 0:half] = x0 * cos - x1 * sin
            out[..., half:n_rot] = x0 * sin + x1 * cos
            return out
        x0 = x[..., 0:n_rot:2]
        x1 = x[..., 1:n_rot:2]
        out[..., 0:n_rot:2] = x0 * cos - x1 * sin
        out[..., 1:n_rot:2] = x0 * sin + x1 * cos
        return out

    @staticmethod
    def silu(x):
        return x / (1.0 + np.exp(-x))

    # -- forward -----------------------------------------------------------

    def new_cache(self):
        return [{"k": None, "v": None} for _ in range(self.hp.n_layer)]

    def forward(self, tokens, cache, start_pos):
        """Run `tokens` (positions start_pos..start_pos+len-1) through the
        model, appending their keys/values to `cache`. Returns the logits of
        every position, shape (len(tokens), n_vocab), float64."""
        hp = self.hp
        n = len(tokens)
        positions = np.arange(start_pos, start_pos + n)
        x = self.tok_embd[np.asarray(tokens)]  # (n, n_embd)
        group = hp.n_head // hp.n_head_kv
        scale = 1.0 / np.sqrt(hp.head_dim)
        # causal mask over [cached + new] keys
        n_ctx = start_pos + n
        key_pos = np.arange(n_ctx)
        mask = np.where(key_pos[None, :] <= positions[:, None], 0.0, -np.inf)  # (n, n_ctx)

        for layer, c in zip(self.layers, cache):
            h = self.rmsnorm(x, layer["attn_norm"])
            q, k, v = h @ layer["wq"].T, h @ layer["wk"].T, h @ layer["wv"].T
            if "bq" in layer:
                q, k, v = q + layer["bq"], k + layer["bk"], v + layer["bv"]
            q = q.reshape(n, hp.n_head, hp.head_dim)
            k = k.reshape(n, hp.n_head_kv, hp.head_dim)
            v = v.reshape(n, hp.n_head_kv, hp.head_dim)
            if "q_norm" in layer:  # qwen3: RMSNorm over each head's head_dim
                q = self.rmsnorm(q, layer["q_norm"])
                k = self.rmsnorm(k, layer["k_norm"])
            q = self.rope(q, positions)
            k = self.rope(k, positions)
            if c["k"] is None:
                c["k"], c["v"] = k, v
            else:
                c["k"] = np.concatenate([c["k"], k], axis=0)
                c["v"] = np.concatenate([c["v"], v], axis=0)
            K, V = c["k"], c["v"]  # (n_ctx, n_head_kv, head_dim)
            assert K.shape[0] == n_ctx

            att_out = np.empty((n, hp.n_head, hp.head_dim))
            for hd in range(hp.n_head):
                kv = hd // group
                scores = (q[:, hd, :] @ K[:, kv, :].T) * scale + mask  # (n, n_ctx)
                scores = scores - scores.max(axis=-1, keepdims=True)
                p = np.exp(scores)
                p /= p.sum(axis=-1, keepdims=True)
                att_out[:, hd, :] = p @ V[:, kv, :]
            x = x + att_out.reshape(n, -1) @ layer["wo"].T

            h = self.rmsnorm(x, layer["ffn_norm"])
            g = h @ layer["w_gate"].T
            u = h @ layer["w_up"].T
            x = x + (self.silu(g) * u) @ layer["w_down"].T

        x = self.rmsnorm(x, self.output_norm)
        return x @ self.output.T

    def greedy(self, prompt_ids, max_new_tokens, eos_id=None):
        """Greedy decoding with a KV cache. Returns (generated_ids,
        per_step_logits) where per_step_logits[i] is the logit vector that
        produced generated_ids[i]. Stops after emitting eos_id (included)."""
        cache = self.new_cache()
        logits = self.forward(list(prompt_ids), cache, 0)[-1]
        pos = len(prompt_ids)
        out, step_logits = [], []
        for _ in range(max_new_tokens):
            tok = int(np.argmax(logits))  # ties -> lowest id
            out.append(tok)
            step_logits.append(logits)
            if eos_id is not None and tok == eos_id:
                break
            logits = self.forward([tok], cache, pos)[-1]
            pos += 1
        return out, step_logits


if __name__ == "__main__":
    sys.path.insert(0, __import__("os").path.dirname(__file__))
    from ref_tokenizer import build_tokenizer, decode, encode

    path, text = sys.argv[1], sys.argv[2]
    n_new = int(sys.argv[3]) if len(sys.argv) > 3 else 32
    if os.path.isdir(path):
        from tokenizers import Tokenizer

        model = Llama.from_hf_dir(path)
        tok = Tokenizer.from_file(os.path.join(path, "tokenizer.json"))
        with open(os.path.join(path, "tokenizer_config.json")) as f:
            eos_tok = json.load(f)["eos_token"]
        eos = tok.token_to_id(eos_tok if isinstance(eos_tok, str) else eos_tok["content"])
    else:
        model = Llama(path)
        tok = build_tokenizer(path, model.reader)
        eos = int(model.reader.fields["tokenizer.ggml.eos_token_id"].contents())
    ids = encode(tok, text)
    gen, _ = model.greedy(ids, n_new, eos_id=eos)
    print(gen)
    print(repr(decode(tok, gen)))
