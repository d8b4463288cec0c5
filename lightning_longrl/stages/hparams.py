"""Hyper-parameters in checkpoints: plain types only, with the module's class path."""

from __future__ import annotations

from dataclasses import asdict, is_dataclass
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_warn

from lightning_longrl.importing import class_path_config


def portable_hparams(checkpoint: dict[str, Any], module: L.LightningModule) -> None:
    """Make ``checkpoint["hyper_parameters"]`` loadable anywhere, in place.

    * Dataclass values (``ModelConfig``, ``LRSchedule``, lists of ``RewardSpec`` given from Python) become dicts, since
      checkpoints are read with ``torch.load(weights_only=True)``, which refuses arbitrary classes.
    * Classes and ``functools.partial`` s of classes (a rollout engine with its settings) become
      jsonargparse's ``{"class_path": ..., "init_args": ...}``, the form YAML gives them in; any
      other callable cannot be stored and is left out with a warning (pass it again when loading).
    * ``_class_path`` is recorded when the module was not built by LightningCLI (which records it
      itself), so ``lightning-longrl test --ckpt_path ...`` can map the hyper-parameters back onto
      the config's ``model`` block.
    """
    hparams = checkpoint.get("hyper_parameters")
    if hparams is None:
        return
    for key, value in list(hparams.items()):
        if callable(value) and not is_dataclass(value) and class_path_config(value) is None:
            rank_zero_warn(f"hyper-parameter {key!r} ({value!r}) cannot be stored in the checkpoint and is left out; "
                           "give it again when loading (a class or functools.partial of one can be stored)")
            del hparams[key]
            continue
        hparams[key] = _plain(value)
    hparams.setdefault("_class_path", f"{type(module).__module__}.{type(module).__qualname__}")


def _plain(value: Any) -> Any:
    """Dataclass instances (also inside lists, tuples and dicts) as dicts."""
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    class_path = class_path_config(value)
    if class_path is not None:
        return {**class_path, **({"init_args": _plain(class_path["init_args"])} if "init_args" in class_path else {})}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
