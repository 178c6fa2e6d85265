"""Reference Llama / Qwen2 forward pass (numpy, float64) for ponder's golden tests.

Reads a GGUF file with the `gguf` Python package, dequantizes every tensor
with `gguf.quants.dequantize` (-> float32) and then does all arithmetic in
float64, so its logits are the "true" values for the quantized weights.

Model (llama.cpp's "llama" and "qwen2" architectures, as stored in GGUF):

    x = token_embd[token]
    for each layer:
        h  = rmsnorm(x) * attn_norm
        q, k, v = Wq h, Wk h, Wv h            (split into heads of head_dim;
                                               + bq, bk, bv where the file has
                                               attn_{q,k,v}.bias: qwen2)
        q, k = rope(q, pos), rope(k, pos)     (llama: interleaved pairs;
                                               qwen2: NeoX halves, see rope())
        att = softmax(q k^T / sqrt(head_dim) + causal mask)   (GQA: query
              head i reads kv head i // (n_head / n_head_kv))
        x  = x + Wo (att v)
        h  = rmsnorm(x) * ffn_norm
        x  = x + Wdown (silu(Wgate h) * Wup h)
    logits = (rmsnorm(x) * output_norm) @ output^T   (output = token_embd when
                                                      output.weight is absent)

Every hyper-parameter comes from the GGUF metadata (`llama.*` / `qwen2.*`,
including the RoPE base). qwen2 keeps an untied `output.weight`.

Usage:
    python ref_llama.py MODEL.gguf "prompt text" [N_TOKENS]
"""

import sys
from dataclasses import dataclass

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize


ARCHS = ("llama", "qwen2")


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
    # True = NeoX halves (x[i], x[i + n_rot/2]) as llama.cpp's qwen2.
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
    head_dim = n_embd // n_head
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
        rope_neox=arch == "qwen2",
    )


def load_tensor(t):
    """Dequantize one GGUF tensor into a float64 array in numpy (row-major)
    order: GGUF shape [ne0, ne1] becomes numpy shape (ne1, ne0), so a matrix
    is (out_features, in_features)."""
    w = dequantize(t.data, t.tensor_type)  # float32
    shape = tuple(int(d) for d in reversed(t.shape))
    return np.asarray(w, dtype=np.float64).reshape(shape)


class Llama:
    def __init__(self, gguf_path):
        reader = GGUFReader(gguf_path)
        self.reader = reader
        self.hp = hp = read_hparams(reader)
        tensors = {t.name: t for t in reader.tensors}
        W = lambda name: load_tensor(tensors[name])

        self.tok_embd = W("token_embd.weight")  # (n_vocab, n_embd)
        assert self.tok_embd.shape == (hp.n_vocab, hp.n_embd)
        self.output_norm = W("output_norm.weight")
        # tied embeddings: no output.weight -> reuse token_embd
        self.output = W("output.weight") if "output.weight" in tensors else self.tok_embd
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
                if p + f"attn_{b}.bias" in tensors:
                    layer["b" + b] = W(p + f"attn_{b}.bias")
            assert layer["wq"].shape == (hp.n_head * hp.head_dim, hp.n_embd)
            assert layer["wk"].shape == (hp.n_head_kv * hp.head_dim, hp.n_embd)
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
        qwen2: NeoX ("rotate-half") pairs (x[i], x[i + n_rot/2]), as llama.cpp
        applies it to qwen2 (whose GGUF Q/K rows are not permuted).
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
    model = Llama(path)
    tok = build_tokenizer(path, model.reader)
    ids = encode(tok, text)
    eos = int(model.reader.fields["tokenizer.ggml.eos_token_id"].contents())
    gen, _ = model.greedy(ids, n_new, eos_id=eos)
    print(gen)
    print(repr(decode(tok, gen)))
