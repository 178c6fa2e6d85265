"""Offline tests of scoring (answers, bootstrap, summaries), the report writers, the command
line and the HTTP client (a mock transport): no server, no model."""

from __future__ import annotations

import asyncio
import json
import sys
from fractions import Fraction
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import client  # noqa: E402
import gguf_info  # noqa: E402
import problems as prob  # noqa: E402
import report  # noqa: E402
import runs as rn  # noqa: E402
import scoring  # noqa: E402
import ttc_eval  # noqa: E402
from test_policies import row, sample  # noqa: E402

# ---------------------------------------------------------------- scoring


@pytest.mark.parametrize("answer,value", [
    ("12", 12), ("12.0", 12), ("$12", 12), ("12.", 12), ("12%", 12), ("1,234", 1234),
    ("-3", -3), ("\u22123", -3), ("24/2", 12), ("\\frac{3}{4}", Fraction(3, 4)),
    ("-\\dfrac{1}{2}", Fraction(-1, 2)), ("1e3", 1000), ("0.75", Fraction(3, 4)),
    (None, None), ("twelve", None), ("3/0", None), ("1,23", None), ("", None),
])
def test_parse_answer(answer, value):
    assert scoring.parse_answer(answer) == value


def test_bootstrap_ci_known_inputs():
    assert scoring.bootstrap_ci([1] * 30) == (1.0, 1.0)
    assert scoring.bootstrap_ci([0] * 30) == (0.0, 0.0)
    assert scoring.bootstrap_ci([]) == (0.0, 0.0)
    # normal approximation: 0.5 +- 1.96 * sqrt(0.25 / 100) = [0.402, 0.598]; the resampled
    # means are multiples of 0.01 and land on the nearest ones.
    assert scoring.bootstrap_ci([1, 0] * 50, resamples=2000, seed=0) == (0.4, 0.6)
    few = [1, 0, 0, 1, 1, 1, 0, 1, 1, 1]
    assert scoring.bootstrap_ci(few, seed=0) == (0.4, 0.9)


def test_auroc_and_verifier_signal():
    assert scoring.auroc([0.9, 0.8], [0.1, 0.2]) == 1.0
    assert scoring.auroc([0.1], [0.9]) == 0.0
    assert scoring.auroc([0.5, 0.5], [0.5]) == 0.5
    rows = [row("sc16", 0, [sample(0, "12", score=0.9), sample(1, "7", score=0.4),
                            sample(2, None, score=0.1), sample(3, "7", score=0.95)])]
    v = scoring.verifier_signal(rows)
    assert (v["right"], v["wrong"], v["auroc"]) == (1, 2, 0.5)
    assert (v["min"], v["max"]) == (0.4, 0.95)
    assert scoring.verifier_signal([row("sc16", 0, [sample(0, "1")])]) is None


def results_of(policy, kind, correct, tokens, samples=1, probe=0, reasoning=None, exits=0):
    return [{"policy": policy, "kind": kind, "problem": i, "level": 2 + i % 2,
             "answer": None, "correct": bool(c), "tokens": tokens, "samples": samples,
             "reasoning_tokens": reasoning if reasoning is not None else tokens - probe,
             "probe_tokens": probe, "exits": exits, "latency_s": 1.0, "error": None}
            for i, c in enumerate(correct)]


def test_summary_rows():
    results = (results_of("majority-8", "majority", [1, 1, 0, 1], 800, samples=8)
               + results_of("certaindex-8", "certaindex", [1, 0, 0, 1], 500, samples=8,
                            probe=100, exits=4))
    results[5].update(error="HTTP 500: x", correct=False, tokens=None)
    rows = scoring.summarize(results, ["majority-8", "certaindex-8", "absent"])
    maj, cdx = rows
    assert (maj["accuracy"], maj["mean_tokens"], maj["rel_tokens"]) == (0.75, 800.0, 1.0)
    assert maj["per_level"] == {2: 0.5, 3: 1.0}
    assert (cdx["accuracy"], cdx["errors"], cdx["mean_tokens"]) == (0.5, 1, 500.0)
    assert cdx["rel_tokens"] == 500 / 800
    # 3 successful problems: 300 probe tokens over 1200 thinking tokens; 12 of 24 exited
    assert cdx["probe_per_1k_thinking"] == 250.0 and cdx["exit_share"] == 0.5
    assert cdx["reasoning_per_sample"] == 1200 / 24


# ---------------------------------------------------------------- writers


def make_doc(tmp_path=None) -> dict:
    """A small results document as ttc_eval builds it (two problems, sc16 + cdx8 + check)."""
    samples = [sample(i, "12" if i % 3 else "5", tokens=100, probe=20, score=0.5)
               for i in range(16)]
    sc16 = [row("sc16", 0, samples, answer="12", level=2),
            row("sc16", 1, [dict(s, answer="7") for s in samples], answer="7", level=3)]
    cdx = [row("cdx8", p, [sample(i, "12", tokens=60, probe=10, exit_at=50) for i in range(8)],
               answer="12", level=2 + p) for p in (0, 1)]
    check = [row("check-fixed-1", 0, [dict(samples[0])], answer="5")]
    meta = {"date": "2026-01-01 00:00:00", "command": "scripts/ttc-eval --problems 2",
            "seed": 0, "bootstrap": {"resamples": 200, "seed": 0},
            "models": {"small": {"file": "s.gguf", "name": "S", "bytes": 10, "sha256": "ab",
                                 "parameters": 700, "parameters_tied": 500}},
            "servers": {"small": "ponder serve --model s.gguf"},
            "activation_bits": {"small": "8", "large": None}, "notes": "see README"}
    records = [{"name": n, "model": "small", "ttc": {"n": 1}, "rows": rs, "requests": len(rs),
                "errors": 0, "wall_s": 12.0, "status": "done"}
               for n, rs in (("sc16", sc16), ("cdx8", cdx), ("check-fixed-1", check))]
    records.append({"name": "auto-s0", "model": "small", "ttc": {"strategy": "auto"},
                    "rows": [], "requests": 0, "errors": 0, "wall_s": None,
                    "status": "skipped: the server answered HTTP 400: unknown strategy"})
    return ttc_eval.build_doc(meta, records)


def test_markdown_and_plot(tmp_path):
    doc = make_doc()
    md = report.write_markdown(tmp_path / "docs" / "r.md", doc).read_text()
    assert "- Command: `scripts/ttc-eval --problems 2`" in md
    assert "sha256 `ab`), 0M parameters" in md
    assert "- CPU GEMM activations (small): 8-bit" in md
    assert "- CPU GEMM activations (large): not logged (not the CPU backend)" in md
    # majority-8 of problem 0: answers 5,12,12,5,12,12,5,12 -> 12 (correct); problem 1 wrong
    assert "| `majority-8` | 0.500 |" in md
    assert "| `certaindex-8` | 1.000 |" in md
    # tokens: majority-8 = 800; certaindex-8 = 8 x (60 + 10) = 560 -> 0.70 of majority-8
    assert "| 800.0 | 1.00 | 8.00 |" in md and "| 560.0 | 0.70 | 8.00 |" in md
    assert "## pass@N" in md and "| 16 | 0.500 |" in md
    assert "## Certaindex early exit" in md
    assert "| `check-fixed-1` | sc16, first 1 | 1 | 1/1 | 1/1 |" in md
    assert "- `auto-s0`: skipped: the server answered HTTP 400: unknown strategy" in md
    assert "## Notes" in md and "see README" in md
    assert "## Verifier signal" in md and "AUROC (right above wrong) 0.500" in md
    png = report.write_plot(tmp_path / "docs" / "r.png", doc)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_pareto_front():
    pts = [(100, 0.4, "a"), (200, 0.4, "b"), (150, 0.5, "c"), (900, 0.45, "d"),
           (1800, 0.6, "e"), (100, 0.3, "f")]
    assert [p[2] for p in report.pareto_front(pts)] == ["a", "c", "e"]
    assert report.pareto_front([]) == []


def test_report_only_round_trip(tmp_path):
    doc = make_doc()
    js = report.write_json(tmp_path / "results.json", doc)
    md, png = tmp_path / "r.md", tmp_path / "r.png"
    rc = ttc_eval.main(["--report-only", str(js), "--report", str(md), "--plot", str(png)])
    assert rc == 0 and png.exists()
    # the report is rebuilt from the raw rows: the same text, with today's notes
    doc["meta"]["notes"] = ttc_eval.NOTES
    assert md.read_text() == report.markdown(doc)


# ---------------------------------------------------------------- command line


def test_dry_run_prints_problems_and_bodies(capsys):
    assert ttc_eval.main(["--dry-run", "--problems", "10", "--runs", "main,auto"]) == 0
    out = capsys.readouterr().out
    assert "2 steps #0: " in out and "6 steps #4: " in out
    bodies = {ln.split(": ", 1)[0]: json.loads(ln.split(": ", 1)[1])
              for ln in out.splitlines() if ln.startswith(("sc16: ", "auto-s1: "))}
    assert bodies["sc16"]["ttc"]["n"] == 16 and bodies["auto-s1"]["ttc"]["strategy"] == "auto"


def test_bad_arguments_exit_2(capsys, tmp_path):
    assert ttc_eval.main(["--dry-run", "--problems", "12"]) == 2
    assert ttc_eval.main(["--runs", "nope", "--dry-run"]) == 2
    assert ttc_eval.main(["--model-small", str(tmp_path / "missing.gguf")]) == 2
    assert "missing.gguf not found" in capsys.readouterr().err


def test_resume_reuses_only_runs_of_the_same_shape(tmp_path):
    doc = make_doc()
    meta = dict(doc["meta"], problems="2", template_sha256="t")
    for r in doc["runs"]:
        spec = next((x for x in rn.all_runs() + rn.check_runs() if x.name == r["name"]), None)
        r.update(ttc=spec.ttc, sampling=spec.sampling, seed_index=spec.seed_index)
    path = report.write_json(tmp_path / "results.json", dict(doc, meta=meta))
    runs = rn.select(None)
    reuse, servers = ttc_eval.resumable(path, meta, runs)
    # auto-s0 was skipped: run again; the rest is reused
    assert sorted(reuse) == ["cdx8", "check-fixed-1", "sc16"]
    assert servers == {"small": "ponder serve --model s.gguf"}
    # another certaindex setting: its runs are not reused
    other = rn.select(None, {**rn.CERTAINDEX, "probe_every": 64})
    assert sorted(ttc_eval.resumable(path, meta, other)[0]) == ["check-fixed-1", "sc16"]
    # other problems: nothing
    assert ttc_eval.resumable(path, dict(meta, problems="3"), runs) == ({}, {})


def test_serve_args_defaults_give_way():
    assert ttc_eval.serve_args([]) == ["--kv-cache-memory", "2GiB"]
    assert ttc_eval.serve_args(["--max-num-seqs", "8"]) == ["--kv-cache-memory", "2GiB",
                                                            "--max-num-seqs", "8"]
    assert ttc_eval.serve_args(["--kv-cache-memory=4GiB"]) == ["--kv-cache-memory=4GiB"]


# ---------------------------------------------------------------- gguf


def test_gguf_header_reader(tmp_path):
    """A hand-written GGUF v3 header: two metadata keys and three tensors, the output
    projection tied to the embedding (same shape)."""
    import struct

    def s(text):
        b = text.encode()
        return struct.pack("<Q", len(b)) + b

    kv = s("general.name") + struct.pack("<I", 8) + s("Tiny")
    kv += s("tokenizer.ggml.scores") + struct.pack("<IIQ", 9, 6, 2) + struct.pack("<ff", 1, 2)
    tensors = b""
    for name, dims in (("token_embd.weight", (4, 10)), ("blk.0.w", (4, 4)),
                       ("output.weight", (4, 10))):
        tensors += s(name) + struct.pack("<I", len(dims)) + struct.pack(f"<{len(dims)}Q", *dims)
        tensors += struct.pack("<IQ", 0, 0)
    path = tmp_path / "t.gguf"
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 3, 2) + kv + tensors)
    info = gguf_info.model_info(path)
    assert (info["name"], info["parameters"], info["parameters_tied"]) == ("Tiny", 96, 56)
    assert len(info["sha256"]) == 64


# ---------------------------------------------------------------- client (mock transport)


def fake_server(fail_first_with_429: set[int], broken: set[int], reject_auto=False):
    """A MockTransport answering like the server; problem ids come from the prompt."""
    seen: dict[int, int] = {}
    lookup = {p.prompt: p for p in prob.generate(10, seed=0)}

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if reject_auto and body["ttc"]["strategy"] == "auto":
            return httpx.Response(400, json={"error": {"message": "unknown strategy auto"}})
        p = lookup[body["messages"][-1]["content"]]
        seen[p.id] = seen.get(p.id, 0) + 1
        if p.id in fail_first_with_429 and seen[p.id] == 1:
            return httpx.Response(429, headers={"Retry-After": "0"},
                                  json={"error": {"message": "queue full"}})
        if p.id in broken:
            return httpx.Response(500, json={"error": {"message": "engine died"}})
        n = body["ttc"]["n"]
        answer = str(p.answer) if p.id % 2 == 0 else str(p.answer + 1)
        samples = [{"index": i, "answer": answer, "tokens": 10, "reasoning_tokens": 8,
                    "mean_logprob": -0.1, "score": None, "probe_tokens": 0} for i in range(n)]
        load = 1 if p.id == 9 else 0
        return httpx.Response(200, json={
            "choices": [{"message": {"content": f"The answer is {answer}."}}],
            "usage": {"completion_tokens": 10 * n},
            "ttc": {"answer": answer, "samples": samples, "granted": {"load_level": load},
                    "tokens": {"thinking": 8 * n, "answer": 2 * n, "wasted": 0, "probe": 0,
                               "total": 10 * n}},
        })

    return httpx.MockTransport(handler), seen


def test_run_requests_retries_429_and_reports_errors():
    transport, seen = fake_server(fail_first_with_429={1, 2}, broken={5})
    problems = prob.generate(10, seed=0)
    run = next(r for r in rn.check_runs() if r.name == "check-fixed-4")
    rows = asyncio.run(client.run_requests("http://x", "m", problems, run, concurrency=3,
                                           timeout_s=5, transport=transport))
    assert [r["problem"] for r in rows] == list(range(10))
    assert seen[1] == 2 and seen[2] == 2 and seen[0] == 1
    assert [r["retries"] for r in rows][:4] == [0, 1, 1, 0]
    assert [r["correct"] for r in rows][:4] == [True, False, True, False]
    assert rows[5]["error"] == "HTTP 500: engine died"
    assert rows[9]["error"].startswith("load-shrunk request")
    assert rows[0]["completion_tokens"] == 40 and len(rows[0]["samples"]) == 4
    assert rows[0]["text"] == f"The answer is {problems[0].answer}."


def test_optional_run_is_skipped_on_400():
    transport, _ = fake_server(set(), set(), reject_auto=True)
    run = next(r for r in rn.all_runs() if r.name == "auto-s0")
    with pytest.raises(client.RunSkipped, match="unknown strategy auto"):
        asyncio.run(client.run_requests("http://x", "m", prob.generate(10, seed=0), run,
                                        concurrency=2, timeout_s=5, transport=transport))


def test_retry_after_parsing():
    assert client.retry_after_s(None) == 1.0
    assert client.retry_after_s("2") == 2.0
    assert client.retry_after_s("999") == 30.0
    assert client.retry_after_s("soon") == 1.0


def test_compute_uses_the_parameters_of_the_model_that_ran_the_policy():
    doc = {"meta": {"models": {"small": {"parameters_tied": 5}, "large": {"parameters_tied": 15}}},
           "policies": [{"name": "auto-large", "run": "auto-large"},
                        {"name": "majority-8", "run": "sc16"}],
           "runs": [{"name": "auto-large", "model": "large"}, {"name": "sc16", "model": "small"}]}
    assert report._params(doc, {"policy": "auto-large"}) == 15
    assert report._params(doc, {"policy": "majority-8"}) == 5


def test_activation_bits_from_the_server_log():
    from server import activation_bits_in
    text = ('2026-12-04T19:45:59.146214Z  INFO ponder::engine: cpu integer GEMM '
            'activation_bits=8\n')
    assert activation_bits_in(text) == "8"
    js = '{"level":"INFO","fields":{"message":"cpu integer GEMM","activation_bits":"12"}}'
    assert activation_bits_in(js) == "12"
    assert activation_bits_in("INFO ponder: listening") is None
