"""Shared fixtures: tiny real Qwen-VL checkpoints and a small synthetic long-video dataset.

Everything is built offline from config at session start (seconds), never downloaded.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from lightning_longrl.synth.dataset import SynthConfig, generate_dataset  # noqa: E402
from lightning_longrl.synth.tiny_model import ARCHITECTURES, TinyModelSpec, create_tiny_checkpoint  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory) -> dict[str, Path]:
    """One tiny random checkpoint folder per supported architecture."""
    root = tmp_path_factory.mktemp("tiny")
    return {arch: create_tiny_checkpoint(root / arch, TinyModelSpec(arch=arch)) for arch in ARCHITECTURES}


@pytest.fixture(scope="session", params=ARCHITECTURES)
def tiny_checkpoint(request, tiny_checkpoints) -> Path:
    return tiny_checkpoints[request.param]


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """A small synthetic dataset: 20 videos of 24 s at 4 fps, 64x64 pixels (14 train, 2 val, 4 test)."""
    out = tmp_path_factory.mktemp("synth")
    generate_dataset(
        SynthConfig(out_dir=str(out), num_videos=20, duration=24.0, fps=4.0, height=64, width=64, rl_fraction=0.0,
                    val_fraction=0.1, test_fraction=0.2, workers=0),
        progress=False,
    )
    return out


@pytest.fixture(scope="session")
def mixed_dir(tmp_path_factory) -> Path:
    """A small synthetic dataset mixing video, image (one or two) and text-only questions
    (12 videos, 8 image and 4 text-only questions, split 60/20/20 with an RL share)."""
    out = tmp_path_factory.mktemp("mixed")
    generate_dataset(
        SynthConfig(out_dir=str(out), num_videos=12, duration=24.0, fps=4.0, height=64, width=64, rl_fraction=0.25,
                    val_fraction=0.1, test_fraction=0.2, image_questions=8, text_questions=4, stills_in_test=True,
                    workers=0),
        progress=False,
    )
    return out


@pytest.fixture(scope="session")
def loaded_models(tiny_checkpoints):
    """Loaded tiny models (float32, eval mode), shared by read-only tests."""
    from lightning_longrl.models.video_lm import VideoLanguageModel

    return {arch: VideoLanguageModel.from_pretrained(path).eval() for arch, path in tiny_checkpoints.items()}


@pytest.fixture(scope="module")
def openai_server(tiny_checkpoints):
    """vLLM's OpenAI-compatible server on loopback with the tiny Qwen2.5-VL (CPU), for real (one per test module)."""
    from helpers import free_port

    port = free_port()
    log = Path(str(tiny_checkpoints["qwen2_5_vl"])).parent / f"vllm-server-{port}.log"
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_LOGGING_LEVEL": "WARNING"}
    with log.open("w") as sink:
        server = subprocess.Popen(
            [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(tiny_checkpoints["qwen2_5_vl"]),
             "--served-model-name", "tiny", "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32",
             "--enforce-eager", "--max-model-len", "4096", "--limit-mm-per-prompt", '{"image": 8, "video": 0}'],
            stdout=sink, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.time() + 300
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert server.poll() is None, f"the vLLM server exited: {log.read_text()[-3000:]}"
            assert time.time() < deadline, f"the vLLM server did not start: {log.read_text()[-3000:]}"
            time.sleep(1)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
