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
