import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lightning_longrl.cli import main

REPO = Path(__file__).resolve().parents[1]
EXE = Path(sys.executable).with_name("lightning-longrl")


def test_console_script_lists_commands():
    out = subprocess.run([str(EXE), "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("fit", "validate", "test", "predict", "synth", "tiny-model"):
        assert f"  {command}" in out


@pytest.mark.parametrize("command", ["fit", "validate", "test", "predict", "synth", "tiny-model"])
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_every_command_is_a_jsonargparse_subcommand(capsys):
    """The commands besides LightningCLI's are jsonargparse subcommands of one parser, each with
    ``--config`` and typed options; ``--help`` lists all of them and nothing else."""
    from jsonargparse import ArgumentParser

    from lightning_longrl.cli import COMMANDS, LIGHTNING_HELP, build_parser

    parser = build_parser()
    listed = parser._subcommands_action.choices  # jsonargparse's subcommand parsers, by name
    assert list(listed) == [*LIGHTNING_HELP, *COMMANDS]
    assert all(isinstance(sub, ArgumentParser) for sub in listed.values())
    for name in COMMANDS:
        with pytest.raises(SystemExit) as info:
            main([name, "--help"])
        assert info.value.code == 0
        out = capsys.readouterr().out
        assert f"lightning-longrl [options] {name}" in out and "--config CONFIG" in out
    with pytest.raises(SystemExit) as info:
        main(["synth", "--num_videos", "many"])  # a typed option: jsonargparse refuses the value
    assert info.value.code == 2 and "num_videos" in capsys.readouterr().err


def test_unknown_command_exits_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train"])
    assert info.value.code == 2
    assert "unknown command 'train'" in capsys.readouterr().err


@pytest.mark.slow
def test_synth_tiny_model_and_fit_from_the_command_line(tmp_path):
    """The demo path as a user runs it: synth, tiny-model, fit with the demo YAML (shortened)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    run = lambda *args: subprocess.run([str(EXE), *args], cwd=tmp_path, env=env, capture_output=True, text=True)  # noqa: E731
    synth = run("synth", "--out_dir", "data/demo", "--num_videos", "20", "--duration", "16", "--fps", "4",
                "--workers", "0")
    assert synth.returncode == 0, synth.stderr
    assert "synthetic dataset in data/demo: train 7, rl 8, val 1, test 4, captions 30, captions_test 8" in synth.stdout
    tiny = run("tiny-model", "--out", "checkpoints/tiny", "--spec.arch", "qwen2_vl")
    assert tiny.returncode == 0, tiny.stderr
    assert json.loads((tmp_path / "checkpoints/tiny/tiny_spec.json").read_text())["arch"] == "qwen2_vl"
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    fit = run("fit", "--config", "configs/demo/sft.yaml", "--trainer.max_epochs", "1", "--trainer.max_steps", "2",
              "--trainer.val_check_interval", "1", "--trainer.limit_val_batches", "1",
              "--model.init_args.model.path", "checkpoints/tiny", "--data.init_args.num_frames", "8",
              "--data.init_args.num_workers", "0", "--trainer.enable_progress_bar", "false")
    assert fit.returncode == 0, fit.stderr[-3000:]
    assert "TensorBoard logs : runs/demo/sft/version_0" in fit.stdout
    assert "Checkpoints      : runs/demo/sft/version_0/checkpoints" in fit.stdout
    assert "Hugging Face     : runs/demo/sft/version_0/hf_model" in fit.stdout
    assert list((tmp_path / "runs/demo/sft/version_0").glob("events.out.tfevents.*"))
    assert (tmp_path / "runs/demo/sft/version_0/checkpoints/last.ckpt").is_file()
    assert (tmp_path / "runs/demo/sft/version_0/hf_model/model.safetensors").is_file()
    # evaluating the trained checkpoint, as scripts/demo.sh does (the CLI reads its hyper-parameters)
    test = run("test", "--config", "configs/demo/sft.yaml", "--trainer.logger", "false",
               "--ckpt_path", "runs/demo/sft/version_0/checkpoints/last.ckpt", "--model.init_args.max_new_tokens", "4",
               "--data.init_args.test_file", "data/demo/test.jsonl",
               "--data.init_args.num_frames", "8", "--data.init_args.num_workers", "0", "--trainer.enable_progress_bar", "false")
    assert test.returncode == 0, test.stderr[-3000:]
    assert "test/accuracy" in test.stdout and "test/format_rate" in test.stdout


def test_missing_checkpoint_folder_is_explained(tmp_path):
    from lightning_longrl import SFTModule
    from lightning_longrl.models.config import ModelConfig

    with pytest.raises(FileNotFoundError, match="lightning-longrl tiny-model --out"):
        SFTModule(ModelConfig(path=str(tmp_path / "nothing")))
