"""Timelines of synthetic long videos and the questions asked about them.

Every video shows one small world evolving over time: coloured squares flashing in the centre,
a ball moving between the four quadrants, a background changing colour, a dot visiting targets.
Each answer needs information spread over the whole video (order of events, counts, where an
object spent its time, which state came before which), and several hinge on brief events
(a flash or a visit lasting about a second), so a model that sees more frames can answer more.

This module only decides *what happens when*; :mod:`lightning_longrl.synth.render` draws it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (225, 35, 35),
    "green": (30, 185, 60),
    "blue": (40, 80, 235),
    "yellow": (240, 215, 30),
    "purple": (150, 50, 200),
    "orange": (250, 140, 20),
    "cyan": (30, 205, 215),
    "white": (245, 245, 245),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "gray": (110, 110, 110),
    "navy": (20, 30, 90),
    "olive": (95, 100, 25),
    "maroon": (95, 20, 30),
    "teal": (15, 90, 90),
    "black": (10, 10, 10),
}
QUADRANTS = ("top left", "top right", "bottom left", "bottom right")
QUADRANT_CENTRES = {"top left": (0.25, 0.25), "top right": (0.75, 0.25), "bottom left": (0.25, 0.75), "bottom right": (0.75, 0.75)}


@dataclass(frozen=True)
class Sprite:
    """A filled shape visible during ``[start, end)`` seconds, moving linearly from ``xy0`` to ``xy1``."""

    shape: str  # "square" | "circle"
    color: tuple[int, int, int]
    size: float  # side / diameter as a fraction of the frame's shorter side
    start: float
    end: float
    xy0: tuple[float, float]  # centre, fractions of width/height
    xy1: tuple[float, float] | None = None

    def position(self, t: float) -> tuple[float, float]:
        if self.xy1 is None or self.end <= self.start:
            return self.xy0
        a = min(max((t - self.start) / (self.end - self.start), 0.0), 1.0)
        return (self.xy0[0] + a * (self.xy1[0] - self.xy0[0]), self.xy0[1] + a * (self.xy1[1] - self.xy0[1]))


@dataclass
class Scene:
    """Everything drawn in one video."""

    duration: float
    backgrounds: list[tuple[float, tuple[int, int, int]]]  # (start time, colour), sorted
    sprites: list[Sprite] = field(default_factory=list)


@dataclass
class SceneQuestion:
    """A scene plus one multiple-choice question about it."""

    scene: Scene
    category: str
    task: str
    question: str
    options: list[str]
    answer: str  # option letter
    reasoning: str


def _letter(options: list[str], correct: str) -> str:
    return "ABCDEFGH"[options.index(correct)]


def _distinct_times(rng: np.random.Generator, count: int, duration: float, length: float, gap: float) -> list[float]:
    """``count`` sorted start times of events of ``length`` seconds, spread over the video, at least ``gap`` apart."""
    slot = duration / count
    times = []
    for i in range(count):
        lo = i * slot + gap / 2
        hi = (i + 1) * slot - length - gap / 2
        times.append(float(rng.uniform(lo, max(lo, hi))))
    return times


def _fmt(t: float) -> str:
    return f"{t:.1f}s"


def flash_order(rng: np.random.Generator, duration: float, flash: float) -> SceneQuestion:
    """Temporal: coloured squares flash one at a time; ask which came first/last/after another."""
    colors = list(rng.choice(list(COLORS), size=4, replace=False))
    times = _distinct_times(rng, 4, duration, flash, gap=1.0)
    sprites = [Sprite("square", COLORS[c], 0.45, t, t + flash, (0.5, 0.5)) for c, t in zip(colors, times)]
    seen = "; ".join(f"a {c} square flashes at {_fmt(t)}" for c, t in zip(colors, times))
    variant = int(rng.integers(3))
    if variant == 0:
        question, correct, why = "Which colour of square flashes first in the video?", colors[0], f"the earliest is {colors[0]}"
    elif variant == 1:
        question, correct, why = "Which colour of square flashes last in the video?", colors[-1], f"the latest is {colors[-1]}"
    else:
        k = int(rng.integers(3))
        question = f"Which colour of square flashes right after the {colors[k]} one?"
        correct, why = colors[k + 1], f"the flash following {colors[k]} is {colors[k + 1]}"
    options = list(rng.permutation(colors))
    reasoning = f"Checking the video from start to end: {seen}. Ordering the flashes by time, {why}."
    return SceneQuestion(Scene(duration, [(0.0, BACKGROUNDS["gray"])], sprites), "Temporal", "flash_order",
                         question, options, _letter(options, correct), reasoning)


def blink_count(rng: np.random.Generator, duration: float, flash: float) -> SceneQuestion:
    """Temporal: a white square blinks briefly N times; ask how many."""
    count = int(rng.integers(1, 7))
    blink = max(0.5, flash * 0.5)
    times = _distinct_times(rng, count, duration, blink, gap=1.0)
    sprites = [Sprite("square", COLORS["white"], 0.4, t, t + blink, (0.5, 0.5)) for t in times]
    wrong = [n for n in range(1, 8) if n != count]
    # options in random order: a sorted list would put small counts at A and make the letter guessable
    options = [str(n) for n in rng.permutation([count, *rng.choice(wrong, size=3, replace=False).tolist()])]
    seen = ", ".join(_fmt(t) for t in times)
    reasoning = (f"Checking the video for the white square: it blinks at {seen}. "
                 f"Counting these blinks gives {count}.")
    return SceneQuestion(Scene(duration, [(0.0, BACKGROUNDS["navy"])], sprites), "Temporal", "blink_count",
                         "How many times does the white square blink?", options, _letter(options, str(count)), reasoning)


def ball_tracking(rng: np.random.Generator, duration: float, flash: float) -> SceneQuestion:
    """Spatial: a ball hops between quadrants; ask where it spent the most time, or where it ends."""
    stops = int(rng.integers(4, 7))
    path = [str(rng.choice(QUADRANTS))]
    while len(path) < stops:
        path.append(str(rng.choice([q for q in QUADRANTS if q != path[-1]])))
    weights = rng.dirichlet(np.ones(stops) * 1.5)
    spans = np.concatenate([[0.0], np.cumsum(weights) * duration])
    dwell = {q: 0.0 for q in QUADRANTS}
    for q, a, b in zip(path, spans[:-1], spans[1:]):
        dwell[q] += b - a
    color = COLORS[str(rng.choice(["red", "yellow", "cyan", "orange"]))]
    sprites = [Sprite("circle", color, 0.3, float(a), float(b), QUADRANT_CENTRES[q])
               for q, a, b in zip(path, spans[:-1], spans[1:])]
    seen = "; ".join(f"{q} from {_fmt(a)} to {_fmt(b)}" for q, a, b in zip(path, spans[:-1], spans[1:]))
    ranked = sorted(QUADRANTS, key=lambda q: -dwell[q])
    if rng.random() < 0.5 and dwell[ranked[0]] - dwell[ranked[1]] > 0.05 * duration:
        question = "In which part of the frame does the ball spend the most time?"
        correct = ranked[0]
        why = f"adding up the time in each part, the {correct} has the most ({dwell[correct]:.0f}s)"
    else:
        question = "In which part of the frame is the ball at the end of the video?"
        correct = path[-1]
        why = f"its last position is the {correct}"
    options = list(rng.permutation(QUADRANTS))
    reasoning = f"Tracking the ball through the video: it is in the {seen}. So {why}."
    return SceneQuestion(Scene(duration, [(0.0, BACKGROUNDS["black"])], sprites), "Spatial", "ball_tracking",
                         question, options, _letter(options, correct), reasoning)


def background_story(rng: np.random.Generator, duration: float, flash: float) -> SceneQuestion:
    """Plot and Narrative: the background goes through a sequence of states; ask about the order."""
    states = int(rng.integers(3, 6))
    names = list(rng.choice(list(BACKGROUNDS), size=states, replace=False))
    cuts = np.sort(rng.uniform(0.1, 0.9, size=states - 1)) * duration
    starts = [0.0, *cuts.tolist()]
    backgrounds = [(float(t), BACKGROUNDS[n]) for t, n in zip(starts, names)]
    seen = ", then ".join(f"{n} from {_fmt(t)}" for t, n in zip(starts, names))
    if rng.random() < 0.5:
        question = f"What colour is the background just before it turns {names[-1]}?"
        correct, why = names[-2], f"the state right before {names[-1]} is {names[-2]}"
        pool = [n for n in BACKGROUNDS if n != correct and n != names[-1]]
        options = list(rng.permutation([correct, *rng.choice(pool, size=3, replace=False).tolist()]))
    else:
        question = "How many times does the background change colour?"
        correct, why = str(states - 1), f"there are {states - 1} changes"
        wrong = [n for n in range(1, 7) if n != states - 1]
        options = [str(n) for n in rng.permutation([states - 1, *rng.choice(wrong, size=3, replace=False).tolist()])]
    reasoning = f"Following the scene through the video: the background is {seen}. So {why}."
    return SceneQuestion(Scene(duration, backgrounds, []), "Plot and Narrative", "background_story",
                         question, options, _letter(options, correct), reasoning)


def target_visits(rng: np.random.Generator, duration: float, flash: float) -> SceneQuestion:
    """Goal and Purpose: a dot collects coloured targets in the corners, returning to one of them."""
    names = list(rng.choice(["red", "green", "blue", "yellow", "purple", "orange"], size=4, replace=False))
    corners = {n: xy for n, xy in zip(names, [(0.15, 0.15), (0.85, 0.15), (0.15, 0.85), (0.85, 0.85)])}
    order = list(rng.permutation(names))
    twice = order[int(rng.integers(0, 3))]
    visits = order + [twice]
    while visits[-1] == visits[-2]:
        visits = list(rng.permutation(visits))
    # dwell at each target for ~flash seconds; travel between them in the rest of the time
    times = _distinct_times(rng, len(visits), duration, flash, gap=2.0)
    sprites = [Sprite("square", COLORS[n], 0.16, 0.0, duration, corners[n]) for n in names]
    dot = COLORS["white"]
    position = (0.5, 0.5)
    clock = 0.0
    for n, t in zip(visits, times):
        sprites.append(Sprite("circle", dot, 0.12, clock, t, position, corners[n]))
        sprites.append(Sprite("circle", dot, 0.2, t, t + flash, corners[n]))
        position, clock = corners[n], t + flash
    sprites.append(Sprite("circle", dot, 0.12, clock, duration, position, (0.5, 0.5)))
    seen = "; ".join(f"{n} at {_fmt(t)}" for n, t in zip(visits, times))
    options = list(rng.permutation(names))
    reasoning = (f"Checking the video for the white dot's visits: it reaches {seen}. "
                 f"The only target it returns to is {twice}.")
    return SceneQuestion(Scene(duration, [(0.0, BACKGROUNDS["gray"])], sprites), "Goal and Purpose", "target_visits",
                         "Which target does the white dot go back to a second time?", options,
                         _letter(options, twice), reasoning)


TASKS: dict[str, Callable[[np.random.Generator, float, float], SceneQuestion]] = {
    "flash_order": flash_order,
    "blink_count": blink_count,
    "ball_tracking": ball_tracking,
    "background_story": background_story,
    "target_visits": target_visits,
}
"""Task name -> generator(rng, duration seconds, brief-event length seconds)."""
