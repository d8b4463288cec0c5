"""The ``lightning-longrl`` command.

``fit``, ``validate``, ``test`` and ``predict`` are LightningCLI subcommands driven by YAML
configs (``class_path``/``init_args``); ``synth`` writes synthetic long-video data and
``tiny-model`` writes a tiny random Qwen-VL checkpoint for experiments and tests.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

USAGE = """\
usage: lightning-longrl <command> [options]

Training and evaluation (LightningCLI; `lightning-longrl <command> --help` for options):
  fit          train a stage (SFT or GRPO) from a YAML config:  fit --config configs/demo/sft.yaml
  validate     run the validation loop of a config/checkpoint
  test         run the test loop (generation + accuracy)
  predict      write predictions for a record file
  eval         a model over a long-video benchmark (JSONL, LongVideo-Reason-eval, VideoMME):
               eval --model runs/demo/grpo/version_0/hf_model --data data/synth/test.jsonl --output_dir runs/eval
  eval-frames  the frame-scaling study: eval at several frame counts, table and PNG plot:
               eval-frames --frames [8,16,32] --model ... --data ... --output_dir runs/frames

Data and models:
  curate       long videos -> clip captions -> LLM-written question/reasoning/answer records (resumable):
               curate --config configs/curate/local_hf.yaml --videos <folder> --output_dir data/curated
  filter       difficulty labels by k sampled answers per question; SFT and RL splits, histogram:
               filter --model <hf_model> --data records.jsonl --output_dir data/filtered --k 10
  synth        write synthetic long videos with reasoning questions (train/val/test JSONL)
  tiny-model   write a tiny random Qwen-VL checkpoint (tokenizer and processor included)
  table        per-category accuracy table of evaluated models (eval's results.json or test metrics):
               table --stages base=a/results.json SFT=b/results.json SFT+GRPO=c/results.json
  frames-figure  accuracy against frames for several models (eval-frames outputs), PNG + table:
               frames-figure SFT+GRPO=a/frame_scaling.json SFT=b/frame_scaling.json --out runs/figure8
"""

LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test", "predict")


def quiet_known_warnings() -> None:
    # Tokenizers' fork warning is noise once DataLoader workers fork; keep its threads off instead.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Lightning 2.6 triggers these deprecations inside its own code; users cannot act on them.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    warnings.filterwarnings("ignore", message=r".*add_instantiator.*")
    # GRPO's frozen reference model is in eval mode on purpose
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode.*")


def run_lightning(args: Sequence[str] | None) -> None:
    """LightningCLI on ``args`` (``None``: the process's own command line)."""
    import lightning as L
    from lightning.pytorch.cli import LightningCLI

    class LongRLCLI(LightningCLI):
        def after_fit(self) -> None:
            report_run(self.trainer)

        def after_predict(self) -> None:
            report_run(self.trainer)

    LongRLCLI(
        L.LightningModule, L.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
        auto_configure_optimizers=False, save_config_kwargs={"overwrite": True},
        args=None if args is None else list(args),
    )


def report_run(trainer) -> None:
    """Print where the run's TensorBoard logs, checkpoints and exports went."""
    from lightning_longrl.callbacks import HFExport, JSONLPredictionWriter

    if not trainer.is_global_zero:
        return
    lines = []
    if trainer.logger is not None and trainer.logger.log_dir:
        lines.append(f"TensorBoard logs : {trainer.logger.log_dir}")
        lines.append(f"  view with      : tensorboard --logdir {trainer.logger.save_dir}")
    checkpoint = trainer.checkpoint_callback
    if checkpoint is not None and checkpoint.dirpath:
        last = checkpoint.last_model_path or checkpoint.best_model_path
        lines.append(f"Checkpoints      : {checkpoint.dirpath}" + (f" (latest: {os.path.basename(last)})" if last else ""))
    for callback in trainer.callbacks:
        if isinstance(callback, HFExport) and callback.exported is not None:
            lines.append(f"Hugging Face     : {callback.exported}")
        if isinstance(callback, JSONLPredictionWriter) and callback.written is not None:
            lines.append(f"Predictions      : {callback.written}")
    if lines:
        print("\n".join(["", "Run finished.", *lines]), flush=True)


def parse_options(prog: str, description: str, config_class: type, args: Sequence[str],
                  nested: dict[str, type] | None = None, extra=None) -> dict:
    """Options of a dataclass-configured command, from the command line and ``--config`` YAML.

    Args:
        nested: dataclass fields that are themselves dataclasses, built from their dicts.
        extra: ``extra(parser)`` adds further arguments (returned in the same dict).
    """
    from jsonargparse import ActionConfigFile, ArgumentParser

    parser = ArgumentParser(prog=f"lightning-longrl {prog}", description=description)
    parser.add_argument("--config", action=ActionConfigFile, help="YAML file with any of the options below")
    if extra is not None:
        extra(parser)
    parser.add_class_arguments(config_class)
    options = parser.parse_args(list(args)).as_dict()
    options.pop("config", None)
    for name, cls in (nested or {}).items():
        if isinstance(options.get(name), dict):
            options[name] = cls(**options[name])
    return options


def run_synth(args: Sequence[str]) -> None:
    from lightning_longrl.synth.dataset import SynthConfig, generate_dataset

    config = SynthConfig(**parse_options("synth", "Write a synthetic long-video reasoning dataset.", SynthConfig, args))
    manifest = generate_dataset(config)
    counts = ", ".join(f"{k} {v}" for k, v in manifest["counts"].items())
    print(f"synthetic dataset in {config.out_dir}: {counts}")


def run_tiny_model(args: Sequence[str]) -> None:
    from jsonargparse import ActionConfigFile, ArgumentParser

    from lightning_longrl.synth.tiny_model import TinyModelSpec, create_tiny_checkpoint

    parser = ArgumentParser(prog="lightning-longrl tiny-model", description="Write a tiny random Qwen-VL checkpoint.")
    parser.add_argument("--config", action=ActionConfigFile, help="YAML file with any of the options below")
    parser.add_argument("--out", type=str, required=True, help="output folder")
    parser.add_argument("--overwrite", type=bool, default=False, help="rebuild even if the folder holds the same spec")
    parser.add_class_arguments(TinyModelSpec, "spec")
    cfg = parser.parse_args(list(args))
    path = create_tiny_checkpoint(cfg.out, TinyModelSpec(**cfg.spec.as_dict()), overwrite=cfg.overwrite)
    print(f"tiny {cfg.spec.arch} checkpoint in {path}")


def run_eval(args: Sequence[str], study: bool = False) -> None:
    from lightning_longrl.eval.runner import EvalConfig, evaluate, results_table
    from lightning_longrl.rl.vllm_engine import VLLMConfig

    def frames_argument(parser) -> None:
        parser.add_argument("--frames", type=list[int], required=True, help="frame counts, e.g. [16,32,64]")

    options = parse_options("eval-frames" if study else "eval",
                            "Evaluate a model on a long-video benchmark" + (" at several frame counts." if study else "."),
                            EvalConfig, args, {"vllm": VLLMConfig}, frames_argument if study else None)
    frames = options.pop("frames", None)
    config = EvalConfig(**options)
    if study:
        from lightning_longrl.eval.frame_scaling import frame_scaling

        frame_scaling(config, frames)
        out = config.output_dir
        print((Path(out) / "frame_scaling.md").read_text())
        print(f"plot: {Path(out) / 'frame_scaling.png'}\ntable: {Path(out) / 'frame_scaling.md'}")
        return
    result = evaluate(config)
    print(results_table(result.metrics, result.groups, Path(config.model).name))
    print(f"\n{int(result.metrics['questions'])} questions ({result.answered_now} answered now); "
          f"predictions, results.json, results.md and TensorBoard logs in {result.output_dir}")


def run_curate(args: Sequence[str]) -> None:
    from lightning_longrl.curate.backends import BackendConfig
    from lightning_longrl.curate.pipeline import CurateConfig, curate

    config = CurateConfig(**parse_options("curate", "Build question / reasoning / answer records from long videos.",
                                          CurateConfig, args, dict.fromkeys(("captioner", "writer", "refiner"), BackendConfig)))
    summary = curate(config)
    print(json.dumps(summary.__dict__, indent=2))
    out = Path(config.output_dir)
    print(f"records: {out / 'records.jsonl'}; rejected replies: {out / 'rejects.jsonl'}")


def run_filter(args: Sequence[str]) -> None:
    from lightning_longrl.curate.difficulty import FilterConfig, difficulty_filter
    from lightning_longrl.rl.vllm_engine import VLLMConfig

    config = FilterConfig(**parse_options(
        "filter", "Label questions easy / medium / hard by k sampled answers; write SFT and RL splits.",
        FilterConfig, args, {"vllm": VLLMConfig}))
    summary = difficulty_filter(config)
    print(json.dumps(summary, indent=2))
    out = Path(config.output_dir)
    print(f"splits: {out / 'sft.jsonl'}, {out / 'rl.jsonl'}; labels: {out / 'labels.jsonl'}; "
          f"histogram: {out / 'accuracy_histogram.png'}")


def _named_paths(command: str, args: Sequence[str], what: str) -> list[tuple[str, str]]:
    pairs = [a.split("=", 1) for a in args if not a.startswith("--")]
    if not pairs or any(len(p) != 2 or not p[0] or not p[1] for p in pairs):
        raise SystemExit(f"usage: lightning-longrl {command} NAME={what} [NAME={what} ...]")
    return [(name, path) for name, path in pairs]


def run_table(args: Sequence[str]) -> None:
    from lightning_longrl.report import accuracy_table, load_metrics

    runs = [(name, load_metrics(path)) for name, path in _named_paths("table [--stages]", args, "results.json")]
    stages = None
    if "--stages" in args:  # the paper's Table 4 marks which stages each model went through
        stages = {name: ("✓" if "SFT" in name else "✗", "✓" if "GRPO" in name else "✗") for name, _ in runs}
    print(accuracy_table(runs, stages))


def run_frames_figure(args: Sequence[str]) -> None:
    from lightning_longrl.report import frame_scaling_figure, load_frame_scaling

    rest = list(args)
    out = "."
    if "--out" in rest:
        at = rest.index("--out")
        if at + 1 >= len(rest):
            raise SystemExit("lightning-longrl frames-figure: --out needs a folder")
        out = rest[at + 1]
        del rest[at : at + 2]
    runs = [(name, load_frame_scaling(path)) for name, path in _named_paths("frames-figure", rest, "frame_scaling.json")]
    png, md = frame_scaling_figure(runs, out)
    print(md.read_text(), end="")
    print(f"plot: {png}\ntable: {md}")


def main(argv: Sequence[str] | None = None) -> None:
    quiet_known_warnings()
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return
    command, rest = args[0], args[1:]
    if command in LIGHTNING_SUBCOMMANDS:
        run_lightning(None if argv is None else args)
    elif command == "synth":
        run_synth(rest)
    elif command == "tiny-model":
        run_tiny_model(rest)
    elif command == "curate":
        run_curate(rest)
    elif command == "filter":
        run_filter(rest)
    elif command in ("eval", "eval-frames"):
        run_eval(rest, study=command == "eval-frames")
    elif command == "table":
        run_table(rest)
    elif command == "frames-figure":
        run_frames_figure(rest)
    else:
        print(f"lightning-longrl: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        raise SystemExit(2)


if __name__ == "__main__":
    main()
