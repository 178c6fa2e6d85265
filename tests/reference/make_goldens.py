"""Write ponder's golden files (tests/golden/*.json) from the Python reference.

    /tmp/refvenv/bin/python tests/reference/make_goldens.py [--model PATH] [--out DIR]

Outputs (defaults relative to the repository root):
    tests/golden/tokenizer.json      text -> ids -> decoded text
    tests/golden/chat_template.json  messages -> rendered chat template -> ids
    tests/golden/greedy.json         prompt -> 32 greedy tokens (+ margins, top-5 logits)

Deterministic: running it again on the same setup reproduces the files
byte-for-byte (BLAS is pinned to one thread below before numpy is imported).
"""

import os

# Pin BLAS threading before numpy loads so float64 reductions are done in one
# fixed order every run.
for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse
import json
import sys

import numpy as np
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

from ref_llama import Llama  # noqa: E402
from ref_tokenizer import build_tokenizer, decode, encode  # noqa: E402

DEFAULT_MODEL = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
DEFAULT_OUT = os.path.join(ROOT, "tests", "golden")
N_GREEDY = 32

# ---------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------

TOKENIZER_TEXTS = [
    # empty / whitespace only
    "",
    " ",
    "   ",
    "\n",
    "\n\n\n",
    "\t",
    "  \t ",
    "\r\n",
    " \n \n",
    # plain English, leading / trailing spaces, whitespace runs
    "Hello",
    "Hello world",
    "Hello World!",
    " Hello world",
    "Hello world ",
    "   leading spaces",
    "trailing spaces   ",
    "multiple   spaces    between  words",
    "tab\tseparated\tvalues",
    "line one\nline two\n\nline four",
    "mixed \t\n whitespace \n\t end",
    "The quick brown fox jumps over the lazy dog.",
    "What is the capital of France?",
    # digits
    "12345",
    "3.14159",
    "1,000,000",
    "0",
    "In 2024 there were 365 days? No, 366.",
    "$19.99 + 7% tax",
    "x1y22z333",
    # digits next to whitespace runs: the per-digit split happens *before* the
    # byte-level regex, so "  1" is ["  ", "1"] -> [ĠĠ, 1], not [Ġ, Ġ1]
    "x  1",
    "  1",
    "1  2",
    "hello  123",
    "a\n\n1",
    "\t\t2",
    "Call 555  1234 now",
    # non-ASCII numerics (Unicode N*: Nd, Nl, No) are split one per char too
    "٣٤٥ ١٢",
    "x² ½ Ⅻ ①②",
    # contractions and case
    "don't",
    "I'LL",
    "I'll",
    "it's we've you're they'd I'm",
    "IT'S WE'VE YOU'RE",
    "'s 's'",
    # punctuation
    "Hello, world! How are you?",
    "...!!!???---",
    "(a) [b] {c} <d>",
    "\"quoted\" and 'single'",
    "a@b.com https://example.org/path?q=1&r=2#frag",
    "#!/usr/bin/env bash",
    "~`^|\\/_",
    # unicode
    "café",
    "naïve résumé Über",
    "e\u0301 a\u0308 n\u0303",  # combining characters
    "日本語",
    "你好，世界！",
    "한국어 텍스트",
    "Привет, мир!",
    "Γειά σου κόσμε",
    "مرحبا بالعالم",
    "שלום עולם",
    "हिन्दी",
    "🦀🚀",
    "👨\u200d👩\u200d👧 family",
    "👍🏽",
    "non\u00a0breaking\u2009thin\u200bzero-width",
    "\u00e9\u00e8\u00ea\u00eb",
    "ascii control \x01\x02\x7f end",
    # code
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n",
    "fn main() {\n    println!(\"Hello, {}!\", name);\n}",
    "for (int i = 0; i < 10; ++i) { sum += a[i]; }",
    '{"key": [1, 2.5, null, true], "nested": {"a": "b"}}',
    "<div class=\"x\">&amp;</div>",
    "SELECT * FROM users WHERE id = 42;",
    "    indented\n\tand tabbed",
    # special tokens
    "<|im_start|>",
    "<|im_end|>",
    "<|endoftext|>",
    "<|im_start|>user\nhi<|im_end|>",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n",
    "text<|endoftext|>more text",
    " <|im_start|> spaced <|im_end|> ",
    "<|im_start|><|im_end|><|endoftext|>",
    "<repo_name>ponder<file_sep>src/main.rs",
    "<|im_start",
    "im_start|>",
    "<|IM_START|>",
    "<| im_start |>",
    # long-ish paragraph
    (
        "Large language models are trained on vast amounts of text to predict the next "
        "token in a sequence. During inference, a server tokenizes the prompt, runs a "
        "forward pass to fill the key/value cache, and then samples tokens one at a "
        "time until it reaches a stop condition, such as an end-of-sequence token or a "
        "maximum length of 2,048 tokens. Greedy decoding always picks the most likely "
        "token; it's simple, deterministic, and — for small models — often repetitive!"
    ),
]

CHAT_CASES = [
    ([{"role": "user", "content": "What is the capital of France?"}], True),
    ([{"role": "user", "content": "What is the capital of France?"}], False),
    (
        [
            {"role": "system", "content": "You are a concise assistant."},
            {"role": "user", "content": "Name three primary colors."},
        ],
        True,
    ),
    (
        [
            {"role": "system", "content": "You are a concise assistant."},
            {"role": "user", "content": "Name three primary colors."},
        ],
        False,
    ),
    (
        [
            {"role": "user", "content": "Hi!"},
            {"role": "assistant", "content": "Hello! How can I help you today?"},
            {"role": "user", "content": "What is 2+2?"},
        ],
        True,
    ),
    (
        [
            {"role": "user", "content": "Hi!"},
            {"role": "assistant", "content": "Hello! How can I help you today?"},
        ],
        False,
    ),
    (
        [
            {
                "role": "user",
                "content": "Translate to French:\n\n  \"The café is naïve.\"\n日本語 🦀🚀\tdone",
            }
        ],
        True,
    ),
    (
        [
            {"role": "system", "content": "Line 1\nLine 2\n\nLine 4"},
            {"role": "user", "content": "<|im_start|> inside content <|im_end|>"},
        ],
        True,
    ),
    ([{"role": "user", "content": ""}], True),
]

GREEDY_PROMPTS = [
    ("chat_capital_france", "chat", [{"role": "user", "content": "What is the capital of France?"}]),
    (
        "chat_system_colors",
        "chat",
        [
            {"role": "system", "content": "You are a concise assistant."},
            {"role": "user", "content": "Name three primary colors."},
        ],
    ),
    (
        "chat_multiturn_math",
        "chat",
        [
            {"role": "user", "content": "Hi!"},
            {"role": "assistant", "content": "Hello! How can I help you today?"},
            {"role": "user", "content": "What is 2+2?"},
        ],
    ),
    ("raw_quick_brown_fox", "raw", "The quick brown fox"),
    ("raw_fibonacci", "raw", "def fibonacci(n):"),
    ("raw_counting", "raw", "1, 2, 3, 4,"),
]

# ---------------------------------------------------------------------------


def render_chat(template, messages, add_generation_prompt):
    # Same jinja2 settings that transformers' apply_chat_template uses.
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    return env.from_string(template).render(messages=messages, add_generation_prompt=add_generation_prompt)


def _dumps(obj, indent=0):
    """JSON with 2-space indentation, but lists of scalars (token ids, margins,
    [id, logit] pairs) kept on one line so the goldens stay reviewable.
    Floats use Python's shortest round-trip repr, so they parse back exactly."""
    pad, inner = "  " * indent, "  " * (indent + 1)
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [f"{inner}{json.dumps(k, ensure_ascii=False)}: {_dumps(v, indent + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list):
        if all(not isinstance(v, (dict, list)) for v in obj) or all(
            isinstance(v, list) and all(not isinstance(x, (dict, list)) for x in v) for v in obj
        ):
            return json.dumps(obj, ensure_ascii=False, allow_nan=False)
        return "[\n" + ",\n".join(inner + _dumps(v, indent + 1) for v in obj) + "\n" + pad + "]"
    return json.dumps(obj, ensure_ascii=False, allow_nan=False)


def write_json(path, obj):
    text = _dumps(obj) + "\n"
    assert json.loads(text) == obj
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
    print(f"wrote {path}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--skip-greedy", action="store_true", help="only write tokenizer/chat goldens")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    model = None if args.skip_greedy else Llama(args.model)
    if model is not None:
        reader = model.reader
    else:
        from gguf import GGUFReader

        reader = GGUFReader(args.model)
    tok = build_tokenizer(args.model, reader)
    template = reader.fields["tokenizer.chat_template"].contents()
    eos_id = int(reader.fields["tokenizer.ggml.eos_token_id"].contents())

    # 1. tokenizer
    assert len(set(TOKENIZER_TEXTS)) == len(TOKENIZER_TEXTS)
    tok_cases = []
    for text in TOKENIZER_TEXTS:
        ids = encode(tok, text)
        tok_cases.append({"text": text, "ids": ids, "decoded": decode(tok, ids)})
    write_json(os.path.join(args.out, "tokenizer.json"), tok_cases)

    # 2. chat template
    chat_cases = []
    for messages, agp in CHAT_CASES:
        rendered = render_chat(template, messages, agp)
        chat_cases.append(
            {"messages": messages, "add_generation_prompt": agp, "rendered": rendered, "ids": encode(tok, rendered)}
        )
    write_json(os.path.join(args.out, "chat_template.json"), chat_cases)

    if model is None:
        return

    # 3. greedy generation
    greedy = []
    for name, kind, prompt in GREEDY_PROMPTS:
        text = render_chat(template, prompt, True) if kind == "chat" else prompt
        ids = encode(tok, text)
        gen, step_logits = model.greedy(ids, N_GREEDY, eos_id=eos_id)
        margins = []
        for lg in step_logits:
            top2 = np.sort(lg)[-2:]
            margins.append(float(top2[1] - top2[0]))
        first = step_logits[0]
        order = np.argsort(-first, kind="stable")[:5]
        stopped = bool(gen and gen[-1] == eos_id)
        text_ids = gen[:-1] if stopped else gen
        entry = {
            "name": name,
            "kind": kind,
            "prompt_text": text,
            "prompt_token_ids": ids,
            "generated_token_ids": gen,
            "stopped_at_eos": stopped,
            "generated_text": decode(tok, text_ids),
            "top2_margins": margins,
            "first_step_top5": [[int(i), float(first[i])] for i in order],
        }
        if kind == "chat":
            entry["messages"] = prompt
        greedy.append(entry)
        print(f"{name}: {entry['generated_text']!r} (min margin first 16: {min(margins[:16]):.4f})")
    write_json(os.path.join(args.out, "greedy.json"), greedy)


if __name__ == "__main__":
    main()
