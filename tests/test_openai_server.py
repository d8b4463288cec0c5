"""Tests that talk to vLLM's real OpenAI-compatible server (one server, started once for this
module by the ``openai_server`` fixture): curation's captioner and question writer, and the LLM
judge reward."""

import json

import pytest
import torch
from test_curate import _videos
from test_judge import _records, _response

from lightning_longrl.curate.backends import BackendConfig, BackendError, Request, build_backend
from lightning_longrl.curate.pipeline import CurateConfig, curate
from lightning_longrl.data.records import read_records
from lightning_longrl.rl.judge import JudgeReward
from lightning_longrl.rl.rewards import CombinedReward, RewardSpec


@pytest.mark.slow
def test_curate_through_an_openai_compatible_server(tmp_path, synth_dir, openai_server, monkeypatch):
    """Captions from frames sent as images, question writing with structured outputs (JSON schema),
    refinement: the records come out in the project's format with their provenance; an unknown
    model name is an HTTP error that is not retried."""
    monkeypatch.setenv("CURATE_TEST_KEY", "not-a-secret")
    captioner = BackendConfig(kind="openai", base_url=openai_server, model="tiny", api_key_env="CURATE_TEST_KEY",
                              max_new_tokens=12, concurrency=4)
    writer = BackendConfig(kind="openai", base_url=openai_server, model="tiny", max_new_tokens=600, json_schema=True,
                           concurrency=4)
    config = CurateConfig(videos=str(_videos(synth_dir, tmp_path, 1)), output_dir=str(tmp_path / "out"),
                          captioner=captioner, writer=writer, clip_seconds=12.0, frames_per_clip=4, max_pixels=56 * 56,
                          max_chars=[40, 16, 60], progress=False)
    summary = curate(config)
    assert summary.captions == 2 and summary.generations == 8 and summary.failed_this_run == {}
    assert summary.records + summary.rejected == 8 and summary.records >= 4, summary
    assert summary.refined == summary.records
    records = read_records(tmp_path / "out" / "records.jsonl")  # the project's own loader
    raw = [json.loads(line) for line in (tmp_path / "out" / "records.jsonl").read_text().splitlines()]
    assert {r.category for r in records} <= {"Temporal", "Goal and Purpose", "Spatial", "Plot and Narrative"}
    for record, row in zip(records, raw):
        provenance = row["provenance"]
        assert provenance["captioner"] == "openai:tiny" and provenance["writer"] == "openai:tiny"
        assert provenance["clips"] == [[0.0, 12.0], [12.0, pytest.approx(24.0, abs=0.5)]]
        assert record.reasoning and (record.options == () or record.answer in "ABCD")
        assert (tmp_path / "out" / row["video"]).resolve().is_file()
    unknown = build_backend(BackendConfig(kind="openai", base_url=openai_server, model="no-such-model", retries=3))
    reply = unknown.generate([Request("hello")])[0]
    assert isinstance(reply, BackendError) and "404" in str(reply) and unknown.attempts == 1


@pytest.mark.slow
def test_judge_through_vllms_openai_server_with_structured_outputs(openai_server):
    """A tiny random model as the judge: constrained to the score choices every reply parses; a
    second batch is served from the cache. (Under the JSON schema a random model pads the object
    with whitespace up to max_tokens, which a real judge does not; a scripted judge checks that path.)"""
    judge = JudgeReward(base_url=openai_server, model="tiny", concurrency=4, max_tokens=16, structured="choice")
    records = _records(4)
    scores = judge.score_batch([_response(a) for a in ("three", "four", "five", "3")], records)
    assert scores.failed == [False] * 4, "structured outputs should make every reply a valid score"
    assert all(v in (0.0, 0.5, 1.0) for v in scores.values)
    assert judge.requests == 4 and judge.failures == 0
    assert judge.score_batch([_response("three")], records[:1]).values == scores.values[:1] and judge.requests == 4
    total = CombinedReward([RewardSpec("judge", "lightning_longrl.rl.judge.JudgeReward", 1.0,
                                       {"base_url": openai_server, "model": "tiny", "max_tokens": 16,
                                        "structured": "choice"})])
    out = total([_response("three"), "malformed"], records[:2])
    assert out.terms["judge_failed"] == [0.0, 0.0] and out.terms["judge"][1] == 0.0
    assert torch.tensor(out.total).isfinite().all()
