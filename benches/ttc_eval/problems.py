"""Seeded arithmetic problems in four difficulty levels, each with an exact integer answer.

Levels (problem i has level i % 4 + 1, so every prefix of the list is balanced):
  1  one step:        "7 + 5", "14 - 6"               (answers >= 0)
  2  two steps:       "14 + 9 - 6"
  3  mult + add:      "6 * 4 + 3"
  4  word problem:    "Tom has 3 boxes with 4 apples each and eats 2. How many apples are left?"

Every problem carries `expr`, the arithmetic expression (over the numbers in the
question, in order) whose value is `answer`; the tests recompute it independently.
Generation uses one `random.Random(seed)` and draws problem by problem, so the first
k problems of `generate(n, seed)` equal `generate(k, seed)` for any k <= n.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass

LEVELS = (1, 2, 3, 4)

# The chat message. Tuned on SmolLM2-135M-Instruct: asked "What is 7 + 5?" it writes its
# working ("7 + 5 = 12"), which it needs; asking it to end with "The answer is ..." made it
# answer at once without working (worse), and a placeholder ("The answer is N.") made it
# echo the letter N. Requests stop at the first blank line (SAMPLING["stop"]), where the
# model starts rambling and quoting the question's numbers again.
PROMPT_TEMPLATE = "{question}"

NAMES = ("Tom", "Anna", "Ben", "Mia", "Sam", "Lily", "Omar", "Zoe")

# Level-4 templates: (question with {name} {a} {b} {c}, expression over a b c, constraint).
# The constraint keeps the answer a non-negative integer.
WORD_TEMPLATES = (
    (
        "{name} has {a} boxes with {b} apples each and eats {c}. How many apples are left?",
        "{a} * {b} - {c}",
    ),
    (
        "{name} buys {a} packs of {b} pencils and gives away {c}. "
        "How many pencils does {name} have now?",
        "{a} * {b} - {c}",
    ),
    (
        "{name} has {a} marbles, finds {b} more and then loses {c}. "
        "How many marbles does {name} have now?",
        "{a} + {b} - {c}",
    ),
    (
        "A shelf has {a} rows of {b} books. {name} adds {c} more books. "
        "How many books are on the shelf?",
        "{a} * {b} + {c}",
    ),
    (
        "{name} reads {a} pages a day for {b} days and then {c} more pages. "
        "How many pages did {name} read in total?",
        "{a} * {b} + {c}",
    ),
    (
        "{name} had {a} dollars, spent {b} dollars on lunch and then earned {c} dollars. "
        "How many dollars does {name} have now?",
        "{a} - {b} + {c}",
    ),
)


@dataclass(frozen=True)
class Problem:
    id: int
    level: int
    question: str  # the problem text put into PROMPT_TEMPLATE
    expr: str  # arithmetic over the question's numbers, in order; evaluates to `answer`
    answer: int
    seed: int  # the request `seed` for this problem (the same for every policy)
    prompt: str  # the chat message: the prompt template around `question`

    def to_dict(self) -> dict:
        return asdict(self)


def _level1(rng: random.Random) -> tuple[str, str, int]:
    a, b = rng.randint(1, 12), rng.randint(1, 12)
    if rng.random() < 0.5:
        return f"What is {a} + {b}?", f"{a} + {b}", a + b
    a, b = max(a, b), min(a, b)
    return f"What is {a} - {b}?", f"{a} - {b}", a - b


def _level2(rng: random.Random) -> tuple[str, str, int]:
    a, b = rng.randint(2, 20), rng.randint(2, 20)
    c = rng.randint(1, a + b)
    return f"What is {a} + {b} - {c}?", f"{a} + {b} - {c}", a + b - c


def _level3(rng: random.Random) -> tuple[str, str, int]:
    a, b, c = rng.randint(2, 12), rng.randint(2, 12), rng.randint(1, 20)
    return f"What is {a} * {b} + {c}?", f"{a} * {b} + {c}", a * b + c


def _level4(rng: random.Random) -> tuple[str, str, int]:
    text, expr = rng.choice(WORD_TEMPLATES)
    name = rng.choice(NAMES)
    a, b = rng.randint(2, 9), rng.randint(2, 9)
    if "*" in expr:
        c = rng.randint(1, a * b - 1)
    elif expr.startswith("{a} -"):
        a = rng.randint(10, 40)
        b = rng.randint(1, a - 1)
        c = rng.randint(1, 20)
    else:
        a = rng.randint(5, 30)
        c = rng.randint(1, a + b - 1)
    values = {"a": a, "b": b, "c": c}
    expr = expr.format(**values)
    answer = _eval_simple(expr)
    return text.format(name=name, **values), expr, answer


def _eval_simple(expr: str) -> int:
    """Evaluates "a op b [op c]" with * before + and - (the only forms generated)."""
    tokens = expr.split()
    # fold multiplications first
    folded: list[str] = [tokens[0]]
    for op, num in zip(tokens[1::2], tokens[2::2]):
        if op == "*":
            folded[-1] = str(int(folded[-1]) * int(num))
        else:
            folded += [op, num]
    total = int(folded[0])
    for op, num in zip(folded[1::2], folded[2::2]):
        total = total + int(num) if op == "+" else total - int(num)
    return total


_GENERATORS = {1: _level1, 2: _level2, 3: _level3, 4: _level4}


def generate(n: int, seed: int, template: str = PROMPT_TEMPLATE) -> list[Problem]:
    """`n` problems (a multiple of 4: the same count per level), deterministic in `seed`;
    `template` must contain "{question}" once."""
    if n <= 0 or n % len(LEVELS) != 0:
        raise ValueError(f"--problems must be a positive multiple of {len(LEVELS)}, given {n}")
    if template.count("{question}") != 1:
        raise ValueError(f'the prompt template must contain "{{question}}" once, given {template!r}')
    rng = random.Random(seed)
    problems = []
    for i in range(n):
        level = LEVELS[i % len(LEVELS)]
        question, expr, answer = _GENERATORS[level](rng)
        problems.append(
            Problem(
                id=i,
                level=level,
                question=question,
                expr=expr,
                answer=answer,
                seed=rng.getrandbits(31),
                prompt=template.replace("{question}", question),
            )
        )
    return problems
