"""Offline tests of the ttc evaluation (no server):

    .venv-eval/bin/python -m pytest -q benches/ttc_eval/test_eval.py
"""

from __future__ import annotations

import ast
import asyncio
import io
import json
import operator
import re
import sys
from fractions import Fraction
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import client  # noqa: E402
import policies as pol  # noqa: E402
import problems as prob  # noqa: E402
import report  # noqa: E402
import scoring  # noqa: E402
import ttc_eval  # noqa: E402

_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul}


def safe_eval(expr: str) -> int:
    """An independent evaluator (Python's own precedence) for + - * over integers."""

    def ev(node):
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        raise ValueError(f"unexpected node {ast.dump(node)}")

    return ev(ast.parse(expr, mode="eval").body)


# ---------------------------------------------------------------- problems


def test_generator_is_deterministic_under_a_seed():
    a = prob.generate(40, seed=7)
    assert a == prob.generate(40, seed=7)
    assert a != prob.generate(40, seed=8)
    # a prefix of a longer run is the shorter run
    assert prob.generate(80, seed=7)[:40] == a
    assert [p.id for p in a] == list(range(40))


def test_every_answer_recomputes():
    for p in prob.generate(400, seed=3):
        assert isinstance(p.answer, int) and p.answer >= 0, p
        assert safe_eval(p.expr) == p.answer, p
        numbers_in_expr = re.findall(r"\d+", p.expr)
        if p.level <= 3:
            assert p.question == "What is " + p.expr + "?", p
        else:
            assert re.findall(r"\d+", p.question) == numbers_in_expr, p
            assert p.question.endswith("?"), p
        ops = re.findall(r"[-+*]", p.expr)
        expected_ops = {1: 1, 2: 2, 3: 2, 4: 2}[p.level]
        assert len(ops) == expected_ops, p
        if p.level == 3:
            assert ops == ["*", "+"], p
        assert p.prompt == p.question, p
        assert 0 <= p.seed < 2**31


def test_levels_are_balanced_and_interleaved():
    ps = prob.generate(200, seed=1)
    counts = {lv: sum(p.level == lv for p in ps) for lv in prob.LEVELS}
    assert counts == {1: 50, 2: 50, 3: 50, 4: 50}
    assert [p.level for p in ps[:8]] == [1, 2, 3, 4, 1, 2, 3, 4]
    # every level-4 template shows up in a run this size
    templates = {t.split(" ")[1] for t, _ in prob.WORD_TEMPLATES}
    seen = {p.question.split(" ")[1] for p in ps if p.level == 4}
    assert templates <= seen | {"{name}"}


def test_prompt_template():
    p = prob.generate(4, seed=0, template="Q: {question}")[1]
    assert p.prompt == "Q: " + p.question
    assert prob.generate(4, seed=0, template="Q: {question}")[1].answer == p.answer
    for bad in ["no placeholder", "{question} {question}"]:
        with pytest.raises(ValueError, match="must contain"):
            prob.generate(4, seed=0, template=bad)


@pytest.mark.parametrize("n", [0, -4, 10])
def test_problem_count_must_be_a_multiple_of_4(n):
    with pytest.raises(ValueError, match="multiple of 4"):
        prob.generate(n, seed=0)


# ---------------------------------------------------------------- policies


def test_policy_table_and_request_body():
    ps = pol.all_policies()
    names = [p.name for p in ps]
    assert names == ["fixed-1", "fixed-2", "fixed-4", "fixed-8", "fixed-16",
                     "esc-2", "esc-2-gate", "esc-2-deepconf-low", "esc-2-agree",
                     "esc-2-agree-deepconf-low", "esc", "consensus", "deepconf"]
    problem = prob.generate(4, seed=0)[0]
    body = pol.request_body("smol", problem, ps[3])
    assert body == {
        "model": "smol",
        "messages": [{"role": "user", "content": problem.prompt}],
        "temperature": 0.4,
        "top_p": 0.95,
        "max_completion_tokens": 96,
        "stop": ["\n\n"],
        "seed": problem.seed,
        "ttc": {"strategy": "self_consistency", "n": 8, "min_samples": 8,
                "aggregation": "majority", "extract": "last_number",
                "equivalence": "numeric"},
    }
    esc = pol.request_body("smol", problem, ps[8])["ttc"]
    assert esc["esc_window"] == 4 and esc["min_samples"] == 4 and esc["n"] == 16
    assert [p.name for p in pol.select(ps, "deepconf, fixed-1")] == ["fixed-1", "deepconf"]
    with pytest.raises(ValueError, match="unknown policies"):
        pol.select(ps, "fixed-3")


# ---------------------------------------------------------------- scoring


@pytest.mark.parametrize("answer,value", [
    ("12", 12), ("12.0", 12), ("$12", 12), ("12.", 12), ("12%", 12), ("1,234", 1234),
    ("-3", -3), ("\u22123", -3), ("24/2", 12), ("\\frac{3}{4}", Fraction(3, 4)),
    ("-\\dfrac{1}{2}", Fraction(-1, 2)), ("1e3", 1000), ("0.75", Fraction(3, 4)),
    (None, None), ("twelve", None), ("3/0", None), ("1,23", None), ("", None),
])
def test_parse_answer(answer, value):
    assert scoring.parse_answer(answer) == value


def test_is_correct_compares_numerically():
    assert scoring.is_correct("12", 12)
    assert scoring.is_correct("12.0", 12)
    assert not scoring.is_correct("12.5", 12)
    assert not scoring.is_correct(None, 12)


def test_bootstrap_ci_known_inputs():
    assert scoring.bootstrap_ci([1] * 30) == (1.0, 1.0)
    assert scoring.bootstrap_ci([0] * 30) == (0.0, 0.0)
    assert scoring.bootstrap_ci([]) == (0.0, 0.0)
    half = [1, 0] * 50
    lo, hi = scoring.bootstrap_ci(half, resamples=2000, seed=0)
    assert (lo, hi) == scoring.bootstrap_ci(half, resamples=2000, seed=0)
    # normal approximation: 0.5 +- 1.96 * sqrt(0.25 / 100) = [0.402, 0.598]; the
    # resampled means are multiples of 0.01 and land on the nearest ones.
    assert (lo, hi) == (0.4, 0.6)
    # small n: a different seed gives a different interval
    few = [1, 0, 0, 1, 1, 1, 0, 1, 1, 1]
    assert scoring.bootstrap_ci(few, seed=0) == scoring.bootstrap_ci(few, seed=0)
    assert scoring.bootstrap_ci(few, seed=0) == (0.4, 0.9)


def synthetic_results() -> list[dict]:
    """8 problems x (fixed-1, fixed-8, esc, consensus) with known accuracies and tokens."""
    spec = {  # policy: (kind, correct per problem, tokens per problem, samples)
        "fixed-1": ("fixed", [1, 0, 0, 1, 0, 0, 1, 0], 50, 1),
        "fixed-8": ("fixed", [1, 1, 0, 1, 1, 0, 1, 1], 400, 8),
        "esc": ("adaptive", [1, 1, 0, 1, 1, 0, 1, 1], 150, 4),
        "consensus": ("adaptive", [1, 1, 1, 1, 1, 0, 1, 1], 300, 6),
    }
    rows = []
    for name, (kind, correct, tokens, samples) in spec.items():
        for i, c in enumerate(correct):
            rows.append({
                "policy": name, "kind": kind, "problem": i, "level": i % 4 + 1,
                "expected": 10, "answer": "10" if c else "11", "correct": bool(c),
                "completion_tokens": tokens, "samples_launched": samples,
                "samples_completed": samples, "samples_stopped": 0, "winning_share": 1.0,
                "stop_reasons": {}, "votes": {}, "latency_s": 0.5, "retries": 0,
                "status": 200, "error": None,
            })
    return rows


def test_summarize_and_verdict():
    rows = scoring.summarize(synthetic_results(), ["fixed-1", "fixed-8", "esc", "consensus"])
    by = {r["policy"]: r for r in rows}
    assert by["fixed-1"]["accuracy"] == 3 / 8
    assert by["fixed-8"]["accuracy"] == 6 / 8
    assert by["esc"]["rel_tokens"] == 150 / 400
    assert by["consensus"]["rel_tokens"] == 300 / 400
    assert by["fixed-8"]["per_level"] == {1: 1.0, 2: 0.5, 3: 0.5, 4: 1.0}
    assert by["esc"]["mean_samples"] == 4.0
    assert by["esc"]["errors"] == 0
    v = scoring.verdict(rows)
    # consensus is more accurate but uses 75% of the tokens: esc is the answer.
    assert v.startswith("Verdict: YES. `esc` reaches 0.750"), v
    assert "using 38% of fixed-8's tokens" in v, v
    # without esc, consensus fails on tokens
    v = scoring.verdict([r for r in rows if r["policy"] != "esc"])
    assert v.startswith("Verdict: NO. Best adaptive policy `consensus`"), v
    assert v.endswith("(tokens above 50%)."), v
    assert scoring.verdict(rows[:2]).startswith("Verdict: n/a")


def test_errors_count_as_wrong_and_are_reported():
    results = synthetic_results()
    failed = next(r for r in results if r["policy"] == "esc" and r["correct"])
    failed.update(correct=False, answer=None, completion_tokens=None, status=500,
                  error="HTTP 500: boom")
    rows = scoring.summarize(results, ["fixed-8", "esc"])
    esc = rows[1]
    assert esc["errors"] == 1
    assert esc["accuracy"] == 5 / 8
    assert esc["mean_tokens"] == 150.0
    md = report.markdown(rows, scoring.verdict(rows), {}, [])
    assert "**1 request(s) failed**" in md


# ---------------------------------------------------------------- writers


def test_writers_produce_files(tmp_path):
    results = synthetic_results()
    policies = [{"name": "fixed-8", "kind": "fixed", "ttc": {"n": 8}}]
    order = ["fixed-1", "fixed-8", "esc", "consensus"]
    rows = scoring.summarize(results, order)
    verdict = scoring.verdict(rows)
    meta = {"date": "2026-01-01 00:00:00", "command": "scripts/ttc-eval --problems 8",
            "server": "target/release/ponder serve --port 1234", "model": "smol",
            "sampling": {"temperature": 0.8}, "bootstrap": {"resamples": 2000, "seed": 0}}
    md = report.write_markdown(tmp_path / "docs" / "ttc-eval.md", rows, verdict, meta, policies)
    png = report.write_plot(tmp_path / "docs" / "ttc-eval.png", rows)
    js = report.write_results_json(tmp_path / "out" / "results.json", results, rows, meta,
                                   policies)
    text = md.read_text()
    assert "| policy | accuracy | 95% CI | mean completion tokens / problem |" in text
    assert "| `fixed-8` | 0.750 | [" in text
    assert "| `esc` | 0.750 |" in text and "| 150.0 | 0.38 | 4.00 |" in text
    assert f"**{verdict}**" in text
    assert "- Command: `scripts/ttc-eval --problems 8`" in text
    assert "- Model: `smol`" in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 10_000
    doc = json.loads(js.read_text())
    assert len(doc["results"]) == 32 and doc["summary"][1]["policy"] == "fixed-8"
    assert doc["summary"][1]["ci"] == list(rows[1]["ci"])


def test_report_only_round_trip(tmp_path):
    results = synthetic_results()
    policies = [{"name": n, "kind": "fixed" if n.startswith("fixed") else "adaptive", "ttc": {}}
                for n in ["fixed-1", "fixed-8", "esc", "consensus"]]
    meta = {"model": "smol", "problems": 8, "bootstrap": {"resamples": 500, "seed": 0}}
    js = report.write_results_json(tmp_path / "results.json", results, [], meta, policies)
    md, png = tmp_path / "r.md", tmp_path / "r.png"
    rc = ttc_eval.main(["--report-only", str(js), "--report", str(md), "--plot", str(png)])
    assert rc == 0 and md.exists() and png.exists()
    assert "Verdict: YES. `esc`" in md.read_text()


def test_dry_run_prints_problems_and_bodies(capsys):
    assert ttc_eval.main(["--dry-run", "--problems", "8", "--policies", "fixed-1,esc"]) == 0
    out = capsys.readouterr().out
    assert "L1 #0: 'What is " in out and "L4 #3: " in out
    lines = [ln for ln in out.splitlines() if ln.startswith(("fixed-1: ", "esc: "))]
    assert len(lines) == 2
    body = json.loads(lines[1].split(": ", 1)[1])
    assert body["ttc"]["esc_window"] == 4


def test_bad_arguments_exit_2(capsys):
    assert ttc_eval.main(["--dry-run", "--problems", "10"]) == 2
    assert ttc_eval.main(["--policies", "nope", "--dry-run"]) == 2
    assert ttc_eval.main([]) == 2
    assert "--base-url is required" in capsys.readouterr().err


# ---------------------------------------------------------------- client (mock transport)


def fake_server(fail_first_with_429: set[int], broken: set[int]):
    """A MockTransport answering like the future server; problem ids come from the prompt."""
    seen: dict[str, int] = {}
    lookup = {p.prompt: p for p in prob.generate(8, seed=0)}

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        p = lookup[body["messages"][0]["content"]]
        seen[p.id] = seen.get(p.id, 0) + 1
        if p.id in fail_first_with_429 and seen[p.id] == 1:
            return httpx.Response(429, headers={"Retry-After": "0"},
                                  json={"error": {"message": "queue full"}})
        if p.id in broken:
            return httpx.Response(500, json={"error": {"message": "engine died"}})
        n = body["ttc"]["n"]
        answer = str(p.answer) if p.id % 2 == 0 else str(p.answer + 1)
        return httpx.Response(200, json={
            "usage": {"prompt_tokens": 20, "completion_tokens": 10 * n, "total_tokens": 0},
            "ttc": {"answer": answer, "winning_share": 1.0, "samples_launched": n,
                    "samples_completed": n, "samples_stopped": 0, "stop_reasons": {},
                    "votes": {answer: float(n)}},
        })

    return httpx.MockTransport(handler), seen


def test_run_policy_retries_429_and_reports_errors():
    transport, seen = fake_server(fail_first_with_429={1, 2}, broken={5})
    problems = prob.generate(8, seed=0)
    policy = pol.all_policies()[2]  # fixed-4
    rows = asyncio.run(client.run_policy("http://x", "smol", problems, policy, pol.SAMPLING,
                                         concurrency=3, timeout_s=5, transport=transport))
    assert [r["problem"] for r in rows] == list(range(8))
    assert seen == {0: 1, 1: 2, 2: 2, 3: 1, 4: 1, 5: 1, 6: 1, 7: 1}
    assert [r["retries"] for r in rows] == [0, 1, 1, 0, 0, 0, 0, 0]
    assert [r["correct"] for r in rows] == [True, False, True, False, True, False, True, False]
    assert rows[5]["status"] == 500 and rows[5]["error"] == "HTTP 500: engine died"
    assert rows[0]["completion_tokens"] == 40 and rows[0]["samples_launched"] == 4
    assert sum(r["error"] is not None for r in rows) == 1


def test_fill_from_response_without_ttc_is_an_error():
    p = prob.generate(4, seed=0)[0]
    row = client.fill_from_response(client.result_row(p, pol.all_policies()[0]), 200,
                                    {"choices": [], "usage": {"completion_tokens": 5}})
    assert row["error"].startswith("HTTP 200 without a `ttc` object")
    assert row["correct"] is False
    row = client.fill_from_response(client.result_row(p, pol.all_policies()[0]), 400,
                                    "not json")
    assert row["error"] == "HTTP 400: not json"


def test_retry_after_parsing():
    assert client.retry_after_s(None) == 1.0
    assert client.retry_after_s("2") == 2.0
    assert client.retry_after_s("999") == 30.0
    assert client.retry_after_s("soon") == 1.0


def test_main_reports_an_unreachable_server(capsys):
    rc = ttc_eval.main(["--base-url", "http://127.0.0.1:9", "--problems", "4"])
    assert rc == 2
    assert "cannot talk to http://127.0.0.1:9" in capsys.readouterr().err


def test_dry_run_writes_to_the_given_stream():
    out = io.StringIO()
    args = ttc_eval.parse_args(["--dry-run", "--problems", "4"])
    ttc_eval.dry_run(args, pol.all_policies()[:1], out=out)
    lines = out.getvalue().splitlines()
    # header, one problem per level, blank, header, one body
    assert len(lines) == 8
    assert lines[0] == "# 4 problems (seed 0); the first two of each level:"
    assert lines[5] == "" and lines[7].startswith("fixed-1: {")
