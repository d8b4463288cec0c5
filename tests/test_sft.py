import lightning as L
import pytest
import torch

from lightning_longrl import SFTModule
from lightning_longrl.models.video_lm import VideoLanguageModel
from lightning_longrl.stages.optim import LRSchedule

from helpers import sft_run


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.model.state_dict().items()}


class StartStep(L.Callback):
    def on_train_start(self, trainer, pl_module):
        self.step = trainer.global_step


@pytest.mark.parametrize("arch", ["qwen2_5_vl", "qwen3_vl"])
def test_sft_trains_checkpoints_and_resumes(arch, tmp_path, tiny_checkpoints, synth_dir):
    trainer, module, data = sft_run(tmp_path, tiny_checkpoints[arch], synth_dir, max_steps=3, freeze_vision=True,
                                    trainer_kwargs={"val_check_interval": 3})
    module.configure_model()
    before = snapshot(module)
    trainer.fit(module, data)
    after = snapshot(module)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.startswith("hf.model.language_model") for k in changed)
    assert "hf.lm_head.weight" in changed
    assert not any(k.startswith("hf.model.visual") for k in changed)  # frozen vision tower
    assert trainer.logged_metrics["train/loss"].isfinite()
    for key in ("train/lr", "train/tokens_per_s", "train/frames_per_sample", "val/loss"):
        assert key in trainer.logged_metrics, key
    assert trainer.logged_metrics["train/frames_per_sample"] == 8

    ckpt = trainer.checkpoint_callback.best_model_path or trainer.checkpoint_callback.last_model_path
    assert ckpt and torch.load(ckpt, weights_only=False)["global_step"] == 3

    start = StartStep()
    resumed_trainer, resumed, data2 = sft_run(tmp_path / "resume", tiny_checkpoints[arch], synth_dir, max_steps=5,
                                              trainer_kwargs={"callbacks": [start]})
    resumed_trainer.fit(resumed, data2, ckpt_path=ckpt)
    assert start.step == 3 and resumed_trainer.global_step == 5
    # resuming restored the trained weights (not the initial ones) before continuing
    restored = torch.load(ckpt, weights_only=True)  # plain hyper-parameters: loads without unpickling classes
    assert torch.equal(restored["state_dict"]["model.hf.lm_head.weight"], after["hf.lm_head.weight"])
    assert restored["hyper_parameters"]["_class_path"] == "lightning_longrl.stages.sft.SFTModule"
    assert restored["hyper_parameters"]["model"]["path"] == str(tiny_checkpoints[arch])
    loaded = SFTModule.load_from_checkpoint(ckpt)
    assert loaded.model_config.path == str(tiny_checkpoints[arch])
    assert torch.equal(loaded.model.hf.lm_head.weight, after["hf.lm_head.weight"])


def test_unfrozen_vision_tower_trains_and_export_loads(tmp_path, tiny_checkpoints, synth_dir):
    from lightning_longrl.callbacks import HFExport

    export = HFExport("hf")
    trainer, module, data = sft_run(tmp_path, tiny_checkpoints["qwen2_vl"], synth_dir, max_steps=2, freeze_vision=False,
                                    trainer_kwargs={"callbacks": [export]})
    module.configure_model()
    before = snapshot(module)
    trainer.fit(module, data)
    after = snapshot(module)
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("hf.model.visual"))
    assert export.exported == tmp_path / "logs" / "version_0" / "hf"
    reloaded = VideoLanguageModel.from_pretrained(export.exported)
    assert reloaded.state_dict().keys() == after.keys()
    for key, value in reloaded.state_dict().items():
        assert torch.equal(value, after[key]), key


def test_generation_test_loop_reports_accuracy_and_format(tmp_path, tiny_checkpoints, synth_dir):
    trainer, module, data = sft_run(tmp_path, tiny_checkpoints["qwen2_vl"], synth_dir, test_file=str(synth_dir / "test.jsonl"))
    module.max_new_tokens = 8
    (metrics,) = trainer.test(module, data)
    records = data.dataset("test").records
    categories = {r.category for r in records}
    assert set(metrics) == {"test/accuracy", "test/format_rate", *(f"test/accuracy/{c}" for c in categories)}
    assert 0.0 <= metrics["test/accuracy"] <= 1.0
    # the per-category accuracies, weighted by question counts, add up to the overall one
    counts = {c: sum(r.category == c for r in records) for c in categories}
    overall = sum(metrics[f"test/accuracy/{c}"] * n for c, n in counts.items()) / len(records)
    assert overall == pytest.approx(metrics["test/accuracy"], abs=1e-6)


def test_lr_schedule_shapes():
    cosine = LRSchedule(warmup_steps=2, decay="cosine", min_lr_ratio=0.1)
    assert [round(cosine.factor(s, 10), 3) for s in (0, 1, 2, 9)] == [0.5, 1.0, 1.0, 0.1]  # step 9 is the last of 10
    assert LRSchedule(decay="linear").factor(5, 11) == pytest.approx(0.5)
    assert LRSchedule(decay="linear", min_lr_ratio=0.2).factor(10, 11) == pytest.approx(0.2)
    assert LRSchedule().factor(7, 10) == 1.0


def test_predict_writes_jsonl_rows(tmp_path, tiny_checkpoints, synth_dir):
    import json

    from lightning_longrl.callbacks import JSONLPredictionWriter

    writer = JSONLPredictionWriter("preds.jsonl")
    trainer, module, data = sft_run(tmp_path, tiny_checkpoints["qwen2_vl"], synth_dir,
                                    predict_file=str(synth_dir / "test.jsonl"), trainer_kwargs={"callbacks": [writer]})
    module.max_new_tokens = 4
    trainer.predict(module, data, return_predictions=False)
    rows = [json.loads(line) for line in writer.written.read_text().splitlines()]
    expected = [json.loads(line)["id"] for line in (synth_dir / "test.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == expected
    assert set(rows[0]) == {"id", "category", "response", "prediction", "answer", "correct"}
