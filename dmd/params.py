"""Selecting force-field parameters θ by name.

A parameter name is ``"force/field/label"``, e.g. ``"NonbondedForce/epsilon/OW"``,
``"PeriodicTorsionForce/k/12"`` or ``"lj/sigma/A"``, where ``label`` is one
entry of ``system.param_labels[force][field]``. ``"force/field"`` alone selects
every element of that leaf. Unknown names raise with the list of valid ones:
a misspelt name is never silently ignored.

    sel = select(system.param_labels, ["lj/epsilon/A", "lj/sigma/A"])
    theta = sel.get(system.params)          # [P] vector
    params2 = sel.set(system.params, theta * 1.01)
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

__all__ = ["ParamSelection", "select", "all_param_names", "param_unit"]


def all_param_names(param_labels: dict) -> list[str]:
    """All ``force/field/label`` names of a system's θ."""
    names = []
    for force, fields in param_labels.items():
        for field, labels in fields.items():
            names.extend(f"{force}/{field}/{lab}" for lab in labels)
    return names


@dataclasses.dataclass(frozen=True)
class ParamSelection:
    """P selected scalar parameters of θ.

    Attributes:
      names: the P full names.
      entries: ``(force, field, flat_index)`` per selected scalar.
    """

    names: tuple[str, ...]
    entries: tuple[tuple[str, str, int], ...]

    @property
    def size(self) -> int:
        return len(self.entries)

    def get(self, params: dict):
        """θ_sel as a ``[P]`` array."""
        return jnp.stack([jnp.ravel(params[f][k])[i] for f, k, i in self.entries])

    def set(self, params: dict, values) -> dict:
        """A copy of ``params`` with the selected entries replaced by ``values [P]``.

        Differentiable in ``values`` (use it inside ``jax.jvp`` / ``jax.grad``).
        """
        out = {f: dict(v) for f, v in params.items()}
        for p, (f, k, i) in enumerate(self.entries):
            leaf = jnp.asarray(out[f][k])
            flat = jnp.ravel(leaf).at[i].set(jnp.asarray(values[p], leaf.dtype))
            out[f][k] = flat.reshape(leaf.shape)
        return out

    def tangents(self, params: dict) -> list[dict]:
        """P one-hot tangent pytrees (same structure as ``params``), one per selected scalar."""
        zeros = {f: {k: jnp.zeros_like(jnp.asarray(v)) for k, v in fields.items()} for f, fields in params.items()}
        out = []
        for f, k, i in self.entries:
            t = {ff: dict(v) for ff, v in zeros.items()}
            leaf = t[f][k]
            t[f][k] = jnp.ravel(leaf).at[i].set(1).reshape(leaf.shape)
            out.append(t)
        return out


def select(param_labels: dict, names: list[str] | tuple[str, ...]) -> ParamSelection:
    """Resolve parameter names against ``param_labels``.

    Raises:
      KeyError: for an unknown name, listing the valid names (or a sample of them).
    """
    if isinstance(names, str):
        names = [names]
    full, entries = [], []
    for name in names:
        parts = name.split("/", 2)
        ok = len(parts) >= 2 and parts[0] in param_labels and parts[1] in param_labels[parts[0]]
        if ok:
            labels = [str(lab) for lab in param_labels[parts[0]][parts[1]]]
            if len(parts) == 2:
                idx = list(range(len(labels)))
            elif parts[2] in labels:
                idx = [labels.index(parts[2])]
            else:
                ok = False
        if not ok:
            valid = all_param_names(param_labels)
            shown = ", ".join(valid[:40]) + (f", ... ({len(valid)} in all)" if len(valid) > 40 else "")
            raise KeyError(f"unknown parameter {name!r}; valid names: {shown}")
        for i in idx:
            full.append(f"{parts[0]}/{parts[1]}/{labels[i]}")
            entries.append((parts[0], parts[1], i))
    return ParamSelection(tuple(full), tuple(entries))


# θ units per (force, field), as documented in dmd.openmm_system; the field alone when the force is not listed
_UNITS = {
    ("HarmonicBondForce", "k"): "kJ/mol/nm²",
    ("HarmonicAngleForce", "k"): "kJ/mol/rad²",
    ("PeriodicTorsionForce", "k"): "kJ/mol",
    ("CMAPTorsionForce", "maps"): "kJ/mol",
    ("spring", "k"): "kJ/mol/nm²",
}
_FIELD_UNITS = {
    "sigma": "nm",
    "nbfix_sigma": "nm",
    "epsilon": "kJ/mol",
    "nbfix_epsilon": "kJ/mol",
    "charge": "e",
    "length": "nm",
    "angle": "rad",
    "phase": "rad",
    "theta0": "rad",
}


def param_unit(name: str) -> str:
    """The unit of θ entry ``name`` (``"force/field[/label]"``, e.g. ``"lj/sigma/A"`` → ``"nm"``); "" if unknown."""
    parts = name.split("/")
    if len(parts) < 2:
        return ""
    return _UNITS.get((parts[0], parts[1]), _FIELD_UNITS.get(parts[1], ""))
