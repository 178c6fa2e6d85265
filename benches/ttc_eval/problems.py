"""Seeded GSM-style word problems (templated like GSM-Symbolic) with exact answers.

A problem is a short story about one quantity (marbles, stickers, dollars, ...) that a
person owns; each sentence after the first changes it by one arithmetic step:

    "Maya has 4 boxes with 9 stickers in each box.          x = 4 * 9       (1 step)
     Maya's brother is 12 years old.                        (distractor)
     She gives 7 stickers to Omar.                          x = 36 - 7      (1 step)
     Then she buys 3 packs of 5 stickers each.              x = 29 + 3 * 5  (2 steps)
     How many stickers does Maya have now?"                 answer 44

Difficulty = the number of arithmetic steps (+, -, *, /): problem i has
`STEPS[i % len(STEPS)]` steps (2..6), so every prefix of the list is balanced across
difficulties. Names, quantities, numbers, sentence templates and 0-2 irrelevant
distractor sentences (with numbers of their own) are drawn at random. Every value along
the way is a non-negative integer (divisions are exact), at most MAX_VALUE.

Each problem carries `steps` (op, left, right, result per step, in order) and `expr` (one
fully parenthesized expression over the same numbers) so a test recomputes the answer
twice, independently. Problem i is drawn from its own `random.Random(f"{seed}:{i}")`, so
`generate(k, seed)` is a prefix of `generate(n, seed)` for any k <= n.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field

# Difficulty levels (arithmetic steps per problem), cycled over the problem index.
STEPS = (2, 3, 4, 5, 6)
# Largest value a problem's quantity may take at any step.
MAX_VALUE = 200
# Relative weights of the sentence kinds (among those that fit): mostly additions and
# subtractions, as in GSM8K, with some grouped products and whole-quantity * and /.
KIND_WEIGHTS = {"add": 3, "sub": 3, "add_groups": 2, "sub_groups": 1, "mul": 1, "div": 1}
# Distractor sentences per problem: drawn from this tuple.
DISTRACTORS = (0, 1)

# The user message: the problem text alone (the system message asks for the format).
PROMPT_TEMPLATE = "{question}"

# The system message of every request (the chat template's default is the same text).
SYSTEM_PROMPT = (
    "You are a careful math tutor. First think step by step inside <think> ... </think>. "
    "Always close your thinking with </think> on its own line, and only after it write the "
    'final line "The answer is N." where N is the final number.'
)

# Worked examples sent before every problem (two-shot): they show the format, thinking
# closed with </think> and the answer line after it, and a distractor being ignored.
# Without them Qwen2.5-Coder-0.5B mostly answers inside the thinking and ends its turn
# without </think>, which leaves no answer (README.md, "Prompt"). Their names, items and
# numbers are not ones the generator uses.
EXAMPLES = (
    ("Ben has 3 bags with 7 marbles in each. His sister is 9 years old. "
     "He gives 5 marbles to Zoe. How many marbles does Ben have now?",
     "<think>\nBen starts with 3 bags of 7 marbles: 3 * 7 = 21 marbles.\n"
     "His sister's age does not change the number of marbles.\n"
     "He gives 5 marbles away: 21 - 5 = 16.\n</think>\n\nThe answer is 16."),
    ("Ana has 20 stickers. She buys 2 packs of 6 stickers each. Her cousin is 11 years old. "
     "Then she gives half of her stickers to Tom. How many stickers does Ana have now?",
     "<think>\nAna starts with 20 stickers.\n"
     "She buys 2 packs of 6: 2 * 6 = 12, so 20 + 12 = 32 stickers.\n"
     "Her cousin's age does not change the number of stickers.\n"
     "She gives half away: 32 / 2 = 16.\n</think>\n\nThe answer is 16."),
)

# (name, subject pronoun, possessive)
PEOPLE = (
    ("Maya", "she", "her"), ("Liam", "he", "his"), ("Sofia", "she", "her"),
    ("Noah", "he", "his"), ("Aisha", "she", "her"), ("Mateo", "he", "his"),
    ("Chloe", "she", "her"), ("Ravi", "he", "his"), ("Yuki", "she", "her"),
    ("Omar", "he", "his"), ("Elena", "she", "her"), ("Kofi", "he", "his"),
    ("Hannah", "she", "her"), ("Diego", "he", "his"), ("Priya", "she", "her"),
    ("Lucas", "he", "his"),
)
RELATIVES = ("brother", "sister", "cousin", "neighbor", "aunt", "uncle")


@dataclass(frozen=True)
class Domain:
    """What the story counts, and the phrases that change it. Placeholders: {name},
    {pron} (subject pronoun), {pos} (possessive), {friend}, {item}, {container},
    {b} (a count), {k} (groups), {m} (per group)."""

    item: str
    container: str
    add: tuple[str, ...]
    sub: tuple[str, ...]
    add_groups: tuple[str, ...]  # + k * m
    sub_groups: tuple[str, ...]  # - k * m
    start: str = "{name} has {a} {item}."
    start_groups: str = "{name} has {k} {container} with {m} {item} in each."


_COLLECT_ADD = ("{name} finds {b} more {item}.", "{friend} gives {name} {b} {item}.",
                "{name} buys {b} more {item}.")
_COLLECT_SUB = ("{name} gives {b} {item} to {friend}.", "{name} loses {b} {item}.",
                "{name} trades away {b} {item}.")
_COLLECT_ADD_GROUPS = ("{name} buys {k} {container} of {m} {item} each.",
                       "{friend} gives {name} {k} {container} with {m} {item} in each.")
_COLLECT_SUB_GROUPS = ("{name} gives away {k} {container} with {m} {item} in each.",
                       "{name} sells {k} {container} with {m} {item} in each.")


def _collection(item: str, container: str) -> Domain:
    return Domain(item, container, _COLLECT_ADD, _COLLECT_SUB, _COLLECT_ADD_GROUPS,
                  _COLLECT_SUB_GROUPS)


DOMAINS = (
    _collection("marbles", "bags"),
    _collection("stickers", "sheets"),
    _collection("stamps", "albums"),
    _collection("seashells", "buckets"),
    _collection("trading cards", "packs"),
    _collection("pencils", "boxes"),
    Domain("cookies", "trays",
           add=("{name} bakes {b} more cookies.", "{friend} brings {name} {b} cookies."),
           sub=("{name} eats {b} cookies.", "{name} gives {b} cookies to {friend}.",
                "{name} sells {b} cookies at a bake sale."),
           add_groups=("{name} bakes {k} trays of {m} cookies each.",),
           sub_groups=("{name} packs {k} bags of {m} cookies each for the bake sale.",)),
    Domain("apples", "baskets",
           add=("{name} picks {b} more apples.", "{friend} gives {name} {b} apples."),
           sub=("{name} uses {b} apples to make a pie.", "{name} sells {b} apples."),
           add_groups=("{name} picks {k} baskets with {m} apples in each.",),
           sub_groups=("{name} sells {k} bags of {m} apples each.",)),
    Domain("dollars", "envelopes",
           add=("{name} earns {b} dollars mowing lawns.", "{friend} pays {name} {b} dollars.",
                "{name} finds {b} dollars in an old coat."),
           sub=("{name} spends {b} dollars on lunch.", "{name} pays {friend} {b} dollars.",
                "{name} buys a book for {b} dollars."),
           add_groups=("{name} works {k} hours at {m} dollars an hour.",
                       "{name} sells {k} drawings for {m} dollars each."),
           sub_groups=("{name} buys {k} notebooks at {m} dollars each.",
                       "{name} buys {k} tickets that cost {m} dollars each."),
           start_groups="{name} has {k} envelopes with {m} dollars in each."),
)

# One-step multiplications and divisions of the whole quantity (any domain).
_MUL = {
    2: ("By the end of the week, {name} has twice as many {item} as before.",
        "{name} doubles the number of {item} {pron} has."),
    3: ("By the end of the month, {name} has three times as many {item} as before.",
        "{name} triples the number of {item} {pron} has."),
}
_DIV = {
    2: ("{name} gives half of {pos} {item} to {friend}.",
        "{name} puts half of {pos} {item} away for later and keeps the rest out."),
    3: ("{name} splits {pos} {item} into 3 equal groups and keeps only one group.",),
    4: ("{name} splits {pos} {item} into 4 equal groups and keeps only one group.",),
}
_DISTRACTORS = (
    "{name}'s {relative} is {n} years old.",
    "{friend}'s dog is {n} months old.",
    "The store is {n} minutes away from {name}'s house.",
    "{name}'s class has {n} students.",
    "{friend} read {n} pages of a book yesterday.",
)
_QUESTIONS = ("How many {item} does {name} have now?", "How many {item} does {name} have left?",
              "How many {item} does {name} have at the end?")


@dataclass(frozen=True)
class Step:
    """One arithmetic step: `result = left op right` (op in + - * /, / exact)."""

    op: str
    left: int
    right: int
    result: int


@dataclass(frozen=True)
class Problem:
    id: int
    level: int  # the number of arithmetic steps (difficulty)
    question: str  # the whole problem text, ending with its question
    expr: str  # fully parenthesized; `//` never appears: "/" divides exactly
    steps: tuple[Step, ...] = field(hash=False)
    answer: int = 0
    seed: int = 0  # the request `seed` for this problem (the same for every policy)
    prompt: str = ""  # the user message: the prompt template around `question`
    distractors: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


class _Story:
    """Builds one problem: the running quantity, its expression, steps and sentences."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.domain = rng.choice(DOMAINS)
        (self.name, self.pron, self.pos), friend = rng.sample(PEOPLE, 2)
        self.friend = friend[0]
        self.value = 0
        self.expr = ""
        self.steps: list[Step] = []
        self.sentences: list[str] = []
        self.used: set[str] = set()

    def pick(self, templates: tuple[str, ...]) -> str:
        """A random template, preferring ones this story has not used yet."""
        fresh = [t for t in templates if t not in self.used]
        choice = self.rng.choice(fresh or list(templates))
        self.used.add(choice)
        return choice

    def say(self, template: str, **numbers: int) -> None:
        text = template.format(name=self.name, pron=self.pron, pos=self.pos,
                               friend=self.friend, item=self.domain.item,
                               container=self.domain.container, **numbers)
        if self.sentences and text.startswith(self.name + " ") and self.rng.random() < 0.4:
            text = self.pron.capitalize() + text[len(self.name):]  # "She gives ..."
        self.sentences.append(text)

    def apply(self, op: str, right: int, right_expr: str | None = None) -> None:
        left = self.value
        result = {"+": left + right, "-": left - right, "*": left * right,
                  "/": left // right}[op]
        assert result >= 0 and (op != "/" or left % right == 0)
        self.steps.append(Step(op, left, right, result))
        self.expr = f"({self.expr} {op} {right_expr or right})"
        self.value = result

    def start(self, grouped: bool) -> int:
        """The first sentence; returns the steps it used (0 or 1)."""
        rng = self.rng
        if grouped:
            k, m = rng.randint(2, 5), rng.randint(2, 10)
            self.say(self.domain.start_groups, k=k, m=m)
            self.steps.append(Step("*", k, m, k * m))
            self.value, self.expr = k * m, f"({k} * {m})"
            return 1
        a = rng.randint(6, 40)
        self.say(self.domain.start, a=a)
        self.value, self.expr = a, str(a)
        return 0

    def options(self, left: int) -> list[str]:
        """Sentence kinds that fit in `left` remaining steps and keep values in range."""
        v = self.value
        kinds = ["add"]
        if v >= 3:
            kinds.append("sub")
        if left >= 2:
            kinds.append("add_groups")
            if v >= 6:
                kinds.append("sub_groups")
        if 2 <= v <= MAX_VALUE // 2:
            kinds.append("mul")
        if any(v % d == 0 and v >= 2 * d for d in _DIV):
            kinds.append("div")
        return kinds

    def sentence(self, kind: str) -> int:
        """Adds one sentence of `kind`; returns the steps it used."""
        rng, d, v = self.rng, self.domain, self.value
        room = MAX_VALUE - v
        if kind == "add":
            b = rng.randint(2, max(2, min(25, room)))
            self.say(self.pick(d.add), b=b)
            self.apply("+", b)
            return 1
        if kind == "sub":
            b = rng.randint(2, min(25, v - 1))
            self.say(self.pick(d.sub), b=b)
            self.apply("-", b)
            return 1
        if kind in ("add_groups", "sub_groups"):
            limit = room if kind == "add_groups" else v - 1  # keep at least 1 after "-"
            k = rng.randint(2, min(5, limit // 2))
            m = rng.randint(2, min(10, limit // k))
            self.say(self.pick(getattr(d, kind)), k=k, m=m)
            self.steps.append(Step("*", k, m, k * m))
            self.apply("+" if kind == "add_groups" else "-", k * m, f"({k} * {m})")
            return 2
        if kind == "mul":
            f = 3 if v * 3 <= MAX_VALUE and rng.random() < 0.3 else 2
            self.say(self.pick(_MUL[f]))
            self.apply("*", f)
            return 1
        divisors = [q for q in _DIV if v % q == 0 and v >= 2 * q]
        q = rng.choice(divisors)
        self.say(self.pick(_DIV[q]))
        self.apply("/", q)
        return 1

    def distractor(self) -> str:
        """An irrelevant sentence with a number of its own (no template twice)."""
        template = self.pick(_DISTRACTORS)
        return template.format(name=self.name, friend=self.friend,
                               relative=self.rng.choice(RELATIVES), item=self.domain.item,
                               n=self.rng.randint(3, 60))


def _fits(story: _Story, kind: str) -> bool:
    """Whether `kind` can be applied without leaving [0, MAX_VALUE]."""
    v = story.value
    if kind == "add":
        return v + 2 <= MAX_VALUE
    if kind == "add_groups":
        return v + 4 <= MAX_VALUE
    if kind == "sub_groups":
        return v - 1 >= 4
    return True


def _draw(rng: random.Random, n_steps: int) -> _Story:
    """One story with exactly `n_steps` arithmetic steps."""
    story = _Story(rng)
    left = n_steps - story.start(grouped=rng.random() < 0.4)
    while left > 0:
        kinds = [k for k in story.options(left) if _fits(story, k)]
        kind = rng.choices(kinds, weights=[KIND_WEIGHTS[k] for k in kinds])[0]
        left -= story.sentence(kind)
    return story


def make_problem(i: int, seed: int, template: str = PROMPT_TEMPLATE) -> Problem:
    """Problem `i` of the list for `seed` (independent of how many are generated)."""
    rng = random.Random(f"{seed}:{i}")
    level = STEPS[i % len(STEPS)]
    story = _draw(rng, level)
    n_distract = rng.choice(DISTRACTORS)
    sentences = list(story.sentences)
    for _ in range(n_distract):
        # never before the first sentence, which introduces the quantity
        sentences.insert(rng.randint(1, len(sentences)), story.distractor())
    question = rng.choice(_QUESTIONS).format(item=story.domain.item, name=story.name)
    text = " ".join(sentences + [question])
    return Problem(id=i, level=level, question=text, expr=story.expr,
                   steps=tuple(story.steps), answer=story.value, seed=rng.getrandbits(31),
                   prompt=template.replace("{question}", text), distractors=n_distract)


def generate(n: int, seed: int, template: str = PROMPT_TEMPLATE) -> list[Problem]:
    """`n` problems (a multiple of len(STEPS): the same count per difficulty),
    deterministic in `seed`; `template` must contain "{question}" once."""
    if n <= 0 or n % len(STEPS) != 0:
        raise ValueError(f"--problems must be a positive multiple of {len(STEPS)}, given {n}")
    if template.count("{question}") != 1:
        raise ValueError(f'the prompt template must contain "{{question}}" once, given {template!r}')
    return [make_problem(i, seed, template) for i in range(n)]
