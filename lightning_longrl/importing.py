"""Resolve user-supplied components (reward functions, rollout engines) from ``module.attribute`` paths."""

from __future__ import annotations

import importlib
from typing import Any


def import_object(path: str, what: str = "object") -> Any:
    """The object at ``"package.module.name"`` (``"package.module:name"`` also works).

    Raises:
        ValueError: the path is malformed, or its module or attribute does not exist; the message
            names ``what`` was being loaded and the path.
    """
    module_name, sep, attribute = path.replace(":", ".").rpartition(".")
    if not sep or not module_name or not attribute:
        raise ValueError(f"{what} {path!r} is not an import path like 'package.module.name'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"{what} {path!r}: cannot import module {module_name!r} ({err})") from err
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise ValueError(f"{what} {path!r}: module {module_name!r} has no attribute {attribute!r}") from None
