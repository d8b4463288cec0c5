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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

DESCRIPTION = """\
Long-video reasoning: SFT and GRPO of vision-language models, evaluation, curation.

Training (LightningCLI): fit --config configs/demo/sft.yaml; `lightning-longrl fit --help` for options.
Every other command takes its options on the command line or in a YAML file (--config);
`lightning-longrl <command> --help` lists them. Examples:
  eval --model runs/demo/grpo/version_0/hf_model --data data/synth/test.jsonl --output_dir runs/eval
  eval-frames --frames [8,16,32] --model ... --data ... --output_dir runs/frames
  curate --config configs/curate/local_hf.yaml --videos <folder> --output_dir data/curated
  filter --model <hf_model> --data records.jsonl --output_dir data/filtered --k 10
  table --stages base=a/results.json SFT=b/results.json SFT+GRPO=c/results.json
  frames-figure SFT+GRPO=a/frame_scaling.json SFT=b/frame_scaling.json --out runs/figure8
"""

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

    import lightning_longrl.rl.vllm_engine  # noqa: F401 - its engine's short name in configs

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


# ------------------------------------------------------------------------- other commands
# Each command below is a jsonargparse subcommand: its options come from its config dataclass's
# fields, from the command line or a ``--config`` YAML; jsonargparse checks their types and builds
# the nested dataclasses and ``class_path`` blocks (rollout engines), then the command builds its
# config (whose own checks run) from them.


def _synth_arguments(parser) -> None:
    from lightning_longrl.synth.dataset import SynthConfig

    parser.add_class_arguments(SynthConfig)


def run_synth(options: dict) -> None:
    from lightning_longrl.synth.dataset import SynthConfig, generate_dataset

    config = SynthConfig(**options)
    manifest = generate_dataset(config)
    counts = ", ".join(f"{k} {v}" for k, v in manifest["counts"].items())
    print(f"synthetic dataset in {config.out_dir}: {counts}")


def _tiny_model_arguments(parser) -> None:
    from lightning_longrl.synth.tiny_model import TinyModelSpec

    parser.add_argument("--out", type=str, required=True, help="output folder")
    parser.add_argument("--overwrite", type=bool, default=False, help="rebuild even if the folder holds the same spec")
    parser.add_class_arguments(TinyModelSpec, "spec")


def run_tiny_model(options: dict) -> None:
    from lightning_longrl.synth.tiny_model import create_tiny_checkpoint

    spec = options["spec"]
    path = create_tiny_checkpoint(options["out"], spec, overwrite=options["overwrite"])
    print(f"tiny {spec.arch} checkpoint in {path}")


def _eval_arguments(parser, study: bool = False) -> None:
    import lightning_longrl.rl.vllm_engine  # noqa: F401 - its engine's short name in configs
    from lightning_longrl.eval.runner import EvalConfig

    if study:
        parser.add_argument("--frames", type=list[int], required=True, help="frame counts, e.g. [16,32,64]")
    parser.add_class_arguments(EvalConfig)


def run_eval(options: dict, study: bool = False) -> None:
    from lightning_longrl.eval.runner import EvalConfig, evaluate, results_table

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


def _curate_arguments(parser) -> None:
    from lightning_longrl.curate.pipeline import CurateConfig

    parser.add_class_arguments(CurateConfig)


def run_curate(options: dict) -> None:
    from lightning_longrl.curate.pipeline import CurateConfig, curate

    config = CurateConfig(**options)
    summary = curate(config)
    print(json.dumps(summary.__dict__, indent=2))
    out = Path(config.output_dir)
    print(f"records: {out / 'records.jsonl'}; rejected replies: {out / 'rejects.jsonl'}")


def _filter_arguments(parser) -> None:
    import lightning_longrl.rl.vllm_engine  # noqa: F401 - its engine's short name in configs
    from lightning_longrl.curate.difficulty import FilterConfig

    parser.add_class_arguments(FilterConfig)


def run_filter(options: dict) -> None:
    from lightning_longrl.curate.difficulty import FilterConfig, difficulty_filter

    config = FilterConfig(**options)
    summary = difficulty_filter(config)
    print(json.dumps(summary, indent=2))
    out = Path(config.output_dir)
    print(f"splits: {out / 'sft.jsonl'}, {out / 'rl.jsonl'}; labels: {out / 'labels.jsonl'}; "
          f"histogram: {out / 'accuracy_histogram.png'}")


def _named_paths(command: str, pairs: Sequence[str], what: str) -> list[tuple[str, str]]:
    split = [a.split("=", 1) for a in pairs]
    if not split or any(len(p) != 2 or not p[0] or not p[1] for p in split):
        raise SystemExit(f"usage: lightning-longrl {command} NAME={what} [NAME={what} ...]")
    return [(name, path) for name, path in split]


def _table_arguments(parser) -> None:
    parser.add_argument("runs", nargs="+", help="NAME=results.json pairs, one per model (a row each)")
    parser.add_argument("--stages", action="store_true",
                        help="add the paper's Table 4 columns: which stages (SFT, GRPO) each model went through")


def run_table(options: dict) -> None:
    from lightning_longrl.report import accuracy_table, load_metrics

    runs = [(name, load_metrics(path)) for name, path in _named_paths("table [--stages]", options["runs"], "results.json")]
    stages = None
    if options["stages"]:
        stages = {name: ("✓" if "SFT" in name else "✗", "✓" if "GRPO" in name else "✗") for name, _ in runs}
    print(accuracy_table(runs, stages))


def _frames_figure_arguments(parser) -> None:
    parser.add_argument("runs", nargs="+", help="NAME=frame_scaling.json pairs, one per model (a line each)")
    parser.add_argument("--out", type=str, default=".", help="folder of the PNG plot and the Markdown table")


def run_frames_figure(options: dict) -> None:
    from lightning_longrl.report import frame_scaling_figure, load_frame_scaling

    runs = [(name, load_frame_scaling(path))
            for name, path in _named_paths("frames-figure", options["runs"], "frame_scaling.json")]
    png, md = frame_scaling_figure(runs, options["out"])
    print(md.read_text(), end="")
    print(f"plot: {png}\ntable: {md}")


@dataclass(frozen=True)
class Command:
    help: str
    arguments: Callable  # (parser) -> None: adds the command's options
    run: Callable  # (options: dict) -> None


COMMANDS: dict[str, Command] = {
    "eval": Command("a model over a long-video benchmark (JSONL, LongVideo-Reason-eval, VideoMME)",
                    _eval_arguments, run_eval),
    "eval-frames": Command("the frame-scaling study: eval at several frame counts, table and PNG plot",
                           partial(_eval_arguments, study=True), partial(run_eval, study=True)),
    "curate": Command("long videos -> clip captions -> LLM-written question/reasoning/answer records (resumable)",
                      _curate_arguments, run_curate),
    "filter": Command("difficulty labels by k sampled answers per question; SFT and RL splits, histogram",
                      _filter_arguments, run_filter),
    "synth": Command("write synthetic long videos with reasoning questions (train/val/test JSONL)",
                     _synth_arguments, run_synth),
    "tiny-model": Command("write a tiny random Qwen-VL checkpoint (tokenizer and processor included)",
                          _tiny_model_arguments, run_tiny_model),
    "table": Command("per-category accuracy table of evaluated models (eval's results.json or test metrics)",
                     _table_arguments, run_table),
    "frames-figure": Command("accuracy against frames for several models (eval-frames outputs), PNG + table",
                             _frames_figure_arguments, run_frames_figure),
}
"""The commands besides LightningCLI's, each a jsonargparse subcommand."""

LIGHTNING_HELP = {
    "fit": "train a stage (SFT or GRPO) from a YAML config: fit --config configs/demo/sft.yaml",
    "validate": "run the validation loop of a config/checkpoint",
    "test": "run the test loop (generation + accuracy)",
    "predict": "write predictions for a record file",
}


def build_parser(only: str | None = None):
    """The ``lightning-longrl`` parser: one jsonargparse subcommand per command (``only``: just that
    one, so a command does not import what the others need). The LightningCLI commands are listed
    for ``--help``; ``main`` hands them to LightningCLI, which has its own parser."""
    import argparse

    from jsonargparse import ActionConfigFile, ArgumentParser, DefaultHelpFormatter

    class Formatter(argparse.RawDescriptionHelpFormatter, DefaultHelpFormatter):
        """Keeps the description's lines (its examples) as written."""

    parser = ArgumentParser(prog="lightning-longrl", description=DESCRIPTION, formatter_class=Formatter)
    commands = parser.add_subcommands(dest="command", required=True)
    for name, help in LIGHTNING_HELP.items():
        if only in (None, name):
            commands.add_subcommand(name, ArgumentParser(description=f"LightningCLI: {help}"), help=help)
    for name, command in COMMANDS.items():
        if only in (None, name):
            sub = ArgumentParser(prog=f"lightning-longrl {name}", description=command.help)
            sub.add_argument("--config", action=ActionConfigFile, help="YAML file with any of the options below")
            command.arguments(sub)
            commands.add_subcommand(name, sub, help=command.help)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    quiet_known_warnings()
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in LIGHTNING_HELP:
        run_lightning(None if argv is None else args)
        return
    if args and not args[0].startswith("-") and args[0] not in COMMANDS:
        print(f"lightning-longrl: unknown command {args[0]!r}", file=sys.stderr)
        build_parser().print_usage(sys.stderr)
        raise SystemExit(2)
    parser = build_parser(args[0] if args and args[0] in COMMANDS else None)
    if not args:
        parser.print_help()
        return
    parsed = parser.parse_args(args)
    options = parser.instantiate(parsed)[parsed.command].as_dict()
    options.pop("config", None)
    COMMANDS[parsed.command].run(options)


if __name__ == "__main__":
    main()
