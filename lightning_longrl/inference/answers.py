"""Responses parsed and scored into prediction rows: one rule for the training stages'
``validate`` / ``test`` / ``predict``, ``lightning-longrl eval`` and the difficulty filter."""

from __future__ import annotations

import re
from typing import Any

import torch

from lightning_longrl.data.collate import VideoBatch
from lightning_longrl.data.prompts import normalize_choice, parse_response
from lightning_longrl.data.records import VideoQARecord
from lightning_longrl.inference.batch_ops import embed_batch, sample_responses
from lightning_longrl.models.video_lm import VideoLanguageModel
from lightning_longrl.rl.rewards import answers_match
from lightning_longrl.rl.rollout import RolloutEngine, SamplingConfig, decode_responses

_DIRECT = re.compile(r"\s*<answer>([^<]*)</answer>\s*")


def score_answer(record: VideoQARecord, answer: str | None) -> tuple[str | None, bool]:
    """(normalised prediction, correct?) for a multiple-choice letter or a free-form answer."""
    if record.is_multiple_choice:
        prediction = normalize_choice(answer, record.options)
    else:
        prediction = answer.strip() if answer else None
    return prediction, answers_match(answer, record)


def prediction_row(record: VideoQARecord, response: str, frames: int | None = None, think: bool = True) -> dict[str, Any]:
    """A response parsed and scored.

    The answer inside ``<answer>`` is compared with the record's (an option letter, or the
    option's text, for multiple choice). ``well_formed``: in reasoning mode the
    ``<think>...</think><answer>...</answer>`` check; in direct mode a single ``<answer>`` block
    and nothing else. A malformed response can still be correct when exactly one non-empty
    answer block names the right option; in direct mode a response without tags is taken as the
    answer itself (``"B"``, ``"B. the kitchen"``), as models not trained on the tags answer.
    """
    parsed = parse_response(response)
    answer, well_formed = parsed.answer, parsed.well_formed
    if not think:
        direct = _DIRECT.fullmatch(response)
        well_formed = bool(direct and direct.group(1).strip())
        if answer is None and "<answer>" not in response and "</answer>" not in response and response.strip():
            answer = response.strip()
    prediction, correct = score_answer(record, answer)
    return {"id": record.id, "category": record.category, "response": response, "prediction": prediction,
            "answer": record.answer, "correct": correct, "well_formed": well_formed, "frames": frames,
            "unreadable": False}


def unreadable_row(record: VideoQARecord, reason: str) -> dict[str, Any]:
    """The prediction row of a question whose video could not be read (counted, never answered)."""
    return {"id": record.id, "category": record.category, "answer": record.answer, "correct": False,
            "well_formed": False, "unreadable": True, "error": reason}


def answer_questions(model: VideoLanguageModel, engine: RolloutEngine, batch: VideoBatch, sampling: SamplingConfig,
                     generator: torch.Generator | None = None, think: bool = True) -> list[dict[str, Any]]:
    """One response per question of a prompt batch from ``engine``, parsed and scored, as prediction rows."""
    responses = sample_responses(model, engine, batch, sampling, generator)
    return [prediction_row(record, response, frames, think)
            for record, response, frames in zip(batch.records, responses, batch.num_frames, strict=True)]


@torch.no_grad()
def answer_batch(model: VideoLanguageModel, batch: VideoBatch, max_new_tokens: int, greedy: bool = True,
                 think: bool = True) -> list[dict[str, Any]]:
    """One response per question of a prompt batch from the model's own ``generate`` (the whole
    padded batch at once, as the training stages evaluate), as prediction rows."""
    generation = model.generate(embed_batch(model, batch), max_new_tokens=max_new_tokens, greedy=greedy)
    return [prediction_row(record, response, frames, think)
            for record, response, frames in zip(batch.records, decode_responses(model, generation), batch.num_frames,
                                                strict=True)]
