"""Offline tests of the problem generator: every answer recomputed two independent ways."""

from __future__ import annotations

import ast
import operator
import re
import sys
from collections import Counter
from fractions import Fraction
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import problems as prob  # noqa: E402

_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
        ast.Div: operator.truediv}


def safe_eval(expr: str) -> Fraction:
    """An independent evaluator (Python's own parser and precedence) over exact fractions:
    a division that is not exact would leave a non-integer and fail the comparison."""

    def ev(node):
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return Fraction(node.value)
        raise ValueError(f"unexpected node {ast.dump(node)}")

    return ev(ast.parse(expr, mode="eval").body)


def replay(steps) -> int:
    """The answer from the step list: each step's result computed again, and each step's
    left operand either the previous result (a chain) or a grouped product's factor."""
    for s in steps:
        value = {"+": s.left + s.right, "-": s.left - s.right, "*": s.left * s.right,
                 "/": Fraction(s.left, s.right)}[s.op]
        assert value == s.result and value >= 0, s
    return steps[-1].result


# How the question says a whole-quantity factor ("* 2", "/ 3", ...) in words.
WORDED = {2: ("twice", "half", "doubles", "as many"), 3: ("three times", "triples", "3 equal"),
          4: ("4 equal",)}


PROBLEMS = prob.generate(1000, seed=3)


def test_generator_is_deterministic_and_prefix_stable():
    a = prob.generate(40, seed=7)
    assert a == prob.generate(40, seed=7)
    assert a != prob.generate(40, seed=8)
    assert prob.generate(200, seed=7)[:40] == a
    assert [p.id for p in a] == list(range(40))
    assert prob.make_problem(17, seed=7) == a[17]


@pytest.mark.parametrize("p", PROBLEMS, ids=lambda p: f"p{p.id}")
def test_every_answer_recomputes(p):
    assert isinstance(p.answer, int) and 0 <= p.answer <= prob.MAX_VALUE
    assert safe_eval(p.expr) == p.answer
    assert replay(p.steps) == p.answer
    # difficulty = arithmetic steps = operators in the expression
    assert len(p.steps) == p.level == len(re.findall(r"[-+*/]", p.expr))
    assert all(0 <= s.result <= prob.MAX_VALUE for s in p.steps)
    # every number of the expression is written in the question, or is a factor that the
    # question says in words; the question ends with the question sentence
    for number in map(int, re.findall(r"\d+", p.expr)):
        written = re.search(rf"\b{number}\b", p.question)
        worded = any(w in p.question for w in WORDED.get(number, ()))
        assert written or worded, (number, p.question)
    assert p.question.endswith("?") and p.question.count("?") == 1
    assert p.prompt == p.question and 0 <= p.seed < 2**31


def test_difficulties_are_balanced_and_interleaved():
    ps = prob.generate(200, seed=1)
    assert Counter(p.level for p in ps) == {2: 40, 3: 40, 4: 40, 5: 40, 6: 40}
    assert [p.level for p in ps[:10]] == [2, 3, 4, 5, 6, 2, 3, 4, 5, 6]


def test_variety():
    ps = PROBLEMS
    names = Counter(p.question.split(" ")[0] for p in ps)
    assert len(names) == len(prob.PEOPLE)
    items = Counter(d.item for d in prob.DOMAINS for p in ps if f" {d.item}" in p.question)
    assert len(items) == len(prob.DOMAINS)
    assert Counter(s.op for p in ps for s in p.steps).keys() == {"+", "-", "*", "/"}
    assert Counter(p.distractors for p in ps).keys() == set(prob.DISTRACTORS)
    assert len({p.question for p in ps}) == len(ps)


def test_distractors_add_numbers_that_the_answer_does_not_use():
    plain = [p for p in PROBLEMS if p.distractors == 1 and "/" not in p.expr
             and not any(w in p.question for w in ("twice", "three times", "as many", "doubles",
                                                   "triples"))]
    assert len(plain) > 20
    for p in plain:
        assert len(re.findall(r"\d+", p.question)) == len(re.findall(r"\d+", p.expr)) + 1


def test_example_problem_is_stable():
    """A fixed problem, so that an accidental change of the generator shows up."""
    p = prob.make_problem(0, seed=0)
    assert (p.level, p.answer, p.expr) == (2, 32, "((23 - 9) + 18)")
    assert p.question == ("Yuki has 23 stickers. Yuki trades away 9 stickers. "
                          "Hannah gives Yuki 18 stickers. How many stickers does Yuki have now?")


def test_prompt_template():
    p = prob.generate(5, seed=0, template="Q: {question}")[1]
    assert p.prompt == "Q: " + p.question
    for bad in ["no placeholder", "{question} {question}"]:
        with pytest.raises(ValueError, match="must contain"):
            prob.generate(5, seed=0, template=bad)


@pytest.mark.parametrize("n", [0, -5, 12])
def test_problem_count_must_be_a_multiple_of_5(n):
    with pytest.raises(ValueError, match="multiple of 5"):
        prob.generate(n, seed=0)
