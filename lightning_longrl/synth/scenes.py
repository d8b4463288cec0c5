"""Timelines of synthetic long videos and the questions asked about them.

Every video shows one small world for ``duration`` seconds: a sequence of equally long *scenes*,
each filling the frame with one of four colours; a black *ball* that fills one half of the frame
(top, right, bottom or left) and moves at every scene change; and one brief *flash* in one of four
other colours (``flash_length`` seconds, by default 1/16 of the video) inside one scene, which
outlines each quarter of the frame. The vocabulary is made to survive a Qwen-VL vision tower: at
the default 28x28 pixels a frame pair is one merged visual token whose four 14-pixel patches are
the frame's quarters, so the scene colour and the dark half are read off whole patches, and the
flash's outline runs around the border of every patch. The flash therefore looks the same in every
patch, wherever the ball is, while the scene colour (and the ball) stay visible inside the
outlines, so the token that shows the flash also shows the scene it happens in. Measured with
``benchmarks/perception.py`` after the demo's perception stage (docs/grpo_demo.md): a flash
filling the whole frame hid the scene ("which scene" stayed at chance); a flash lighting only
the ball's half, whose colour sat in different patches from one video to the next, was read at
or near chance (a 4 s one after 800 steps on seed 1 included); the outlined 4 s flash was read in
98-100% of the descriptions on three seeds after 500 steps (a 2 or 3 s one was not).

Answers need information spread over the whole video (how often a colour recurs, the most
frequent colour, where the ball was most often, where it ended up) and two families hinge on the
brief flash, which a model only sees when a sampled frame lands on it: with frames spread
uniformly over 64 s, 8 frames see a 4 s flash one time in two, 16 frames in one frame, 32 and
64 frames in two and four, so more frames answer more questions and show the flash more
clearly; and 8 frames of 8 scenes blur neighbouring scenes into one token.

Options are the whole answer space in one fixed order (colours in palette order, sides
clockwise from the top, counts ascending) and every answer value is drawn uniformly, so each
letter is right a quarter of the time and a letter alone tells nothing. Reasoning is short and
structured like a dense description: the relevant events in order, then the conclusion and the
option letter.

This module only decides *what happens when*; :mod:`lightning_longrl.synth.render` draws it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 190, 60),
    "blue": (40, 70, 235),
    "yellow": (240, 215, 30),
}
"""Scene colours, in the order options list them."""
FLASH_PALETTE: dict[str, tuple[int, int, int]] = {
    "white": (250, 250, 250),
    "cyan": (40, 230, 230),
    "pink": (250, 120, 200),
    "orange": (250, 140, 20),
}
"""Colours of the brief flash, none of them a scene colour, in the order options list them."""
BALL_COLOR = (12, 12, 12)
COLORS = {**PALETTE, **FLASH_PALETTE, "black": BALL_COLOR}
SIDES = ("top", "right", "bottom", "left")
"""Where the ball sits: the middle of one edge of the frame, clockwise from the top."""
SIDE_BOXES = {"top": (0.0, 0.0, 1.0, 0.5), "right": (0.5, 0.0, 1.0, 1.0),
              "bottom": (0.0, 0.5, 1.0, 1.0), "left": (0.0, 0.0, 0.5, 1.0)}
"""The ball darkens the half of the frame at its side: two whole patches of a 28x28 frame. A
merged token concatenates its 2x2 patches in a fixed order, so which of them are dark tells the
side from the token's content alone (small marks inside one patch were learned far more slowly
by the tiny models)."""
QUARTERS = ((0.0, 0.0, 0.5, 0.5), (0.5, 0.0, 1.0, 0.5), (0.0, 0.5, 0.5, 1.0), (0.5, 0.5, 1.0, 1.0))
OUTLINE_WIDTH = 1 / 14
"""Width of the flash's outline around each quarter, a fraction of the frame's side (2 pixels of
28: half of each 14-pixel patch's area is outline, half the scene or ball inside it)."""
COUNTS = ("1", "2", "3", "4")


def outline(box: tuple[float, float, float, float], width: float) -> list[tuple[float, float, float, float]]:
    """The four strips of ``width`` along the inside of ``box`` (left, top, right, bottom)."""
    left, top, right, bottom = box
    return [(left, top, right, top + width), (left, bottom - width, right, bottom),
            (left, top, left + width, bottom), (right - width, top, right, bottom)]


@dataclass(frozen=True)
class Sprite:
    """A filled rectangle visible during ``[start, end)`` seconds; ``box`` is (left, top, right,
    bottom) in fractions of the frame's width and height."""

    color: tuple[int, int, int]
    start: float
    end: float
    box: tuple[float, float, float, float]


@dataclass
class Scene:
    """Everything drawn in one video."""

    duration: float
    backgrounds: list[tuple[float, tuple[int, int, int]]]  # (start time, colour), sorted
    sprites: list[Sprite] = field(default_factory=list)


@dataclass(frozen=True)
class Timeline:
    """What happens when in one video."""

    duration: float
    scenes: tuple[str, ...]  # colour of each scene, scenes equally long, neighbours differ
    ball: tuple[str, ...]  # the side the ball is at in each scene
    flash_time: float  # start of the flash, seconds
    flash_length: float
    flash_colour: str

    @property
    def scene_length(self) -> float:
        return self.duration / len(self.scenes)

    @property
    def flash_scene(self) -> int:
        """Index of the scene during which the light flashes."""
        return min(int(self.flash_time // self.scene_length), len(self.scenes) - 1)

    def scene(self) -> Scene:
        """The drawable scene: colour backgrounds, the ball per scene, the flash's outlines over them."""
        d = self.scene_length
        backgrounds = [(i * d, PALETTE[c]) for i, c in enumerate(self.scenes)]
        sprites = [Sprite(BALL_COLOR, i * d, (i + 1) * d, SIDE_BOXES[side]) for i, side in enumerate(self.ball)]
        colour, end = FLASH_PALETTE[self.flash_colour], self.flash_time + self.flash_length
        sprites += [Sprite(colour, self.flash_time, end, strip) for quarter in QUARTERS
                    for strip in outline(quarter, OUTLINE_WIDTH)]
        return Scene(self.duration, backgrounds, sprites)

    # the dense descriptions the reasoning is built from (and the perception stage learns)
    def scenes_text(self) -> str:
        return ", ".join(self.scenes)

    def ball_text(self) -> str:
        return ", ".join(self.ball)

    def flash_text(self) -> str:
        return f"a {self.flash_colour} flash in the {self.scenes[self.flash_scene]} scene"


def _no_repeats(rng: np.random.Generator, values: tuple[str, ...], n: int) -> tuple[str, ...]:
    out = [str(rng.choice(values))]
    while len(out) < n:
        out.append(str(rng.choice([v for v in values if v != out[-1]])))
    return tuple(out)


def random_timeline(rng: np.random.Generator, duration: float, num_scenes: int, flash_length: float) -> Timeline:
    """Scenes and the ball's side change at every scene boundary; the light flashes once, inside
    one scene other than the first and the last."""
    scenes = _no_repeats(rng, tuple(PALETTE), num_scenes)
    ball = _no_repeats(rng, SIDES, num_scenes)
    d = duration / num_scenes
    index = int(rng.integers(1, num_scenes - 1))
    # the whole flash inside scene `index`, on a grid of 1/1000 s so times print exactly
    start = round(float(rng.uniform(index * d, (index + 1) * d - flash_length)), 3)
    return Timeline(duration, scenes, ball, start, flash_length, str(rng.choice(list(FLASH_PALETTE))))


@dataclass(frozen=True)
class Caption:
    """An open-ended description question about a video (the perception stage's data)."""

    task: str
    question: str
    answer: str


def captions(timeline: Timeline) -> list[Caption]:
    """Dense descriptions of a video, in the same words as the reasoning traces' evidence: all of
    it in order, and the brief flash alone (a rare event gets little of the loss inside the long
    description; on its own the tiny models learn to find it in a few hundred steps)."""
    return [
        Caption("describe", "Describe the scenes, the ball and the flash in order.",
                f"scenes: {timeline.scenes_text()}. ball: {timeline.ball_text()}. flash: {timeline.flash_text()}."),
        Caption("describe_flash", "When does the light flash?", f"flash: {timeline.flash_text()}."),
    ]


# --------------------------------------------------------------------------------------- tasks
# Each task builds, from a timeline, the question, its options, the correct value, the evidence
# (the events in order) and the conclusion; and the *slip* an imperfect CoT teacher makes on it:
# a plausible wrong value with the evidence and conclusion that lead there (a runner-up taken for
# the most frequent, a count off by one, the second-last scene read as the last, the flash placed
# in the scene before its own, the neighbouring colour named although the flash was described
# right). A builder returns None when the timeline does not fit; the generator draws the wanted
# answer value first and samples timelines until one fits.


@dataclass(frozen=True)
class Built:
    question: str
    options: tuple[str, ...]
    value: str
    evidence: str
    conclusion: str  # ends in ``value``
    slip_value: str  # a wrong value, never ``value``
    slip_evidence: str
    slip_conclusion: str


def _most_frequent(values: tuple[str, ...], options: tuple[str, ...], question: str, evidence: str) -> Built | None:
    """The most frequent of ``values`` (None on a tie); the slip takes the runner-up for it."""
    ranked = Counter(values).most_common()
    if len(ranked) < 2 or ranked[0][1] == ranked[1][1]:
        return None
    (top, n), (second, m) = ranked[0], ranked[1]
    return Built(question, options, top, evidence, f"{top} {n} times, so {top}",
                 second, evidence, f"{second} {m} times, so {second}")


def _scene_most(t: Timeline, rng: np.random.Generator) -> Built | None:
    return _most_frequent(t.scenes, tuple(PALETTE), "Which colour do most scenes have?", f"scenes: {t.scenes_text()}.")


def _scene_count(t: Timeline, rng: np.random.Generator) -> Built | None:
    first = t.scenes[0]
    n = t.scenes.count(first)
    if n > 4:
        return None
    slip = n + 1 if n < 4 else n - 1
    evidence = f"scenes: {t.scenes_text()}."
    return Built("How many scenes have the same colour as the first scene?", COUNTS, str(n), evidence,
                 f"{first} {n} times, so {n}", str(slip), evidence, f"{first} {slip} times, so {slip}")


def _ball_most(t: Timeline, rng: np.random.Generator) -> Built | None:
    return _most_frequent(t.ball, SIDES, "At which side of the frame is the ball most often?", f"ball: {t.ball_text()}.")


def _ball_end(t: Timeline, rng: np.random.Generator) -> Built | None:
    evidence = f"ball: {t.ball_text()}."
    return Built("At which side of the frame is the ball at the end of the video?", SIDES, t.ball[-1], evidence,
                 f"it ends at the {t.ball[-1]}", t.ball[-2], evidence, f"it ends at the {t.ball[-2]}")


def _flash_colour(t: Timeline, rng: np.random.Generator) -> Built | None:
    colours = tuple(FLASH_PALETTE)
    wrong = colours[(colours.index(t.flash_colour) + 1) % len(colours)]
    evidence = f"flash: {t.flash_text()}."
    return Built("The light flashes once, briefly. What colour is the flash?", colours, t.flash_colour, evidence,
                 f"so {t.flash_colour}", wrong, evidence, f"so {wrong}")


def _flash_scene(t: Timeline, rng: np.random.Generator) -> Built | None:
    colour = t.scenes[t.flash_scene]
    before = t.scenes[t.flash_scene - 1]  # the flash is never in the first scene; neighbours differ
    return Built("What colour is the scene when the light flashes?", tuple(PALETTE), colour, f"flash: {t.flash_text()}.",
                 f"so {colour}", before, f"flash: a {t.flash_colour} flash in the {before} scene.", f"so {before}")


TASK_BUILDERS: dict[str, tuple[str, Callable[[Timeline, np.random.Generator], Built | None]]] = {
    "scene_most": ("Temporal", _scene_most),
    "scene_count": ("Temporal", _scene_count),
    "ball_most": ("Spatial", _ball_most),
    "ball_end": ("Spatial", _ball_end),
    "flash_colour": ("Goal and Purpose", _flash_colour),
    "flash_scene": ("Plot and Narrative", _flash_scene),
}
TASKS = tuple(TASK_BUILDERS)
"""Task names; ``flash_colour`` and ``flash_scene`` hinge on the brief flash."""
BRIEF_TASKS = ("flash_colour", "flash_scene")


@dataclass
class SceneQuestion:
    """A timeline plus one multiple-choice question about it, with the correct reasoning and the
    reasoning an imperfect teacher would write instead (its ``slip``)."""

    timeline: Timeline
    category: str
    task: str
    question: str
    options: list[str]
    answer: str  # option letter
    reasoning: str
    slip_answer: str  # the slip's option letter, never ``answer``
    slip_reasoning: str

    @property
    def scene(self) -> Scene:
        return self.timeline.scene()


def make_question(rng: np.random.Generator, task: str, duration: float, num_scenes: int = 8,
                  flash_length: float | None = None, max_tries: int = 10_000) -> SceneQuestion:
    """One question of ``task`` whose answer value is drawn uniformly from its options."""
    category, build = TASK_BUILDERS[task]
    flash_length = duration / 16 if flash_length is None else flash_length
    wanted = int(rng.integers(4))
    for _ in range(max_tries):
        timeline = random_timeline(rng, duration, num_scenes, flash_length)
        built = build(timeline, rng)
        if built is None or built.options.index(built.value) != wanted:
            continue
        # the reasoning names the chosen option's letter right after its value: the letter is
        # then a copy, not a look-up over the option list (which tiny models learn slowly)
        letter, slip = "ABCD"[wanted], "ABCD"[built.options.index(built.slip_value)]
        return SceneQuestion(timeline, category, task, built.question, list(built.options), letter,
                             f"{built.evidence} {built.conclusion} ({letter}).", slip,
                             f"{built.slip_evidence} {built.slip_conclusion} ({slip}).")
    raise RuntimeError(f"synthetic task {task!r}: no timeline with answer {'ABCD'[wanted]} in {max_tries} tries")
