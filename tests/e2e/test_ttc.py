"""End-to-end: reasoning_content, reasoning_tokens and the ttc report through the OpenAI SDK.

`reasoning_server` runs the default model with `--reasoning-parser deepseek_r1`: its output is
read as thinking until `</think>`, which the thinking budget forces, so the small model exercises
the whole reasoning path (split, budget, usage details) without a model that thinks natively.
"""
import os
import signal
import subprocess
import time
import urllib.request

import pytest

from conftest import BIN, ROOT, free_port

MODEL = "SmolLM2-135M-Instruct.Q4_1"
SUM = [{"role": "user", "content": "What is 7 + 5? End with 'The answer is N.'"}]


@pytest.fixture(scope="module")
def reasoning_client():
    from openai import OpenAI

    port = free_port()
    log = open(os.path.join(ROOT, "target", "e2e-reasoning-server.log"), "w")
    proc = subprocess.Popen(
        [BIN, "serve", "--host", "127.0.0.1", "--port", str(port), "--reasoning-parser", "deepseek_r1"],
        stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while True:
        assert proc.poll() is None, "reasoning server exited early; see target/e2e-reasoning-server.log"
        try:
            with urllib.request.urlopen(base + "/ready", timeout=2) as r:
                if r.status == 200:
                    break
        except Exception:
            pass
        assert time.time() < deadline, "reasoning server not ready within 180 s"
        time.sleep(0.5)
    yield OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=120)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0


def test_thinking_budget_reasoning_content_and_tokens(reasoning_client):
    r = reasoning_client.chat.completions.create(
        model=MODEL, messages=SUM, temperature=0, max_completion_tokens=40,
        extra_body={"thinking_token_budget": 12},
    )
    msg = r.choices[0].message
    assert isinstance(msg.reasoning_content, str) and msg.reasoning_content.strip()
    assert msg.reasoning == msg.reasoning_content
    assert "</think>" not in msg.reasoning_content
    assert msg.content.strip(), "the sample answers after the forced end of thinking"
    assert r.usage.completion_tokens_details.reasoning_tokens == 12
    assert 12 < r.usage.completion_tokens <= 40
    assert r.model_extra["ttc"]["granted"]["thinking_token_budget"] == 12

    # Streaming gives the same split, reasoning first.
    chunks = list(reasoning_client.chat.completions.create(
        model=MODEL, messages=SUM, temperature=0, max_completion_tokens=40, stream=True,
        stream_options={"include_usage": True}, extra_body={"thinking_token_budget": 12},
    ))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    reasoning = "".join(getattr(d, "reasoning_content", None) or "" for d in deltas)
    content = "".join(d.content or "" for d in deltas)
    assert (reasoning, content) == (msg.reasoning_content, msg.content)
    first_content = next(i for i, d in enumerate(deltas) if d.content)
    assert all(not getattr(d, "reasoning_content", None) for d in deltas[first_content:])
    assert chunks[-1].usage.completion_tokens_details.reasoning_tokens == 12


def test_thinking_budget_without_markers_is_400(client):
    import openai

    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model=MODEL, messages=SUM, max_completion_tokens=8, extra_body={"thinking_token_budget": 4},
        )
    assert e.value.body["param"] == "thinking_token_budget"


def test_self_consistency_report_through_extra_body(client):
    r = client.chat.completions.create(
        model=MODEL, messages=SUM, temperature=0.8, seed=5, max_completion_tokens=48,
        extra_body={"ttc": {"strategy": "self_consistency", "n": 6, "min_samples": 2, "esc_window": 2}},
    )
    t = r.model_extra["ttc"]
    assert len(r.choices) == 1
    assert 2 <= t["samples_launched"] <= 6
    assert t["samples_launched"] == len(t["samples"])
    assert r.usage.completion_tokens == t["tokens"]["total"] == sum(s["tokens"] for s in t["samples"])
    assert t["tokens"]["thinking"] == 0 and r.usage.completion_tokens_details.reasoning_tokens == 0
    if t["answer"] is not None:
        assert t["answer"] in r.choices[0].message.content
        assert abs(t["winning_share"] - max(t["votes"].values()) / sum(t["votes"].values())) < 1e-6
    assert t["stop_reason"] in (None, "window_agreement")
    # Same seed, same report.
    again = client.chat.completions.create(
        model=MODEL, messages=SUM, temperature=0.8, seed=5, max_completion_tokens=48,
        extra_body={"ttc": {"strategy": "self_consistency", "n": 6, "min_samples": 2, "esc_window": 2}},
    )
    assert again.model_extra["ttc"] == t
    assert again.choices[0].message.content == r.choices[0].message.content
