"""Small builders shared by the training tests."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import lightning as L

from lightning_longrl import SFTModule
from lightning_longrl.datamodules import LongVideoDataModule
from lightning_longrl.models.config import ModelConfig


def sft_run(tmp_path: Path, checkpoint: Path, data_dir: Path, *, max_steps: int = 3, freeze_vision: bool = True,
            trainer_kwargs: dict | None = None, **data_kwargs):
    """A CPU trainer, an SFT module on a tiny checkpoint, and a data module on synthetic data."""
    module = SFTModule(
        ModelConfig(path=str(checkpoint), freeze_vision=freeze_vision),
        optimizer=lambda params: __import__("torch").optim.AdamW(params, lr=1e-2),
    )
    trainer, data = _trainer_and_data(tmp_path, data_dir, max_steps, {"limit_val_batches": 1, **(trainer_kwargs or {})},
                                      data_kwargs)
    return trainer, module, data


def _trainer_and_data(tmp_path: Path, data_dir: Path, max_steps: int, trainer_kwargs: dict, data_kwargs: dict):
    """A quiet CPU trainer logging every step, and a data module on a synthetic dataset (8 small frames)."""
    data = LongVideoDataModule(**{
        "train_file": str(data_dir / "train.jsonl"), "val_file": str(data_dir / "val.jsonl"),
        "num_frames": 8, "max_pixels": 56 * 56, "batch_size": 2, "num_workers": 0, **data_kwargs,
    })
    trainer = L.Trainer(**{
        "accelerator": "cpu", "devices": 1, "max_steps": max_steps, "default_root_dir": str(tmp_path),
        "logger": L.pytorch.loggers.TensorBoardLogger(str(tmp_path), name="logs"),
        "enable_progress_bar": False, "enable_model_summary": False, "num_sanity_val_steps": 0,
        "log_every_n_steps": 1, **trainer_kwargs,
    })
    return trainer, data


def copy_dataset_with(data_dir: Path, out: Path, replace_videos: dict[int, str]) -> Path:
    """Copy a synthetic dataset's records, pointing the given train rows at other video paths."""
    out.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(line) for line in (data_dir / "train.jsonl").read_text().splitlines()]
    for index, video in replace_videos.items():
        rows[index]["video"] = video
    (out / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    shutil.copy(data_dir / "val.jsonl", out / "val.jsonl")
    if not (out / "videos").exists():
        (out / "videos").symlink_to(data_dir / "videos")
    return out


def grpo_run(tmp_path: Path, checkpoint: Path, data_dir: Path, *, max_steps: int = 2, module_kwargs: dict | None = None,
             trainer_kwargs: dict | None = None, **data_kwargs):
    """A CPU trainer, a GRPO module (G=4, short responses) on a tiny checkpoint, and a data module."""
    import torch

    from lightning_longrl import GRPOModule
    from lightning_longrl.rl.rollout import SamplingConfig

    kwargs = {
        "model": ModelConfig(path=str(checkpoint)),
        "optimizer": lambda params: torch.optim.AdamW(params, lr=1e-3),
        "sampling": SamplingConfig(num_samples=4, max_new_tokens=12),
        **(module_kwargs or {}),
    }
    module = GRPOModule(**kwargs)
    trainer, data = _trainer_and_data(tmp_path, data_dir, max_steps, {"limit_val_batches": 0, **(trainer_kwargs or {})},
                                      data_kwargs)
    return trainer, module, data


def length_parity_reward(response: str, record) -> float:
    """A test reward with spread on a random model's outputs: 1.0 for an even character count."""
    return float(len(response) % 2 == 0)


def first_half_reward(response: str, record) -> float:
    """A test reward a random model can learn within a few steps: its first character decides it."""
    return float(response[:1].lower() < "n")


LEARNABLE_REWARDS = [{"name": "accuracy", "function": "helpers.first_half_reward", "weight": 1.0}]

PARITY_REWARDS = [{"name": "accuracy", "function": "helpers.length_parity_reward", "weight": 1.0},
                  {"name": "format", "function": "lightning_longrl.rl.rewards.format_reward", "weight": 0.1}]


class SaveEveryBatch(L.Callback):
    """A checkpoint after every training batch, also after rounds without an optimizer step."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.count = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.count += 1
        trainer.save_checkpoint(self.folder / f"batch={self.count}.ckpt")


def print_from_rank0(row: dict) -> None:
    """Every rank's row as one JSON line each, printed by rank 0 alone (lines written by several
    processes to one pipe interleave)."""
    import torch.distributed as dist

    rows = [None] * dist.get_world_size()
    dist.all_gather_object(rows, row)
    if dist.get_rank() == 0:
        for r in rows:
            print(json.dumps(r), flush=True)


def free_port() -> int:
    """A free TCP port on loopback, for a multi-process rendezvous."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MetricsRecorder(L.Callback):
    """Every training step's logged scalars (for comparing runs step by step)."""

    def __init__(self) -> None:
        self.steps: list[dict[str, float]] = []
        self.batches: list[list[str]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.steps.append({k: float(v) for k, v in trainer.callback_metrics.items()})
        self.batches.append([r.id for r in batch.records])


class LoopbackChatServer:
    """An OpenAI-compatible ``/chat/completions`` endpoint on loopback whose replies a test scripts.

    ``respond(body)`` gets each request's JSON body (after it is appended to ``requests``) and
    returns ``(status, content)``: 200 with the reply text, or an HTTP error status. Every answer
    carries ``retry-after-ms: 5`` so the SDK's retries wait only briefly; a client that gave up
    (a time-out) is ignored.
    """

    def __init__(self, respond) -> None:
        import http.server
        import threading

        self.requests: list[dict] = []
        self._lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the http.server name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server._lock:
                    server.requests.append(body)
                status, content = respond(body)
                payload = ({"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                            "choices": [{"index": 0, "finish_reason": "stop",
                                         "message": {"role": "assistant", "content": content}}]}
                           if status == 200 else {"error": {"message": f"scripted {status}", "type": "test"}})
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.send_header("retry-after-ms", "5")  # the SDK waits as the server asks
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up (time-out)
                    pass

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()


def mrsp_fit_run(out: Path, checkpoint: Path, synth_dir: Path, devices: int, sp: int, stage: str = "sft",
                   *options: str) -> list[dict]:
    """Run tests/mrsp_fit_check.py (``options``: its --flags) and return each rank's row."""
    script = Path(__file__).with_name("mrsp_fit_check.py")
    proc = subprocess.run([sys.executable, str(script), stage, str(checkpoint), str(synth_dir), str(out), str(devices),
                           str(sp), *options],
                          capture_output=True, text=True, timeout=600, cwd=Path(__file__).parent)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(devices)]


def reference_logprobs(logits, input_ids, mask):
    """Log-prob of each token under a plain forward's logits (the model's own computation to match), 0 outside ``mask``."""
    import torch

    ref = torch.zeros(input_ids.shape)
    ref[:, 1:] = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    return ref * mask
