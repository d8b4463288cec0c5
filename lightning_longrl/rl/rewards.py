"""Rule-based rewards: response format and answer accuracy, combined with weights.

A reward function takes one response text and the record it answers and returns a float. The
defaults are strict: a response earns accuracy credit only when it is well formed, so answers
outside the tags, several answer blocks, an empty answer or an unclosed ``<think>`` earn nothing.
Other functions plug in from YAML by import path (``RewardSpec.function``); a class named there
is built with ``RewardSpec.arguments``, and when it has ``score_batch(responses, records)`` it
scores a whole step's responses at once (the LLM judge, :mod:`lightning_longrl.rl.judge`, sends
them concurrently) and may mark responses whose scoring failed. Length shaping
(:class:`OverlongPenalty`) works on token counts, not texts, and is added to the total after them.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from lightning_longrl.data.prompts import normalize_choice, parse_response
from lightning_longrl.data.records import VideoQARecord
from lightning_longrl.importing import import_object

RewardFunction = Callable[[str, VideoQARecord], float]

NUMERIC_REL_TOL = 1e-2
"""Open-ended numeric answers match within this relative tolerance (or ``NUMERIC_ABS_TOL``)."""
NUMERIC_ABS_TOL = 1e-6

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_NUMBER = re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$")


def normalize_text(text: str) -> str:
    """Lower case, no punctuation, no articles, single spaces (SQuAD-style answer normalisation)."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in string.punctuation or ch in ".-")
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split()).strip(" .")


def _number(text: str) -> float | None:
    text = text.replace(",", "").strip()
    return float(text) if _NUMBER.match(text) else None


def answers_match(answer: str | None, record: VideoQARecord) -> bool:
    """Whether an extracted answer is right: the option letter for multiple choice, otherwise a
    normalised exact match or, for numbers, a match within a small tolerance."""
    if answer is None or not answer.strip():
        return False
    if record.is_multiple_choice:
        return normalize_choice(answer, record.options) == record.answer
    predicted, expected = normalize_text(answer), normalize_text(record.answer)
    if predicted == expected:
        return True
    a, b = _number(predicted), _number(expected)
    return a is not None and b is not None and math.isclose(a, b, rel_tol=NUMERIC_REL_TOL, abs_tol=NUMERIC_ABS_TOL)


def format_reward(response: str, record: VideoQARecord) -> float:
    """1.0 for exactly one non-empty ``<think>`` block followed by exactly one non-empty
    ``<answer>`` block with nothing but whitespace around them, else 0.0."""
    return 1.0 if parse_response(response).well_formed else 0.0


def accuracy_reward(response: str, record: VideoQARecord) -> float:
    """1.0 when the response is well formed and its answer is right, else 0.0."""
    parsed = parse_response(response)
    return 1.0 if parsed.well_formed and answers_match(parsed.answer, record) else 0.0


@dataclass
class RewardSpec:
    """One weighted reward term."""

    name: str
    """Name in logs (``reward/<name>``); dynamic sampling reads the term named ``accuracy``."""
    function: str
    """Import path of a ``(response: str, record: VideoQARecord) -> float`` function."""
    weight: float = 1.0
    arguments: dict[str, Any] | None = None
    """When set, ``function`` names a class built with these arguments (e.g. the judge's endpoint)."""


@dataclass
class BatchScores:
    """What a batched reward (one with ``score_batch``) returns for N responses."""

    values: list[float]
    failed: list[bool] | None = None
    """Responses whose scoring failed (they got the term's failure score); logged as the term
    ``<name>_failed``."""


def default_rewards() -> list[RewardSpec]:
    """0.9 * accuracy + 0.1 * format, as Long-RL trains."""
    return [
        RewardSpec("accuracy", "lightning_longrl.rl.rewards.accuracy_reward", 0.9),
        RewardSpec("format", "lightning_longrl.rl.rewards.format_reward", 0.1),
    ]


@dataclass
class RewardScores:
    """Rewards of N responses: the weighted total and each term."""

    total: list[float]
    terms: dict[str, list[float]] = field(default_factory=dict)


class CombinedReward:
    """The weighted sum of several reward terms.

    Raises:
        ValueError: a function cannot be imported or is not callable, or two terms share a name.
    """

    def __init__(self, specs: list[RewardSpec]) -> None:
        if not specs:
            raise ValueError("rewards: give at least one reward term")
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"rewards: term names must be unique, got {names}")
        self.specs = specs
        self.functions: list[RewardFunction] = []
        for spec in specs:
            function = import_object(spec.function, f"reward {spec.name!r}")
            if spec.arguments is not None:
                if not isinstance(function, type):
                    raise ValueError(f"reward {spec.name!r}: arguments given but {spec.function!r} is not a class")
                try:
                    function = function(**spec.arguments)
                except TypeError as err:
                    raise ValueError(f"reward {spec.name!r}: {spec.function} does not take arguments "
                                     f"{sorted(spec.arguments)} ({err})") from err
            if not callable(function):
                raise ValueError(f"reward {spec.name!r}: {spec.function!r} is not callable")
            self.functions.append(function)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.specs]

    def __call__(self, responses: list[str], records: list[VideoQARecord]) -> RewardScores:
        terms = {}
        extra = {}
        for spec, function in zip(self.specs, self.functions):
            terms[spec.name], failed = self._score(spec, function, responses, records)
            if failed is not None:
                extra[f"{spec.name}_failed"] = [float(f) for f in failed]
        total = [sum(s.weight * terms[s.name][i] for s in self.specs) for i in range(len(responses))]
        return RewardScores(total, {**terms, **extra})

    def term(self, name: str, responses: list[str], records: list[VideoQARecord]) -> list[float]:
        """The unweighted values of the one term ``name`` (the others are not computed)."""
        index = self.names.index(name)
        return self._score(self.specs[index], self.functions[index], responses, records)[0]

    @staticmethod
    def _score(spec: RewardSpec, function, responses: list[str],
               records: list[VideoQARecord]) -> tuple[list[float], list[bool] | None]:
        """One term's finite values for the responses, and which failed (batched terms only)."""
        failed = None
        if hasattr(function, "score_batch"):
            scores = function.score_batch(responses, records)
            values = [float(v) for v in scores.values]
            if len(values) != len(responses):
                raise ValueError(f"reward {spec.name!r} returned {len(values)} scores for {len(responses)} responses")
            failed = scores.failed
        else:
            values = [float(function(response, record)) for response, record in zip(responses, records)]
        for value, record in zip(values, records):
            if not math.isfinite(value):
                raise ValueError(f"reward {spec.name!r} returned {value} for record {record.id!r}")
        return values, failed


@dataclass
class OverlongPenalty:
    """DAPO's soft overlong punishment: a penalty that grows over the last ``buffer`` tokens before
    the length limit, added to every response's reward (logged as ``reward/overlong``).

    With ``L`` the response's length in tokens and ``L_max`` the rollouts' ``max_new_tokens``: 0 up
    to ``L_max - buffer``, then falling linearly to ``-weight`` at ``L_max`` (and ``-weight``
    beyond). A response cut at the limit rarely ends with an answer; the ramp tells the policy
    so before it gets there. ``buffer: 0`` (the default) turns it off.
    """

    buffer: int = 0
    """Tokens before ``max_new_tokens`` over which the penalty ramps up (DAPO: 4,096 of 20,480)."""
    weight: float = 1.0
    """The penalty at the limit (DAPO: 1)."""

    def __post_init__(self) -> None:
        if self.buffer < 0:
            raise ValueError(f"overlong_penalty buffer must be >= 0, got {self.buffer}")
        if self.weight < 0:
            raise ValueError(f"overlong_penalty weight must be >= 0, got {self.weight}")

    @property
    def enabled(self) -> bool:
        return self.buffer > 0 and self.weight > 0

    def __call__(self, lengths: Tensor, max_new_tokens: int) -> Tensor:
        """Penalties (<= 0), float32 and shaped like ``lengths`` (response lengths in tokens)."""
        if self.buffer >= max_new_tokens:
            raise ValueError(f"overlong_penalty buffer ({self.buffer}) must be below max_new_tokens ({max_new_tokens})")
        free = max_new_tokens - self.buffer
        over = (lengths.float() - free).clamp(min=0.0) / self.buffer
        return -self.weight * over.clamp(max=1.0)
