"""Components named by import path (reward functions, engine classes in checkpoints), resolved by
jsonargparse, the library that resolves the ``class_path`` entries of every YAML config; this
module only names what was being loaded in its errors."""

from __future__ import annotations

import functools
from typing import Any

from jsonargparse.typing import import_object as _jsonargparse_import


def import_object(path: str, what: str = "object") -> Any:
    """The object at ``"package.module.name"``.

    Raises:
        ValueError: the path is malformed, or its module or attribute does not exist; the message
            names ``what`` was being loaded and the path.
    """
    module_name = path.rpartition(".")[0]
    try:
        return _jsonargparse_import(path)
    except ModuleNotFoundError as err:
        raise ValueError(f"{what} {path!r}: cannot import module {module_name!r} ({err})") from err
    except AttributeError as err:
        raise ValueError(f"{what} {path!r}: module {module_name!r} has no attribute {path.rpartition('.')[2]!r} "
                         f"({err})") from None
    except ValueError as err:
        raise ValueError(f"{what} {path!r} is not an import path like 'package.module.name' ({err})") from None


def bound_class(value: Any) -> tuple[type, dict[str, Any]] | None:
    """``(cls, keywords)`` when ``value`` is a class or a keyword-only ``functools.partial`` of one,
    else ``None``.

    jsonargparse itself builds ``partial(helper, instantiator, cls, **init_args)`` from a
    ``class_path`` block (a class as the last positional argument of a helper); that form is read
    the same way."""
    keywords: dict[str, Any] = {}
    while isinstance(value, functools.partial):
        keywords = {**value.keywords, **keywords}
        if not value.args:
            value = value.func
        elif not isinstance(value.func, type) and isinstance(value.args[-1], type):
            value = value.args[-1]
        else:
            return None
    return (value, keywords) if isinstance(value, type) else None


def class_path_config(value: Any) -> dict[str, Any] | None:
    """``value`` as jsonargparse's ``{"class_path": ..., "init_args": ...}`` when
    :func:`bound_class` reads it, else ``None``."""
    bound = bound_class(value)
    if bound is None:
        return None
    cls, keywords = bound
    config: dict[str, Any] = {"class_path": f"{cls.__module__}.{cls.__qualname__}"}
    if keywords:
        config["init_args"] = keywords
    return config


def plain_factory(value: Any) -> Any:
    """A class or ``functools.partial(cls, **init_args)`` for what :func:`bound_class` reads
    (jsonargparse's own partials included); anything else unchanged."""
    bound = bound_class(value)
    if bound is None:
        return value
    cls, keywords = bound
    return functools.partial(cls, **keywords) if keywords else cls


def from_class_path_config(config: dict[str, Any], what: str) -> Any:
    """The class of a ``{"class_path": ..., "init_args": ...}`` block, with its arguments bound
    (``functools.partial``) when it has any: the inverse of :func:`class_path_config`."""
    cls = import_object(config["class_path"], what)
    init_args = config.get("init_args") or {}
    return functools.partial(cls, **init_args) if init_args else cls
