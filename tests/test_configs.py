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
    ("--model.init_args.loss.objective", "gspo", "gspo clips one ratio per response and needs aggregation: sequence_mean"),
    ("--model.init_args.advantage.eps", "-1", "advantage eps must be >= 0, got -1"),
    ("--model.init_args.overlong_penalty.buffer", "48", "overlong_penalty buffer (48) must be below sampling max_new_tokens (48)"),
])
def test_a_bad_value_in_a_config_fails_when_built(option, value, message, tiny_checkpoints):
    """The config dataclasses' own checks reject the value, and the error says which check."""
    checkpoint = str(tiny_checkpoints["qwen2_5_vl"])
    _build(ROOT / "demo" / "grpo.yaml", "--model.init_args.model.path", checkpoint)  # the file itself is fine
    with pytest.raises(ValueError) as err:
        _build(ROOT / "demo" / "grpo.yaml", "--model.init_args.model.path", checkpoint, option, value)
    assert message in str(err.value)


def test_rl_variants_and_a_judge_reward_build_from_yaml(tmp_path, tiny_checkpoints):
    """The objectives, estimators, overlong penalty and a reward class with arguments as a user writes them."""
    extra = tmp_path / "variants.yaml"
    extra.write_text("""
model:
  init_args:
    loss: {objective: gspo, aggregation: sequence_mean, clip_low: 3.0e-4, clip_high: 4.0e-4}
    advantage: {estimator: rloo}
    overlong_penalty: {buffer: 16, weight: 0.5}
    rewards:
      - {name: judge, function: lightning_longrl.rl.judge.JudgeReward, weight: 0.9,
         arguments: {base_url: "http://127.0.0.1:9/v1", model: judge, concurrency: 2}}
      - {name: format, function: lightning_longrl.rl.rewards.format_reward, weight: 0.1}
""")
    cli = _build(ROOT / "demo" / "grpo.yaml", "--config", str(extra), "--model.init_args.model.path",
                 str(tiny_checkpoints["qwen2_5_vl"]))
    module = cli.model
    assert module.loss_config.objective == "gspo" and module.advantage.estimator == "rloo"
    assert module.overlong_penalty.buffer == 16 and module.reward.names == ["judge", "format"]
    judge = module.reward.functions[0]
    assert type(judge).__name__ == "JudgeReward" and judge.client.concurrency == 2


ENGINE_YAML = """
model:
  init_args:
    rollout_engine:
      class_path: VLLMRolloutEngine
      init_args: {sleep_level: %d, max_model_len: 4096}
"""


def test_a_rollout_engine_is_configured_as_a_class_and_survives_the_checkpoint(tmp_path, tiny_checkpoints):
    """The engine's settings are its own init_args (short class name), the module adds the weight
    sync the engine needs, its own checks run when it is built, and a checkpoint stores the block as
    jsonargparse's class_path form, loadable with weights_only=True and back into the same factory."""
    import torch

    from lightning_longrl import GRPOModule
    from lightning_longrl.callbacks import VLLMWeightSync
    from lightning_longrl.rl.vllm_engine import VLLMRolloutEngine
    from lightning_longrl.stages.hparams import portable_hparams

    checkpoint = str(tiny_checkpoints["qwen2_vl"])
    extra = tmp_path / "engine.yaml"
    extra.write_text(ENGINE_YAML % 2)
    module = _build(ROOT / "demo" / "grpo.yaml", "--config", str(extra), "--model.init_args.model.path", checkpoint).model
    assert module.rollout_engine.func is VLLMRolloutEngine
    assert module.rollout_engine.keywords["sleep_level"] == 2 and module.rollout_engine.keywords["max_model_len"] == 4096
    assert [type(c) for c in module.configure_callbacks()] == [VLLMWeightSync]

    saved = {"hyper_parameters": dict(module.hparams)}
    portable_hparams(saved, module)
    torch.save(saved, tmp_path / "hparams.pt")
    hparams = torch.load(tmp_path / "hparams.pt", weights_only=True)["hyper_parameters"]
    assert hparams["rollout_engine"]["class_path"] == "lightning_longrl.rl.vllm_engine.VLLMRolloutEngine"
    again = GRPOModule(**{k: v for k, v in hparams.items() if not k.startswith("_")})
    assert again.rollout_engine.func is VLLMRolloutEngine and again.rollout_engine.keywords == module.rollout_engine.keywords

    extra.write_text(ENGINE_YAML % 3)
    bad = _build(ROOT / "demo" / "grpo.yaml", "--config", str(extra), "--model.init_args.model.path", checkpoint).model
    with pytest.raises(ValueError, match="sleep_level must be 0, 1 or 2, got 3"):
        bad.configure_model()  # builds the engine: its own argument checks run before vLLM starts


def test_an_engine_by_its_old_name_is_refused_with_the_new_form(tiny_checkpoints):
    from lightning_longrl import GRPOModule
    from lightning_longrl.eval.runner import EvalConfig
    from lightning_longrl.models.config import ModelConfig

    with pytest.raises(TypeError, match="class_path: VLLMRolloutEngine"):
        GRPOModule(ModelConfig(path=str(tiny_checkpoints["qwen2_vl"])), rollout_engine="vllm")
    with pytest.raises(TypeError, match="eval engine: engines are classes now"):
        EvalConfig(model="m", data="d", output_dir="o", engine="vllm")
    with pytest.raises(SystemExit):  # YAML: not an import path of an engine
        _build(ROOT / "demo" / "grpo.yaml", "--model.init_args.rollout_engine", "vllm",
               "--model.init_args.model.path", str(tiny_checkpoints["qwen2_vl"]))


def test_an_engine_factory_that_cannot_be_stored_is_left_out_of_the_checkpoint(tiny_checkpoints):
    """A lambda builds the engine; the module adds the weight sync (its engine's class is unknown
    before it runs) and the checkpoint leaves the lambda out with a warning instead of failing."""
    from lightning_longrl import GRPOModule
    from lightning_longrl.callbacks import VLLMWeightSync
    from lightning_longrl.models.config import ModelConfig
    from lightning_longrl.rl.rollout import PolicyRolloutEngine
    from lightning_longrl.stages.hparams import portable_hparams

    module = GRPOModule(ModelConfig(path=str(tiny_checkpoints["qwen2_vl"])),
                        rollout_engine=lambda model: PolicyRolloutEngine(model))
    assert [type(c) for c in module.configure_callbacks()] == [VLLMWeightSync]
    saved = {"hyper_parameters": dict(module.hparams)}
    with pytest.warns(UserWarning, match="'rollout_engine'.*cannot be stored"):
        portable_hparams(saved, module)
    assert set(saved["hyper_parameters"]) == set(module.hparams) - {"rollout_engine"} | {"_class_path"}
