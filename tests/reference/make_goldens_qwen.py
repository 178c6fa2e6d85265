"""Write the Qwen2.5 and dequantization goldens (tests/golden/) from the Python reference.

    /tmp/refvenv/bin/python tests/reference/make_goldens_qwen.py [--model PATH] [--out DIR]
                                                                [--skip-greedy]

Outputs (defaults relative to the repository root):
    tests/golden/qwen05_tokenizer.json      text -> ids -> decoded text
    tests/golden/qwen05_chat_template.json  messages (+ tools) -> rendered template -> ids
    tests/golden/qwen05_greedy.json         prompt -> 32 greedy tokens (+ margins, top-5)
    tests/golden/dequant.json               random blocks of every quantized type -> f32

The model is models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf (scripts/fetch-model
qwen2.5-0.5b). Deterministic like make_goldens.py (BLAS pinned to one thread, the
random blocks from a fixed seed).
"""

import os

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

import ref_quants  # noqa: E402
from make_goldens import write_json  # noqa: E402
from ref_llama import Llama  # noqa: E402
from ref_tokenizer import build_tokenizer, decode, encode  # noqa: E402

DEFAULT_MODEL = os.path.join(ROOT, "models", "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")
DEFAULT_OUT = os.path.join(ROOT, "tests", "golden")
N_GREEDY = 32

# ---------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------

TOKENIZER_TEXTS = [
    "",
    " ",
    "\n\n\n",
    "  \t \n  end",
    "Hello world",
    " Hello World!  ",
    "The quick brown fox jumps over the lazy dog.",
    # digits: qwen2 splits every digit on its own
    "12345",
    "x  123",
    "In 2024 there were 365 days? No, 366.",
    "$19.99 + 7% tax",
    # contractions and case
    "don't I'LL it's we've",
    # punctuation runs and newlines after punctuation
    "Hello, world! How are you?\n\n",
    "...!!!???---\r\n",
    "a@b.com https://example.org/path?q=1&r=2#frag",
    # unicode; NFC composes e + U+0301 into U+00E9 before the split
    "café naïve résumé",
    "e\u0301 a\u0308 n\u0303",
    "日本語のテキスト",
    "你好，世界！",
    "Привет, мир!",
    "مرحبا بالعالم",
    "🦀🚀 👨\u200d👩\u200d👧 👍🏽",
    "non\u00a0breaking\u2009thin\u200bzero-width",
    # code
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n",
    "fn main() {\n    println!(\"Hello, {}!\", name);\n}",
    '{"key": [1, 2.5, null, true], "nested": {"a": "b"}}',
    "\tfor (int i = 0; i < 10; ++i) { sum += a[i]; }",
    # special (CONTROL) and user-defined tokens, and look-alikes that are not tokens
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n",
    "text<|endoftext|>more text",
    '<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>',
    "<|fim_prefix|>def f():\n    <|fim_suffix|>\n<|fim_middle|>",
    "<|repo_name|>ponder<|file_sep|>src/main.rs",
    "[PAD151665] <|im_start <tool_call >",
]

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the current weather in a city, in °C & <units>",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "description": "City name, e.g. 'Zürich'"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                },
                "required": ["city"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "search",
            "description": "Search the web.",
            "parameters": {
                "type": "object",
                "properties": {"query": {"type": "string"}, "limit": {"type": "integer", "minimum": 1}},
                "required": ["query"],
            },
        },
    },
]

_CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}},
}
_CALL2 = {"id": "call_2", "type": "function", "function": {"name": "search", "arguments": {"query": "Paris events", "limit": 3}}}

# (messages, tools or None, add_generation_prompt)
CHAT_CASES = [
    # no system message: the template adds Qwen's default one
    ([{"role": "user", "content": "What is the capital of France?"}], None, True),
    ([{"role": "user", "content": "What is the capital of France?"}], None, False),
    (
        [
            {"role": "system", "content": "You are a concise assistant."},
            {"role": "user", "content": "Name three primary colors."},
        ],
        None,
        True,
    ),
    (
        [
            {"role": "user", "content": "Hi!"},
            {"role": "assistant", "content": "Hello! How can I help you today?"},
            {"role": "user", "content": "What is 2+2?"},
        ],
        None,
        True,
    ),
    (
        [
            {"role": "system", "content": "Line 1\nLine 2"},
            {"role": "user", "content": "Hi!"},
            {"role": "assistant", "content": "Hello!"},
        ],
        None,
        False,
    ),
    (
        [{"role": "user", "content": "Translate: \"The café is naïve.\" 日本語 🦀\t<|im_end|>"}],
        None,
        True,
    ),
    # tools: in the system block as JSON lines (keys in the order given)
    ([{"role": "user", "content": "What's the weather in Paris?"}], TOOLS, True),
    (
        [
            {"role": "system", "content": "You are a weather bot."},
            {"role": "user", "content": "What's the weather in Paris?"},
        ],
        TOOLS[:1],
        True,
    ),
    # a tool-calling turn: assistant tool_calls (no content), two tool results in a row
    # (one user block), then the assistant's answer is generated
    (
        [
            {"role": "user", "content": "Weather and events in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [_CALL, _CALL2]},
            {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": '{"temp": 21}'},
            {"role": "tool", "tool_call_id": "call_2", "name": "search", "content": "Jazz festival"},
        ],
        TOOLS,
        True,
    ),
    # assistant content alongside a call; arguments given as a JSON string (OpenAI wire
    # form) are quoted by `tojson`; a finished exchange
    (
        [
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": "Let me check.",
                "tool_calls": [
                    {"id": "c", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
                ],
            },
            {"role": "tool", "tool_call_id": "c", "content": "21 °C"},
            {"role": "assistant", "content": "It is 21 °C in Paris."},
        ],
        TOOLS[:1],
        False,
    ),
]

GREEDY_PROMPTS = [
    ("chat_capital_france", "chat", [{"role": "user", "content": "What is the capital of France?"}]),
    (
        "chat_system_square",
        "chat",
        [
            {"role": "system", "content": "You are a concise coding assistant."},
            {"role": "user", "content": "Write a Python function that returns the square of a number."},
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
    ("raw_capital_france", "raw", "The capital of France is"),
    ("raw_fibonacci", "raw", "def fibonacci(n):"),
    ("raw_rust_main", "raw", "// Rust: print the numbers 1 to 3\nfn main() {"),
]

DEQUANT_BLOCKS = 4  # per type: 2 random, then all quant bits 0, all quant bits 1
DEQUANT_SEED = 20240607

# ---------------------------------------------------------------------------


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    """`tojson` as transformers' chat-template environment defines it: json.dumps
    with the keys in the order given and non-ASCII kept (jinja2's own filter sorts
    keys and HTML-escapes)."""
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def render_chat(template, messages, add_generation_prompt, tools=None):
    # transformers' apply_chat_template environment: trim/lstrip blocks, loopcontrols,
    # its `tojson`; `tools` is passed only when given (the template tests `if tools`).
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = _tojson
    ctx = {"messages": messages, "add_generation_prompt": add_generation_prompt}
    if tools is not None:
        ctx["tools"] = tools
    return env.from_string(template).render(**ctx)


def dequant_golden():
    """Random blocks of every type, decoded by gguf-py (and, bit for bit, by
    ref_quants); Q8_K, which gguf-py lacks, by ref_quants alone."""
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize as gguf_dequantize

    rng = np.random.default_rng(DEQUANT_SEED)
    out = []
    for name, (type_id, elems, nbytes) in ref_quants.TYPES.items():
        blocks = np.concatenate(
            [
                ref_quants.random_blocks(name, 2, rng),
                ref_quants.random_blocks(name, 1, rng, fill=0x00),
                ref_quants.random_blocks(name, 1, rng, fill=0xFF),
            ]
        )
        assert blocks.shape == (DEQUANT_BLOCKS, nbytes)
        ours = ref_quants.dequantize(blocks, name).reshape(DEQUANT_BLOCKS, elems)
        assert np.all(np.isfinite(ours))
        if name == "Q8_K":
            source = "ref_quants.py (gguf-py has no Q8_K dequantizer)"
        else:
            theirs = np.asarray(gguf_dequantize(blocks.reshape(-1), GGMLQuantizationType[name]), dtype=np.float32)
            assert np.array_equal(theirs.reshape(-1).view(np.uint32), ours.reshape(-1).view(np.uint32)), name
            source = "gguf.quants.dequantize 0.19.0 (ref_quants.py bit-identical)"
        out.append(
            {
                "type": name,
                "ggml_type": type_id,
                "block_elems": elems,
                "block_bytes": nbytes,
                "source": source,
                "blocks": [
                    {"hex": blocks[i].tobytes().hex(), "values": [float(v) for v in ours[i]]}
                    for i in range(DEQUANT_BLOCKS)
                ],
            }
        )
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--skip-greedy", action="store_true", help="no model forward (greedy golden)")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    # 0. dequantization (no model needed)
    write_json(os.path.join(args.out, "dequant.json"), dequant_golden())

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
    write_json(os.path.join(args.out, "qwen05_tokenizer.json"), tok_cases)

    # 2. chat template
    chat_cases = []
    for messages, tools, agp in CHAT_CASES:
        rendered = render_chat(template, messages, agp, tools)
        case = {"messages": messages}
        if tools is not None:
            case["tools"] = tools
        case.update({"add_generation_prompt": agp, "rendered": rendered, "ids": encode(tok, rendered)})
        chat_cases.append(case)
    write_json(os.path.join(args.out, "qwen05_chat_template.json"), chat_cases)

    if model is None:
        return

    # 3. greedy generation; eos_id = <|im_end|>
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
        print(f"{name}: {entry['generated_text']!r} (min margin: {min(margins):.4f})", flush=True)
    write_json(os.path.join(args.out, "qwen05_greedy.json"), greedy)


if __name__ == "__main__":
    main()
