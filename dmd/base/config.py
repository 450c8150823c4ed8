"""Config files (YAML or JSON) read with errors that name the file and the fix."""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

from dmd.base.errors import UserInputError


def load_config(path: str | os.PathLike, *, what: str = "config") -> dict:
    """Read a YAML (or JSON, a YAML subset) mapping from ``path``.

    Raises:
      UserInputError: the file is missing, is not valid YAML, or does not hold a mapping at the top level.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{path}: {what} file not found; check the path")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserInputError(f"{path}: not valid YAML ({exc}); fix the syntax") from None
    if not isinstance(data, dict):
        raise UserInputError(f"{path}: a {what} must be a mapping of keys to values, got {type(data).__name__}")
    return data


def check_keys(data: dict, allowed: set[str] | frozenset[str], *, where: str) -> None:
    """Refuse unknown keys (a misspelt key is never silently ignored)."""
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise UserInputError(f"{where}: unknown key(s) {unknown}; valid keys: {sorted(allowed)}")


def number(value, key: str, where, kind=float, fix: str = ""):
    """``value`` of config key ``key`` as ``kind`` (float or int), or a UserInputError naming the key, the file
    (``where``) and the fix; None stays None. Booleans, non-finite floats and fractional ints are refused too."""
    if value is None:
        return None
    try:
        if isinstance(value, bool):
            raise ValueError(value)
        out = kind(value)
        if (kind is int and out != float(value)) or not math.isfinite(out):
            raise ValueError(value)
    except (TypeError, ValueError, OverflowError):
        what, example = ("a whole number", 4) if kind is int else ("a number", 0.1)
        fix = fix or f"write {what} there (e.g. {example})"
        raise UserInputError(f"{where}: {key}: {value!r} is not {what}; {fix}") from None
    return out


def name_list(value, *, if_empty: str) -> list:
    """One name (a str) or an iterable of names as a list; UserInputError(``if_empty``, which says the fix) when
    there is none (``--forcefield``, ``--sensitivity`` and the like take one name or several)."""
    names = [value] if isinstance(value, str) else list(value)
    if not names:
        raise UserInputError(if_empty)
    return names


def set_groups(obj, groups: dict, knobs: dict) -> None:
    """Fill the group fields of the frozen dataclass ``obj`` (a configuration made of small dataclasses by concern).

    Args:
      groups: field name -> ``(value or None, its dataclass type)``; None takes the type's defaults.
      knobs: flat names of the groups' fields (``n_iter=6``), each overriding its group's value, so a grouped
        configuration keeps the flat keyword API it had before it was grouped.

    Raises:
      TypeError: a knob that no group has (as a dataclass constructor does).
    """
    knobs = dict(knobs)
    for name, (value, kind) in groups.items():
        group = kind() if value is None else value
        own = {f.name: knobs.pop(f.name) for f in dataclasses.fields(group) if f.name in knobs}
        object.__setattr__(obj, name, dataclasses.replace(group, **own))
    if knobs:
        raise TypeError(f"{type(obj).__name__}: unknown knob(s) {', '.join(sorted(knobs))}")


def group_knobs(obj, names) -> dict:
    """Every field of the groups ``names`` of ``obj`` by its flat name (the inverse of :func:`set_groups`)."""
    out = {}
    for name in names:
        out.update(dataclasses.asdict(getattr(obj, name)))
    return out


__all__ = ["check_keys", "group_knobs", "load_config", "name_list", "number", "set_groups"]
