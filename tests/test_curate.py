"""Data curation: `lightning-longrl curate` with tiny local models and through a real
OpenAI-compatible server (vLLM's, on loopback), and the `lightning-longrl filter` difficulty
filter. The tiny models write nonsense; the tests check structure, resumption, rejects and labels."""

import json
import shutil
import time
from pathlib import Path

import pytest

from lightning_longrl.curate.backends import BackendConfig, BackendError, Request, build_backend
from lightning_longrl.curate.parse import RejectedOutput, parse_generation
from lightning_longrl.curate.pipeline import CurateConfig, curate

from helpers import LoopbackChatServer, free_port


def test_parse_generation_accepts_records_and_rejects_the_rest():
    good = {"question": "What happens first?", "options": ["A. a dog barks", "B. a door opens", "C) rain", "D. noon"],
            "answer": "B", "reasoning": "Checking the video: the door opens at 3s, before the dog barks at 9s."}
    qa = parse_generation(json.dumps(good), "multiple_choice")
    assert qa.options == ("a dog barks", "a door opens", "rain", "noon") and qa.answer == "B"
    fenced = "<think>let me plan</think>\nHere it is:\n```json\n" + json.dumps(dict(good, answer="a door opens")) + "\n```"
    assert parse_generation(fenced, "multiple_choice").answer == "B", "the option's text names its letter"
    embedded = dict(good, question="What happens first?\nA. a dog barks\nB. a door opens", options=[], answer="A")
    assert parse_generation(json.dumps(embedded), "multiple_choice").options == ("a dog barks", "a door opens")
    open_ended = parse_generation(json.dumps({"question": "How many?", "options": [], "answer": 3, "reasoning": "r"}),
                                  "open_ended")
    assert open_ended.answer == "3" and open_ended.options == ()
    rejects = {
        "no JSON object": "I cannot answer that.",
        "invalid JSON": '{"question": "x", "answer": }',
        "'reasoning' is missing": json.dumps({k: v for k, v in good.items() if k != "reasoning"}),
        "needs 2 to 26 options": json.dumps(dict(good, options=["only one"])),
        "not distinct": json.dumps(dict(good, options=["same", "Same", "other"])),
        "names none of the options": json.dumps(dict(good, answer="E")),
    }
    for reason, text in rejects.items():
        with pytest.raises(RejectedOutput, match=reason):
            parse_generation(text, "multiple_choice")
    with pytest.raises(RejectedOutput, match="open-ended question must have no options"):
        parse_generation(json.dumps(good), "open_ended")


def test_backend_settings_are_checked(monkeypatch):
    with pytest.raises(ValueError, match="base_url"):
        BackendConfig(kind="openai", model="m")
    with pytest.raises(ValueError, match="json_schema"):
        BackendConfig(kind="hf", model="m", json_schema=True)
    monkeypatch.delenv("CURATE_TEST_KEY", raising=False)
    with pytest.raises(ValueError, match="CURATE_TEST_KEY"):
        build_backend(BackendConfig(kind="openai", model="m", base_url="http://127.0.0.1:1/v1", api_key_env="CURATE_TEST_KEY"))


def test_unreachable_endpoint_is_retried_then_reported():
    """A real connection to a closed loopback port: every attempt fails, the SDK's backoff runs
    (0.5 s, then 1 s), and the request comes back as an error instead of ending the run."""
    backend = build_backend(BackendConfig(kind="openai", model="m", base_url=f"http://127.0.0.1:{free_port()}/v1",
                                          retries=2, timeout_s=2))
    began = time.perf_counter()
    replies = backend.generate([Request("hello"), Request("again")])
    assert all(isinstance(r, BackendError) and "refused" in str(r).lower() for r in replies)
    assert backend.attempts == 6 and time.perf_counter() - began < 10


def _scripted_server(statuses: list[int]) -> LoopbackChatServer:
    """A loopback endpoint answering with the scripted statuses, then with a reply naming the request's number."""
    statuses = list(statuses)
    server = LoopbackChatServer(lambda body: (statuses.pop(0), "") if statuses else (200, f" reply {len(server.requests)} "))
    return server


@pytest.mark.parametrize(("statuses", "retries", "outcome", "attempts"), [
    ([429, 429], 3, "reply 3", 3),          # rate limited twice, then served
    ([503, 500], 3, "reply 3", 3),          # server errors are retried too
    ([500, 502, 503], 2, "HTTP 503", 3),    # out of retries: an error, not a crash
    ([400], 3, "HTTP 400", 1),              # a bad request is not retried
])
def test_openai_backend_retries_rate_limits_and_server_errors(statuses, retries, outcome, attempts):
    server = _scripted_server(statuses)
    try:
        backend = build_backend(BackendConfig(kind="openai", model="m", base_url=server.url, retries=retries,
                                              timeout_s=5, json_schema=True))
        [reply] = backend.generate([Request("hello", schema={"type": "object"})])
        assert outcome in str(reply) and backend.attempts == len(server.requests) == attempts
        assert isinstance(reply, BackendError) == outcome.startswith("HTTP")
        sent = server.requests[-1]
        assert sent["model"] == "m" and sent["response_format"]["json_schema"]["schema"] == {"type": "object"}
        backend.close()
    finally:
        server.close()


def _videos(synth_dir: Path, tmp_path: Path, count: int, corrupt: bool = False) -> Path:
    folder = tmp_path / "videos"
    folder.mkdir()
    for path in sorted((synth_dir / "videos").glob("*.mp4"))[:count]:
        shutil.copy(path, folder / path.name)
    if corrupt:
        (folder / "zz_corrupt.mp4").write_bytes(b"\x00 not a video " * 64)
    return folder


def _hf(checkpoint: Path, tokens: int = 12) -> BackendConfig:
    return BackendConfig(kind="hf", model=str(checkpoint), max_new_tokens=tokens, dtype="float32", batch_size=4)


def test_curate_with_local_models_resumes_and_keeps_rejects(tmp_path, tiny_checkpoints, synth_dir):
    """Tiny local models: every clip gets a caption; every reply of the question writer is
    nonsense, so each is counted, rejected and kept verbatim. Runs grow the work and resume: a
    second run does only the new video, a crash's half-written line is redone, and a final run
    sends no request at all."""
    videos = _videos(synth_dir, tmp_path, 2, corrupt=True)
    model = _hf(tiny_checkpoints["qwen2_5_vl"])
    config = CurateConfig(videos=str(videos), output_dir=str(tmp_path / "out"), captioner=model, writer=model,
                          clip_seconds=10.0, frames_per_clip=4, max_pixels=56 * 56, families=["temporal", "spatial"],
                          max_videos=1, progress=False)
    first = curate(config)
    out = tmp_path / "out"
    clips = [json.loads(line) for line in (out / "clips.jsonl").read_text().splitlines()]
    assert first.videos == 1 and clips[0]["duration"] == pytest.approx(24.0, abs=0.5)
    assert first.clips == 3 and first.captions == 3 and first.requests_this_run == {"captions": 3, "questions": 4}
    assert first.generations == 4 and first.rejected == 4 and first.records == 0
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    generations = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    assert sorted(r["raw"] for r in rejects) == sorted(g["raw"] for g in generations), "rejects keep the reply verbatim"
    assert all(r["reason"] and r["stage"] == "generation" for r in rejects)

    second = curate(CurateConfig(**{**config.__dict__, "max_videos": None}))
    assert second.videos == 3 and second.unreadable_videos == 1
    assert second.requests_this_run == {"captions": 3, "questions": 4}, "only the new video's work is done"
    assert second.captions == 6 and second.generations == 8 and second.rejected == 8

    # a crash in the middle of writing a caption: the cut line is dropped and that caption redone
    captions = (out / "captions.jsonl").read_text()
    (out / "captions.jsonl").write_text(captions[: captions.rstrip("\n").rfind("\n") + 1] + captions.splitlines()[-1][:15])
    third = curate(CurateConfig(**{**config.__dict__, "max_videos": None}))
    assert third.requests_this_run == {"captions": 1}
    assert len((out / "captions.jsonl").read_text().splitlines()) == 6
    assert curate(CurateConfig(**{**config.__dict__, "max_videos": None})).requests_this_run == {}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["records"] == 0 and summary["rejected"] == 8 and summary["unreadable_videos"] == 1

    # templates are files: a broken one is reported with its name
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "caption.txt").write_text("Describe {the_clip}.")
    with pytest.raises(ValueError, match=r"caption.txt: bad placeholder"):
        curate(CurateConfig(**{**config.__dict__, "output_dir": str(tmp_path / "out2"), "prompts_dir": str(prompts)}))


def test_filter_labels_splits_and_histogram(tmp_path, tiny_checkpoints, mixed_dir):
    """Video, image and text-only questions: each is sampled k times and labelled; the splits'
    media paths still work from their own folder."""
    from PIL import Image

    from lightning_longrl.curate.difficulty import FilterConfig, difficulty_filter, label_of

    data = tmp_path / "records.jsonl"
    rows = [json.loads(line) for line in (mixed_dir / "test.jsonl").read_text().splitlines()]
    rows += [json.loads(line) for line in (mixed_dir / "val.jsonl").read_text().splitlines()]
    assert {"video", "images"} <= {k for r in rows for k in r} and any("video" not in r and "images" not in r for r in rows)
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))  # media paths relative to mixed_dir
    config = FilterConfig(model=str(tiny_checkpoints["qwen2_5_vl"]), data=str(data), output_dir=str(tmp_path / "out"),
                          video_root=str(mixed_dir),
                          k=4, num_frames=8, max_pixels=56 * 56, max_new_tokens=8, num_workers=0, think=False,
                          progress=False)
    summary = difficulty_filter(config)
    out = tmp_path / "out"
    labels = [json.loads(line) for line in (out / "labels.jsonl").read_text().splitlines()]
    assert len(labels) == len(rows) == summary["questions"]
    for row in labels:
        assert 0 <= row["correct"] <= 4 and row["label"] == label_of(row["correct"], 4)
        assert row["accuracy"] == pytest.approx(row["correct"] / 4)
    sft = [json.loads(line)["id"] for line in (out / "sft.jsonl").read_text().splitlines()]
    rl = [json.loads(line)["id"] for line in (out / "rl.jsonl").read_text().splitlines()]
    assert not set(sft) & set(rl) and sorted(sft + rl) == sorted(r["id"] for r in rows), "splits: disjoint and complete"
    for split in ("sft", "rl"):
        for line in (out / f"{split}.jsonl").read_text().splitlines():
            row = json.loads(line)
            for media in ([row["video"]] if "video" in row else row.get("images", [])):
                assert (out / media).is_file(), "a split's media paths must work from its own folder"
    assert set(rl) == {r["id"] for r in labels if r["label"] == "medium"}
    assert sum(summary["correct_histogram"].values()) == len(rows)
    with Image.open(out / "accuracy_histogram.png") as image:
        assert image.format == "PNG"
    before = (out / "labels.jsonl").read_text()
    assert difficulty_filter(config) == summary and (out / "labels.jsonl").read_text() == before, "a rerun redoes nothing"
    with pytest.raises(ValueError, match="k=4, not 6"):
        difficulty_filter(FilterConfig(**{**config.__dict__, "k": 6}))


@pytest.mark.parametrize("name", ["local_hf", "openai_endpoint"])
def test_curate_configs_parse(name, capsys):
    """The shipped curation YAML files are valid `lightning-longrl curate` configs."""
    from lightning_longrl.cli import main

    config = Path(__file__).resolve().parents[1] / "configs" / "curate" / f"{name}.yaml"
    with pytest.raises(SystemExit) as exit_info:
        main(["curate", "--config", str(config), "--videos", "v", "--output_dir", "o", "--print_config"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert "clip_seconds: 10" in printed and "writer:" in printed and "api_key" not in printed.replace("api_key_env", "")
