"""Optional cross-check of the tiny Qwen3 checkpoint and its goldens
(tests/golden/qwen3_tiny*, written by make_qwen3.py) against transformers'
own Qwen3 implementation.

    python tests/reference/crosscheck_qwen3.py   (a venv with requirements-crosscheck.txt)

1. The HF directory loads as `Qwen3ForCausalLM` with no missing or unexpected
   weights; run in float64 (`model.double()`, eager attention) its first-step
   logits match the golden's (within 1e-5: transformers keeps its RMSNorm and
   RoPE tables in float32 even in a float64 model) and its greedy continuations (`generate(do_sample=False)`,
   with its KV cache) equal the golden's ids.
2. The GGUF file's tensors, read by transformers' GGUF loader
   (`from_pretrained(dir, gguf_file=..., config=<the HF config>)`, which maps
   llama.cpp names back to HF names, dequantizes, and undoes the Q/K
   permutation only for llama-family files), are the HF directory's weights,
   tensor by tensor. (Its config reader ignores qwen3.attention.key_length and
   would assume head_dim 128, hence the HF config.)
3. AutoTokenizer on the HF directory encodes the golden prompts to the same ids.
4. The same float64 model with transformers' three float32 islands lifted to
   float64 (Qwen3RMSNorm's cast, the RoPE cos/sin tables, eager attention's
   float32 softmax; monkeypatched, written for transformers 5.23.0): its
   first-step logits then match the golden's to 1e-12, so the remaining 1e-6
   of step 1 is float32 rounding inside transformers, not a model difference.

Prints the largest logit difference; exits non-zero on any mismatch.
"""

import json
import os
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.models.qwen3 import modeling_qwen3

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = os.path.join(os.path.dirname(HERE), "golden")


def lift_float32_islands(cfg):
    """Make transformers' Qwen3 compute its RMSNorm, RoPE tables and attention
    softmax in the activations' dtype (float64 here) instead of float32."""

    def rmsnorm(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon))

    def rotary(self, x, position_ids):
        dim = cfg.head_dim
        inv = 1.0 / (float(cfg.rope_parameters["rope_theta"]) ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
        ang = position_ids.double()[..., None] * inv
        emb = torch.cat((ang, ang), dim=-1)
        return emb.cos().to(x.dtype), emb.sin().to(x.dtype)

    softmax = torch.nn.functional.softmax

    class F:  # modeling_qwen3's `nn.functional`, with softmax ignoring dtype=float32
        def __getattr__(self, name):
            return getattr(torch.nn.functional, name)

        @staticmethod
        def softmax(x, dim=None, dtype=None, **kw):
            return softmax(x, dim=dim, **kw)

    class NN:
        def __getattr__(self, name):
            return getattr(torch.nn, name)

        functional = F()

    modeling_qwen3.Qwen3RMSNorm.forward = rmsnorm
    modeling_qwen3.Qwen3RotaryEmbedding.forward = rotary
    modeling_qwen3.nn = NN()


def main():
    with open(os.path.join(GOLDEN, "qwen3_tiny.json")) as f:
        gold = json.load(f)
    hf_dir = os.path.join(GOLDEN, gold["model"]["hf_dir"])
    gguf_path = os.path.join(GOLDEN, gold["model"]["gguf"])
    ok = True

    model, info = AutoModelForCausalLM.from_pretrained(
        hf_dir, dtype=torch.float32, attn_implementation="eager", output_loading_info=True
    )
    print("class:", type(model).__name__, "loading info:", {k: v for k, v in info.items() if v})
    if any(info.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")):
        ok = False
    model = model.double().eval()

    tok = AutoTokenizer.from_pretrained(hf_dir)
    worst = 0.0
    for c in gold["cases"]:
        ids = c["prompt_token_ids"]
        if c["prompt_text"] is not None:
            got = tok(c["prompt_text"], add_special_tokens=False)["input_ids"]
            if got != ids:
                print(f"{c['name']}: AutoTokenizer ids {got} != golden {ids}")
                ok = False
        x = torch.tensor([ids])
        with torch.no_grad():
            logits = model(x).logits[0, -1]
        want = torch.tensor(c["first_step_logits"], dtype=torch.float64)
        d = float((logits - want).abs().max())
        worst = max(worst, d)
        with torch.no_grad():
            out = model.generate(
                x,
                attention_mask=torch.ones_like(x),  # id 0 in a prompt is a token, not padding
                max_new_tokens=len(c["generated_token_ids"]),
                do_sample=False,
                eos_token_id=gold["model"]["eos_token_id"],
                pad_token_id=0,
            )
        gen = out[0, len(ids):].tolist()
        same = gen == c["generated_token_ids"]
        ok &= same and d < 1e-5
        print(f"{c['name']}: first-step max |dlogit| {d:.3g}; greedy ids {'equal' if same else f'DIFFER {gen}'}")
    print(f"transformers (float64) vs golden: largest first-step logit difference {worst:.3g}")

    # transformers' GGUF config reader (5.23.0) does not map qwen3.attention.key_length to
    # head_dim (Qwen3Config's default, 128, is every released Qwen3's), so the config is
    # the HF directory's; the weights, their names and layouts come from the GGUF.
    g = AutoModelForCausalLM.from_pretrained(
        os.path.dirname(gguf_path), gguf_file=os.path.basename(gguf_path), config=model.config
    )
    hs, gs = model.state_dict(), g.state_dict()
    bad = set(hs) != set(gs)
    if bad:
        print("GGUF vs HF state_dict keys differ:", sorted(set(hs) ^ set(gs)))
    for k in sorted(set(hs) & set(gs)):
        if not torch.equal(hs[k].double(), gs[k].double()):
            print(f"GGUF vs HF: {k} differs (max {float((hs[k].double() - gs[k].double()).abs().max()):.3g})")
            bad = True
    print("GGUF (transformers' GGUF loader) vs HF directory: weights", "DIFFER" if bad else "identical")
    ok &= not bad

    lift_float32_islands(model.config)
    worst = 0.0
    for c in gold["cases"]:
        with torch.no_grad():
            logits = model(torch.tensor([c["prompt_token_ids"]])).logits[0, -1]
        worst = max(worst, float((logits - torch.tensor(c["first_step_logits"], dtype=torch.float64)).abs().max()))
    print(f"transformers, all float64, vs golden: largest first-step logit difference {worst:.3g}")
    ok &= worst < 1e-12
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
