"""Write a tiny random-weight Qwen3 checkpoint in two formats and its goldens.

    /tmp/refvenv/bin/python tests/reference/make_qwen3.py [--vocab-from PATH] [--out DIR]

Outputs (defaults relative to the repository root):
    tests/golden/qwen3_tiny/qwen3-tiny.gguf            GGUF, general.architecture = qwen3
    tests/golden/qwen3_tiny/hf/config.json             Hugging Face directory, model_type = qwen3
    tests/golden/qwen3_tiny/hf/model.safetensors
    tests/golden/qwen3_tiny/hf/tokenizer.json
    tests/golden/qwen3_tiny/hf/tokenizer_config.json
    tests/golden/qwen3_tiny.json                       greedy ids + first-step logits

The model (SHAPE below): hidden 64, 4 query heads and 2 KV heads of head_dim 32
(so n_head * head_dim = 128 != hidden), FFN 96, 2 layers, vocabulary 1024,
untied output, RoPE base 1e6, RMS eps 1e-6. Weights are uniform random values
from a per-tensor splitmix64 stream (seeded by SEED and the tensor's name; no
numpy RNG, so the values do not depend on the numpy version), 24-bit fractions
that are exact in float32. The GGUF stores every tensor as F32 except
`token_embd.weight`, which is Q8_0 (quantized with gguf-py, checked against
ref_quants.py); the HF directory stores the same values, the embedding being
the dequantized Q8_0 table, all as F32. So both files hold exactly the same
weights, and the reference must give the same logits for both (asserted).

Layouts: HF tensors are (out_features, in_features) as PyTorch keeps them;
GGUF tensors are the same arrays (ggml dims reversed), with NO Q/K row
permutation: llama.cpp's converter permutes Q/K only for its llama-family
classes; Qwen2Model / Qwen3Model keep HF's order and llama.cpp runs NeoX RoPE
(LLAMA_ROPE_TYPE_NEOX) for qwen3.

Tokenizer: the first 1024 tokens of SmolLM2's vocabulary (ids 0-16 its control
tokens, 17-251 its byte alphabet, 252-1023 the results of its first 772 merges,
which are exactly those merges in rank order), taken from
models/SmolLM2-135M-Instruct.Q4_1.gguf, so every id means what it means in
SmolLM2. It is written with Qwen's pre-tokenizer name (`qwen2`: NFC + Qwen2
split regex, as real Qwen3 GGUFs carry) and an equivalent tokenizer.json built
by ref_tokenizer.py. EOS = `<|im_end|>` = 2, BOS id 0 (`<|endoftext|>`, not
added), ChatML template.

Deterministic: running it again reproduces every file byte for byte (BLAS
pinned to one thread before numpy is imported).
"""

import os

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse
import json
import struct
import sys
import zlib

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader, GGUFWriter
from gguf.quants import dequantize as gguf_dequantize
from gguf.quants import quantize as gguf_quantize
from tokenizers import Tokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

from make_goldens import render_chat, write_json  # noqa: E402
from ref_llama import Llama  # noqa: E402
from ref_quants import dequantize as ref_dequantize  # noqa: E402
from ref_tokenizer import build_tokenizer, decode, encode  # noqa: E402

DEFAULT_VOCAB_FROM = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
DEFAULT_OUT = os.path.join(ROOT, "tests", "golden")
SUBDIR = "qwen3_tiny"
GGUF_NAME = "qwen3-tiny.gguf"

# ---------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------

SEED = 0x5157454E33  # "QWEN3"
SHAPE = {
    "vocab": 1024,
    "hidden": 64,
    "heads": 4,
    "kv_heads": 2,
    "head_dim": 32,
    "ffn": 96,
    "layers": 2,
}
ROPE_THETA = 1000000.0
RMS_EPS = 1e-6
CONTEXT = 40960
N_GREEDY = 16
EOS_ID = 2  # <|im_end|>
BOS_ID = 0  # <|endoftext|> (never added: add_bos_token = false)
FIRST_MERGE_ID = 252  # SmolLM2: token id of merge rank r is 252 + r

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# (name, kind, prompt): kind "raw" = text, "chat" = messages rendered with the
# template (add_generation_prompt), "ids" = a token id list used as is.
CASES = [
    ("raw_fox", "raw", "The quick brown fox jumps over the lazy dog."),
    (
        "chat_capital",
        "chat",
        [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What is the capital of France?"},
        ],
    ),
    (
        "raw_long_numbers",
        "raw",
        "In 2024 the river rose by 3.5 meters, the highest level since 1958. "
        "Engineers said the new walls would hold; the old ones, built in the "
        "1930s, did not. Residents were asked to move their cars (and boats!) "
        "to higher ground before Friday.",
    ),
    # control tokens, the byte alphabet's ends, the last merges, the last id
    ("ids_vocab_edges", "ids", [1, 1023, 17, 251, 252, 0, 16, 999, 1022, 500, 3, 2, 700]),
]

# ---------------------------------------------------------------------------
# Weights
# ---------------------------------------------------------------------------


def _splitmix64(seed, n):
    """n outputs of splitmix64 started at `seed` (uint64 array)."""
    i = np.arange(1, n + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = np.uint64(seed) + i * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return z


def uniform(name, shape, lo, hi):
    """float32 array of `shape`, values lo + (hi - lo) * k / 2^24 for 24-bit k
    drawn from the tensor's own stream (SEED xor crc32(name))."""
    n = int(np.prod(shape))
    k = (_splitmix64(SEED ^ zlib.crc32(name.encode()), n) >> np.uint64(40)).astype(np.float64)
    return (lo + (hi - lo) * (k / 2.0**24)).astype(np.float32).reshape(shape)


def hf_weights():
    """{HF name: float32 array} in PyTorch layout, before the embedding is
    quantized. Matrices are uniform in +-sqrt(3 / fan_in) (unit-variance
    outputs for unit-variance inputs), the LM head in +-0.5 (logits with a
    spread of a few units), the embedding in +-1; layer norms in [0.75, 1.25],
    q/k norms in [0.5, 1.5] (far enough from 1 that a missing or misplaced
    q/k norm changes the result)."""
    s = SHAPE
    h, hd, ff = s["hidden"], s["head_dim"], s["ffn"]
    qd, kvd = s["heads"] * hd, s["kv_heads"] * hd

    def mat(name, rows, cols):
        a = float(np.sqrt(3.0 / cols))
        return uniform(name, (rows, cols), -a, a)

    w = {
        "model.embed_tokens.weight": uniform("model.embed_tokens.weight", (s["vocab"], h), -1.0, 1.0),
        "model.norm.weight": uniform("model.norm.weight", (h,), 0.75, 1.25),
        "lm_head.weight": uniform("lm_head.weight", (s["vocab"], h), -0.5, 0.5),
    }
    for l in range(s["layers"]):
        p = f"model.layers.{l}."
        w[p + "input_layernorm.weight"] = uniform(p + "input_layernorm.weight", (h,), 0.75, 1.25)
        w[p + "self_attn.q_proj.weight"] = mat(p + "self_attn.q_proj.weight", qd, h)
        w[p + "self_attn.k_proj.weight"] = mat(p + "self_attn.k_proj.weight", kvd, h)
        w[p + "self_attn.v_proj.weight"] = mat(p + "self_attn.v_proj.weight", kvd, h)
        w[p + "self_attn.o_proj.weight"] = mat(p + "self_attn.o_proj.weight", h, qd)
        w[p + "self_attn.q_norm.weight"] = uniform(p + "self_attn.q_norm.weight", (hd,), 0.5, 1.5)
        w[p + "self_attn.k_norm.weight"] = uniform(p + "self_attn.k_norm.weight", (hd,), 0.5, 1.5)
        w[p + "post_attention_layernorm.weight"] = uniform(p + "post_attention_layernorm.weight", (h,), 0.75, 1.25)
        w[p + "mlp.gate_proj.weight"] = mat(p + "mlp.gate_proj.weight", ff, h)
        w[p + "mlp.up_proj.weight"] = mat(p + "mlp.up_proj.weight", ff, h)
        w[p + "mlp.down_proj.weight"] = mat(p + "mlp.down_proj.weight", h, ff)
    return w


# GGUF name for each HF name (llama.cpp's qwen3 tensor names), in the order the
# GGUF lists them.
def gguf_name(hf):
    fixed = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }
    if hf in fixed:
        return fixed[hf]
    _, _, l, rest = hf.split(".", 3)
    sub = {
        "input_layernorm.weight": "attn_norm.weight",
        "self_attn.q_proj.weight": "attn_q.weight",
        "self_attn.k_proj.weight": "attn_k.weight",
        "self_attn.v_proj.weight": "attn_v.weight",
        "self_attn.o_proj.weight": "attn_output.weight",
        "self_attn.q_norm.weight": "attn_q_norm.weight",
        "self_attn.k_norm.weight": "attn_k_norm.weight",
        "post_attention_layernorm.weight": "ffn_norm.weight",
        "mlp.gate_proj.weight": "ffn_gate.weight",
        "mlp.up_proj.weight": "ffn_up.weight",
        "mlp.down_proj.weight": "ffn_down.weight",
    }[rest]
    return f"blk.{int(l)}.{sub}"


def quantize_embedding(w):
    """Q8_0 bytes of the embedding (rows of 64 = 2 blocks) and the dequantized
    float32 table, checked bit for bit between gguf-py and ref_quants.py."""
    q = gguf_quantize(w, GGMLQuantizationType.Q8_0)  # uint8 (rows, 68)
    a = gguf_dequantize(q, GGMLQuantizationType.Q8_0).reshape(w.shape)
    b = ref_dequantize(q, "Q8_0").reshape(w.shape)
    assert a.dtype == b.dtype == np.float32 and np.array_equal(a.view(np.uint32), b.view(np.uint32))
    return q, a


# ---------------------------------------------------------------------------
# Tokenizer (a prefix of SmolLM2's vocabulary)
# ---------------------------------------------------------------------------


def sub_vocabulary(path, n):
    r = GGUFReader(path)
    f = lambda k: r.fields[k].contents()  # noqa: E731
    assert f("tokenizer.ggml.model") == "gpt2"
    tokens, types, merges = f("tokenizer.ggml.tokens"), f("tokenizer.ggml.token_type"), f("tokenizer.ggml.merges")
    assert tokens[EOS_ID] == "<|im_end|>" and tokens[BOS_ID] == "<|endoftext|>" and tokens[1] == "<|im_start|>"
    n_merges = n - FIRST_MERGE_ID
    index = {t: i for i, t in enumerate(tokens)}
    for rank, m in enumerate(merges[:n_merges]):  # merge r yields token 252 + r
        a, b = m.split(" ")
        assert tokens[FIRST_MERGE_ID + rank] == a + b
        assert index[a] < FIRST_MERGE_ID + rank and index[b] < FIRST_MERGE_ID + rank
    assert all(t == 3 for t in types[:17]) and all(t == 1 for t in types[17:n])
    return list(tokens[:n]), [int(t) for t in types[:n]], list(merges[:n_merges])


# ---------------------------------------------------------------------------
# Writers
# ---------------------------------------------------------------------------


def write_gguf(path, tokens, types, merges, weights, embd_q8):
    s = SHAPE
    w = GGUFWriter(path, "qwen3")
    w.add_name("qwen3-tiny-random")
    w.add_block_count(s["layers"])
    w.add_context_length(CONTEXT)
    w.add_embedding_length(s["hidden"])
    w.add_feed_forward_length(s["ffn"])
    w.add_head_count(s["heads"])
    w.add_head_count_kv(s["kv_heads"])
    w.add_key_length(s["head_dim"])
    w.add_value_length(s["head_dim"])
    w.add_rope_dimension_count(s["head_dim"])
    w.add_rope_freq_base(ROPE_THETA)
    w.add_layer_norm_rms_eps(RMS_EPS)
    w.add_file_type(0)  # ALL_F32 (all but the embedding)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(BOS_ID)
    w.add_eos_token_id(EOS_ID)
    w.add_pad_token_id(BOS_ID)
    w.add_add_bos_token(False)
    w.add_chat_template(CHAT_TEMPLATE)
    names = sorted(weights, key=lambda n: _gguf_order(gguf_name(n)))
    for hf in names:
        g = gguf_name(hf)
        if g == "token_embd.weight":
            w.add_tensor(g, embd_q8, raw_dtype=GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(g, np.ascontiguousarray(weights[hf], dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _gguf_order(g):
    top = ["token_embd.weight", "output_norm.weight", "output.weight"]
    if g in top:
        return (-1, top.index(g))
    per = ["attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "attn_q_norm", "attn_k_norm",
           "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"]
    _, l, sub, _ = g.split(".")
    return (int(l), per.index(sub))


def write_safetensors(path, tensors):
    """F32 safetensors by hand: u64 LE header size, JSON header (tensors in
    name order, offsets relative to the data), data back to back."""
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name], dtype="<f4")
        b = a.tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    header["__metadata__"] = {"format": "pt"}
    hb = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hb += b" " * (-len(hb) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for b in blobs:
            f.write(b)


def write_text(path, text):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)


def write_hf_dir(d, tok, tokens, hf_tensors):
    s = SHAPE
    os.makedirs(d, exist_ok=True)
    config = {
        "architectures": ["Qwen3ForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": BOS_ID,
        "eos_token_id": EOS_ID,
        "head_dim": s["head_dim"],
        "hidden_act": "silu",
        "hidden_size": s["hidden"],
        "initializer_range": 0.02,
        "intermediate_size": s["ffn"],
        "max_position_embeddings": CONTEXT,
        "max_window_layers": s["layers"],
        "model_type": "qwen3",
        "num_attention_heads": s["heads"],
        "num_hidden_layers": s["layers"],
        "num_key_value_heads": s["kv_heads"],
        "rms_norm_eps": RMS_EPS,
        "rope_scaling": None,
        "rope_theta": ROPE_THETA,
        "sliding_window": None,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": s["vocab"],
    }
    write_text(os.path.join(d, "config.json"), json.dumps(config, indent=2) + "\n")
    write_text(os.path.join(d, "tokenizer.json"), tok.to_str(pretty=True) + "\n")
    added = {
        str(i): {
            "content": tokens[i],
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for i in range(17)
    }
    tc = {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": added,
        "bos_token": None,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": tokens[EOS_ID],
        "errors": "replace",
        "model_max_length": CONTEXT,
        "pad_token": tokens[BOS_ID],
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }
    write_text(os.path.join(d, "tokenizer_config.json"), json.dumps(tc, indent=2, ensure_ascii=False) + "\n")
    write_safetensors(os.path.join(d, "model.safetensors"), hf_tensors)


# ---------------------------------------------------------------------------
# Goldens
# ---------------------------------------------------------------------------


def run_case(model, ids):
    gen, step_logits = model.greedy(ids, N_GREEDY, eos_id=EOS_ID)
    return gen, step_logits


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vocab-from", default=DEFAULT_VOCAB_FROM, help="SmolLM2 GGUF whose vocabulary prefix is used")
    ap.add_argument("--out", default=DEFAULT_OUT)
    args = ap.parse_args()
    ckpt = os.path.join(args.out, SUBDIR)
    hf_dir = os.path.join(ckpt, "hf")
    gguf_path = os.path.join(ckpt, GGUF_NAME)
    os.makedirs(hf_dir, exist_ok=True)

    tokens, types, merges = sub_vocabulary(args.vocab_from, SHAPE["vocab"])
    weights = hf_weights()
    embd_q8, embd = quantize_embedding(weights["model.embed_tokens.weight"])
    hf_tensors = dict(weights)
    hf_tensors["model.embed_tokens.weight"] = embd  # the Q8_0 values, exactly

    write_gguf(gguf_path, tokens, types, merges, weights, embd_q8)
    tok = build_tokenizer(gguf_path)
    write_hf_dir(hf_dir, tok, tokens, hf_tensors)
    tok_hf = Tokenizer.from_file(os.path.join(hf_dir, "tokenizer.json"))

    g = Llama(gguf_path)
    h = Llama.from_hf_dir(hf_dir)
    assert g.hp == h.hp, (g.hp, h.hp)
    assert g.hp.head_dim == 32 and g.hp.n_head * g.hp.head_dim != g.hp.n_embd and g.hp.rope_neox
    # Same weights, tensor by tensor (float64 copies of the same float32 values).
    assert np.array_equal(g.tok_embd, h.tok_embd) and np.array_equal(g.output, h.output)
    for lg, lh in zip(g.layers, h.layers):
        assert lg.keys() == lh.keys() and all(np.array_equal(lg[k], lh[k]) for k in lg)

    cases, worst = [], 0.0
    for name, kind, prompt in CASES:
        if kind == "ids":
            text, ids = None, list(prompt)
        else:
            text = render_chat(CHAT_TEMPLATE, prompt, True) if kind == "chat" else prompt
            ids = encode(tok, text)
            assert encode(tok_hf, text) == ids, name
        gen, steps = run_case(g, ids)
        gen_h, steps_h = run_case(h, ids)
        assert gen == gen_h, (name, gen, gen_h)
        diff = max(float(np.max(np.abs(a - b))) for a, b in zip(steps, steps_h))
        worst = max(worst, diff)
        margins = [float(np.diff(np.sort(lg)[-2:])[0]) for lg in steps]
        first = steps[0]
        order = np.argsort(-first, kind="stable")[:5]
        stopped = bool(gen and gen[-1] == EOS_ID)
        entry = {
            "name": name,
            "kind": kind,
            "prompt_text": text,
            "prompt_token_ids": ids,
            "generated_token_ids": gen,
            "stopped_at_eos": stopped,
            "generated_text": decode(tok, gen[:-1] if stopped else gen),
            "top2_margins": margins,
            "first_step_top5": [[int(i), float(first[i])] for i in order],
            "first_step_logits": [float(x) for x in first],
        }
        if kind == "chat":
            entry["messages"] = prompt
        cases.append(entry)
        print(f"{name}: {len(ids)} prompt ids -> {gen} {entry['generated_text']!r} "
              f"(min margin {min(margins):.4f}; GGUF vs HF max |dlogit| {diff:.3g})")
    assert worst <= 1e-12, worst

    sizes = {
        os.path.relpath(os.path.join(dp, f), args.out): os.path.getsize(os.path.join(dp, f))
        for dp, _, fs in os.walk(ckpt)
        for f in fs
    }
    golden = {
        "model": {
            "gguf": f"{SUBDIR}/{GGUF_NAME}",
            "hf_dir": f"{SUBDIR}/hf",
            "architecture": "qwen3",
            "vocab_size": SHAPE["vocab"],
            "hidden_size": SHAPE["hidden"],
            "num_heads": SHAPE["heads"],
            "num_kv_heads": SHAPE["kv_heads"],
            "head_dim": SHAPE["head_dim"],
            "intermediate_size": SHAPE["ffn"],
            "num_layers": SHAPE["layers"],
            "rope_theta": ROPE_THETA,
            "rms_norm_eps": RMS_EPS,
            "tied_embeddings": False,
            "eos_token_id": EOS_ID,
            "file_sizes": dict(sorted(sizes.items())),
        },
        "gguf_vs_hf_max_abs_logit_diff": worst,
        "cases": cases,
    }
    write_json(os.path.join(args.out, "qwen3_tiny.json"), golden)


if __name__ == "__main__":
    main()
