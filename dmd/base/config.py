"""Config files (YAML or JSON) read with errors that name the file and the fix."""

from __future__ import annotations

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


def name_list(value, *, if_empty: str) -> list:
    """One name (a str) or an iterable of names as a list; UserInputError(``if_empty``, which says the fix) when
    there is none (``--forcefield``, ``--sensitivity`` and the like take one name or several)."""
    names = [value] if isinstance(value, str) else list(value)
    if not names:
        raise UserInputError(if_empty)
    return names


__all__ = ["check_keys", "load_config", "name_list"]
