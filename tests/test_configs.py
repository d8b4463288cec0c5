"""Every training YAML under configs/ parses and type-checks against the classes it names.

configs/eval/ and configs/curate/ hold `lightning-longrl eval` and `curate` settings (checked in
tests/test_eval.py and tests/test_curate.py); configs/demo/ also holds the demo's synth,
tiny-model, filter and eval settings (run by tests/test_demo.py)."""

from pathlib import Path

import lightning as L
import pytest
from lightning.pytorch.cli import LightningCLI

ROOT = Path(__file__).resolve().parents[1] / "configs"
COMMAND_CONFIGS = {"synth.yaml", "tiny_model.yaml", "filter.yaml", "eval.yaml"}
"""configs/demo/ also holds the settings of the demo's other commands (run by tests/test_demo.py)."""
CONFIGS = sorted(p for p in ROOT.rglob("*.yaml")
                 if p.parent.name not in ("eval", "curate") and not (p.parent.name == "demo" and p.name in COMMAND_CONFIGS))


class ParseOnlyCLI(LightningCLI):
    """Parses and validates (class paths, argument names and types) without building anything."""

    def instantiate_classes(self) -> None:
        pass


class BuildCLI(LightningCLI):
    """Parses, then builds the model and the DataModule (their own value checks run); no trainer."""

    def instantiate_classes(self) -> None:
        self.config_init = self.parser.instantiate_classes(self.config)
        self.model, self.datamodule = self.config_init.model, self.config_init.data


def _build(path: Path, *extra: str) -> BuildCLI:
    return BuildCLI(L.LightningModule, L.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                    auto_configure_optimizers=False, run=False, args=["--config", str(path), *extra])


def test_configs_exist():
    names = {str(p.relative_to(p.parents[1])) for p in CONFIGS}
    assert {"demo/perception.yaml", "demo/sft.yaml", "demo/grpo.yaml", "qwen2_5_vl_7b/sft.yaml",
            "qwen2_5_vl_7b/grpo.yaml"} <= names
    assert {p.name for p in (ROOT / "demo").glob("*.yaml")} >= COMMAND_CONFIGS


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_config_parses(path):
    cli = ParseOnlyCLI(
        L.LightningModule, L.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
        auto_configure_optimizers=False, run=False, args=["--config", str(path)],
    )
    config = cli.config
    assert config.model.class_path.startswith("lightning_longrl.")
    assert config.data.class_path == "lightning_longrl.datamodules.LongVideoDataModule"
    assert Path(config.model.init_args.model.path).name


def test_a_misspelled_option_is_rejected(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(CONFIGS[0].read_text().replace("num_frames:", "num_frame:"))
    with pytest.raises(SystemExit):
        ParseOnlyCLI(L.LightningModule, L.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                     auto_configure_optimizers=False, run=False, args=["--config", str(bad)])


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_config_builds(path, tiny_checkpoints):
    """The classes a YAML names are built with its values (on a tiny checkpoint of the same family),
    so the checks in their constructors and config dataclasses run too."""
    cli = _build(path, "--model.init_args.model.path", str(tiny_checkpoints["qwen2_5_vl"]))
    assert isinstance(cli.model, L.LightningModule) and type(cli.model).__module__.startswith("lightning_longrl.")
    assert type(cli.datamodule).__name__ == "LongVideoDataModule"


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--model.init_args.loss.clip_low", "1.0", "need 0 <= clip_low < 1"),
    ("--model.init_args.update.epochs", "0", "update epochs must be >= 1, got 0"),
    ("--model.init_args.sampling.num_samples", "0", "num_samples (G) must be >= 1, got 0"),
])
def test_a_bad_value_in_a_config_fails_when_built(option, value, message, tiny_checkpoints):
    """The config dataclasses' own checks reject the value, and the error says which check."""
    checkpoint = str(tiny_checkpoints["qwen2_5_vl"])
    _build(ROOT / "demo" / "grpo.yaml", "--model.init_args.model.path", checkpoint)  # the file itself is fine
    with pytest.raises(ValueError) as err:
        _build(ROOT / "demo" / "grpo.yaml", "--model.init_args.model.path", checkpoint, option, value)
    assert message in str(err.value)
