"""Image and text-only questions about the synthetic world (the share of mixed data in the demo).

The same timelines as the videos (scenes, the ball, the flash), asked about differently:

* ``image_ball`` (one image): a still of one scene; at which side is the ball?
* ``image_pair`` (two images): stills of two scenes, in order; what colour is the second one?
* ``text_scene_most`` (no media): the scenes are listed in the question; which colour is most
  frequent? The reasoning is the video task's, so text teaches the same counting.

Answers are drawn uniformly over the options, and the reasoning names the option's letter, as
for the video questions.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from lightning_longrl.synth.scenes import PALETTE, SIDES, Timeline, random_timeline

STILL_TASKS = ("image_ball", "image_pair", "text_scene_most")
IMAGE_TASKS = ("image_ball", "image_pair")
TEXT_TASKS = ("text_scene_most",)


@dataclass
class StillQuestion:
    """A question about still images of a timeline (``times``: when each image is taken), or
    about a text description of it (no ``times``)."""

    timeline: Timeline
    task: str
    category: str
    question: str
    options: list[str]
    answer: str  # option letter
    reasoning: str
    times: tuple[float, ...]  # seconds of the stills, in the order the prompt shows them


def _middle(timeline: Timeline, scene: int) -> float:
    """A moment inside ``scene`` that the flash does not light (stills show the scene and the ball)."""
    d = timeline.scene_length
    for t in (scene * d + d / 4, scene * d + 3 * d / 4):
        if not timeline.flash_time <= t < timeline.flash_time + timeline.flash_length:
            return t
    raise AssertionError("the flash is shorter than half a scene")


def make_still_question(rng: np.random.Generator, task: str, duration: float, num_scenes: int = 8,
                        flash_length: float | None = None, max_tries: int = 10_000) -> StillQuestion:
    """One question of ``task`` (see :data:`STILL_TASKS`) whose answer is drawn uniformly from its options."""
    if task not in STILL_TASKS:
        raise ValueError(f"unknown still task {task!r}; choose from {STILL_TASKS}")
    flash_length = duration / 16 if flash_length is None else flash_length
    wanted = int(rng.integers(4))
    colours = tuple(PALETTE)
    for _ in range(max_tries):
        t = random_timeline(rng, duration, num_scenes, flash_length)
        scene = int(rng.integers(num_scenes))
        if task == "image_ball":
            value, options = t.ball[scene], SIDES
            question, category, times = "At which side of the picture is the ball?", "Spatial", (_middle(t, scene),)
            reasoning = f"ball: {value}. so {value}"
        elif task == "image_pair":
            first = int(rng.integers(num_scenes - 1))
            scene = int(rng.integers(first + 1, num_scenes))
            if t.scenes[first] == t.scenes[scene]:  # the first picture must not give the answer away
                continue
            value, options = t.scenes[scene], colours
            question = "The two pictures are taken in this order. What colour is the scene in the second picture?"
            category, times = "Temporal", (_middle(t, first), _middle(t, scene))
            reasoning = f"scenes: {t.scenes[first]}, {value}. the second is {value}, so {value}"
        else:
            ranked = Counter(t.scenes).most_common()
            if ranked[0][1] == ranked[1][1]:
                continue
            value, options, times = ranked[0][0], colours, ()
            question = f"A video shows scenes of these colours, in order: {t.scenes_text()}. Which colour do most scenes have?"
            category = "Temporal"
            reasoning = f"scenes: {t.scenes_text()}. {value} {ranked[0][1]} times, so {value}"
        if options.index(value) != wanted:
            continue
        letter = "ABCD"[wanted]
        return StillQuestion(t, task, category, question, list(options), letter, f"{reasoning} ({letter}).", times)
    raise RuntimeError(f"synthetic still task {task!r}: no timeline with answer {'ABCD'[wanted]} in {max_tries} tries")
