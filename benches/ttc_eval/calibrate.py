"""Calibration of the problem difficulty and the sampling against a running server:
per-sample accuracy and majority-of-n accuracy per difficulty, on the first problems.

    python calibrate.py --base-url http://127.0.0.1:8000 --problems 30 --n 8 \\
        [--temperature 0.7] [--top-p 0.95] [--out calib.json]

Sends one n-sample self-consistency request per problem (the same shape as the eval's,
without a scorer) and prints a table; `--out` keeps the result rows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import client  # noqa: E402
import policies as pol  # noqa: E402
import problems as prob  # noqa: E402
import runs as rn  # noqa: E402
from scoring import is_correct  # noqa: E402


def table(rows: list[dict], n: int) -> list[str]:
    """Per difficulty and overall: problems, per-sample accuracy, majority-of-n accuracy,
    samples without an answer, mean tokens per sample."""
    out = [f"{'steps':>6} {'problems':>8} {'sample acc':>10} {f'maj@{n}':>7} "
           f"{'no answer':>9} {'tokens/sample':>13}"]
    levels = sorted({r["level"] for r in rows})
    for level in levels + [None]:
        rs = [r for r in rows if r["error"] is None and (level is None or r["level"] == level)]
        samples = [(s, r["expected"]) for r in rs for s in r["samples"]]
        if not samples:
            continue
        acc = sum(is_correct(s["answer"], e) for s, e in samples) / len(samples)
        maj = sum(is_correct(pol.majority(r["samples"]), r["expected"]) for r in rs) / len(rs)
        none = sum(s["answer"] is None for s, _ in samples) / len(samples)
        tokens = sum(s["tokens"] for s, _ in samples) / len(samples)
        out.append(f"{'all' if level is None else level:>6} {len(rs):>8} {acc:>10.3f} "
                   f"{maj:>7.3f} {none:>9.3f} {tokens:>13.1f}")
    return out


async def calibrate(args: argparse.Namespace) -> list[dict]:
    problems = prob.generate(args.problems, args.seed)
    sampling = {**rn.SAMPLING, "temperature": args.temperature, "top_p": args.top_p}
    run = rn.Run(f"calib-{args.n}", "small", rn._sc(args.n), sampling)
    model = await client.fetch_model(args.base_url)
    return await client.run_requests(args.base_url, model, problems, run, args.concurrency,
                                     timeout_s=3600)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base-url", required=True)
    p.add_argument("--problems", type=int, default=30)
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--temperature", type=float, default=rn.SAMPLING["temperature"])
    p.add_argument("--top-p", type=float, default=rn.SAMPLING["top_p"])
    p.add_argument("--concurrency", type=int, default=2)
    p.add_argument("--out", help="write the result rows here (JSON)")
    args = p.parse_args()
    t0 = time.monotonic()
    rows = asyncio.run(calibrate(args))
    print(f"# {args.problems} problems, n {args.n}, temperature {args.temperature}, top_p "
          f"{args.top_p}, {time.monotonic() - t0:.0f} s, errors "
          f"{sum(r['error'] is not None for r in rows)}")
    print("\n".join(table(rows, args.n)))
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
