"""Unmerged MTZ in, merged MTZ out (gemmi), and the observation table the merging model works on.

An unmerged MTZ holds one row per observation: H K L (stored in the ASU) and M/ISYM (which symmetry
operation brought the observed index there), BATCH (image), I, SIGI and any number of per-observation
metadata columns (XDET, YDET, wavelength, ...). :func:`read_unmerged` restores the observed indices,
groups observations by unique reflection in gemmi's (CCP4) ASU — keeping Friedel mates apart when
``anomalous`` — and validates every row: rows with a non-finite I/SIGI/metadata or SIGI ≤ 0 are dropped
and *counted* in the returned table's ``rejected`` record (and the log), never silently.

All arrays are numpy; ``hkl`` int32 ``[n, 3]``; intensities in the file's arbitrary units;
``inv_d2`` = 1/d² (Å⁻²).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import gemmi
import numpy as np

import analysis.merging.partials as partials_mod
from analysis import cell as cell_mod
from analysis import symmetry
from analysis.mtz_io import build_mtz, mtz_table, open_mtz, save_mtz, write_mtz
from dmd.base.errors import UserInputError

__all__ = ["Unmerged", "hkl_keys", "hkl_rows", "in_asu", "group_observations"]  # the observation table
__all__ += ["read_unmerged", "write_unmerged", "write_merged", "read_merged"]  # MTZ files

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Unmerged:
    """Observations grouped by unique reflection.

    Attributes:
      hkl: int32 ``[n_refl, 3]`` unique reflections in gemmi's ASU. With ``anomalous`` a (−) reflection is
        stored as the negated ASU index (so ``-hkl`` is its ASU partner); centric reflections are always (+).
      refl: int32 ``[n_obs]`` row of ``hkl`` each observation belongs to.
      image: int32 ``[n_obs]`` dense image index 0 … n_images−1.
      batch: int32 ``[n_images]`` the file's BATCH number of each dense image index.
      intensity, sigma: float64 ``[n_obs]`` I and σ(I) (σ > 0), file units.
      metadata: float64 ``[n_obs, n_meta]`` user-named per-observation columns (raw, not standardized).
      metadata_names: names of the metadata columns.
      hkl_obs: int32 ``[n_obs, 3]`` observed (original) indices.
      cell: ``[6]`` Å/degrees; spacegroup: HM symbol; anomalous: Friedel mates kept apart.
      inv_d2: float64 ``[n_refl]`` 1/d² (Å⁻²); epsilon: int32 ``[n_refl]``; centric: bool ``[n_refl]``.
      rejected: counts of dropped rows by reason.
      wavelength: Å (from the MTZ dataset; 0 when unknown).
    """

    hkl: np.ndarray
    refl: np.ndarray
    image: np.ndarray
    batch: np.ndarray
    intensity: np.ndarray
    sigma: np.ndarray
    metadata: np.ndarray
    metadata_names: tuple[str, ...]
    hkl_obs: np.ndarray
    cell: np.ndarray
    spacegroup: str
    anomalous: bool
    inv_d2: np.ndarray
    epsilon: np.ndarray
    centric: np.ndarray
    rejected: dict
    wavelength: float = 0.0

    @property
    def n_obs(self) -> int:
        return int(self.refl.shape[0])

    @property
    def n_refl(self) -> int:
        return int(self.hkl.shape[0])

    @property
    def n_images(self) -> int:
        return int(self.batch.shape[0])

    def multiplicity(self) -> np.ndarray:
        """Observations per unique reflection, int ``[n_refl]``."""
        return np.bincount(self.refl, minlength=self.n_refl)

    def subset(self, obs_mask: np.ndarray) -> Unmerged:
        """Keep the observations where ``obs_mask`` is True (reflection list and images unchanged)."""
        m = np.asarray(obs_mask, bool)
        return dataclasses.replace(
            self,
            refl=self.refl[m],
            image=self.image[m],
            intensity=self.intensity[m],
            sigma=self.sigma[m],
            metadata=self.metadata[m],
            hkl_obs=self.hkl_obs[m],
        )


def hkl_keys(hkl) -> np.ndarray:
    """One int64 per Miller index, int ``[n]`` from int ``[n, 3]`` (|h|, |k|, |l| < 512): equal keys ⇔ equal hkl.

    Merging's one hkl packing (for ``np.unique`` grouping); to be replaced by the analysis-wide one.
    """
    return symmetry.hkl_keys(hkl)


def hkl_rows(table, query) -> np.ndarray:
    """Row of each ``query`` index in ``table`` (both int ``[., 3]``; table rows unique), int ``[n_query]``; −1
    where a query index is not in the table."""
    keys, q = hkl_keys(np.reshape(table, (-1, 3))), hkl_keys(np.reshape(query, (-1, 3)))
    if keys.size == 0:
        return np.full(q.shape, -1, np.int64)
    order = np.argsort(keys, kind="stable")
    pos = np.minimum(np.searchsorted(keys[order], q), keys.size - 1)
    return np.where(keys[order][pos] == q, order[pos], -1)


def in_asu(hkl, spacegroup) -> np.ndarray:
    """bool ``[n]``: True where a row of int ``[n, 3]`` lies inside gemmi's reciprocal ASU of ``spacegroup``.

    In an anomalous :class:`Unmerged` table these are the (+) reflections (a (−) one is stored negated).
    """
    asu = gemmi.ReciprocalAsu(symmetry.spacegroup(spacegroup))
    return np.array([asu.is_in([int(v) for v in h]) for h in np.asarray(hkl)], bool)


def group_observations(
    hkl_obs,
    intensity,
    sigma,
    batch,
    cell,
    spacegroup,
    *,
    anomalous: bool = False,
    metadata=None,
    metadata_names=(),
    source: str = "observations",
    wavelength: float = 0.0,
) -> Unmerged:
    """Validate observations, map them to the ASU and group them by unique reflection.

    Args:
      hkl_obs: int ``[n_obs, 3]`` observed Miller indices (any symmetry equivalent).
      intensity, sigma: ``[n_obs]`` I and σ(I).
      batch: int ``[n_obs]`` image (BATCH) numbers.
      cell: ``[6]`` Å/degrees. spacegroup: anything gemmi resolves.
      anomalous: keep I(+) and I(−) apart.
      metadata: optional ``[n_obs, n_meta]`` per-observation columns.
      source: name used in log/error messages (the file).

    Rows with non-finite values or σ ≤ 0 are dropped and counted (``rejected``); so are systematically
    absent reflections and 000.
    """
    hkl_obs = np.asarray(hkl_obs, np.int32).reshape(-1, 3)
    n = hkl_obs.shape[0]
    intensity = np.asarray(intensity, np.float64).reshape(-1)
    sigma = np.asarray(sigma, np.float64).reshape(-1)
    batch = np.asarray(batch).reshape(-1)
    meta = np.zeros((n, 0)) if metadata is None else np.asarray(metadata, np.float64).reshape(n, -1)
    if not (intensity.shape[0] == sigma.shape[0] == batch.shape[0] == n):
        raise UserInputError(f"{source}: hkl, I, SIGI and BATCH have different lengths; pass matching columns")
    group = symmetry.spacegroup(spacegroup)
    rejected = {
        "nonfinite_intensity_or_sigma": int(np.count_nonzero(~(np.isfinite(intensity) & np.isfinite(sigma)))),
        "sigma_not_positive": int(np.count_nonzero(np.isfinite(sigma) & (sigma <= 0))),
        "nonfinite_metadata": int(np.count_nonzero(~np.all(np.isfinite(meta), axis=1))),
        "hkl_000": int(np.count_nonzero(np.all(hkl_obs == 0, axis=1))),
    }
    good = np.isfinite(intensity) & np.isfinite(sigma) & (sigma > 0) & np.all(np.isfinite(meta), axis=1)
    good &= ~np.all(hkl_obs == 0, axis=1)
    absent = np.zeros(n, bool)
    absent[good] = symmetry.is_absent(hkl_obs[good], group)
    rejected["systematically_absent"] = int(np.count_nonzero(absent))
    good &= ~absent
    n_bad = n - int(np.count_nonzero(good))
    if n_bad:
        log.warning("%s: rejected %d of %d observations: %s", source, n_bad, n, rejected)
    if not np.any(good):
        fix = "check the I/SIGI column names (--intensity, --sigma)"
        if (
            rejected["sigma_not_positive"]
            and rejected["sigma_not_positive"] >= n - rejected["nonfinite_intensity_or_sigma"]
        ):
            fix = "every σ(I) is ≤ 0: name the real sigma column with --sigma (or re-export with sigmas)"
        raise UserInputError(f"{source}: no valid observations left ({rejected}); {fix}")
    if not np.any(intensity[good] != 0.0):
        raise UserInputError(
            f"{source}: every intensity is zero; wrong column? name the intensity column with --intensity "
            "(e.g. I, IPR or IOBS) or re-export the integrated data"
        )
    hkl_obs, intensity, sigma, batch, meta = hkl_obs[good], intensity[good], sigma[good], batch[good], meta[good]

    # Vectorized orbit representative first, then one gemmi ASU call per *unique* reflection.
    rep = symmetry.canonical_hkl(hkl_obs, group, anomalous=anomalous)
    rep_keys = hkl_keys(rep)
    uniq_keys, first, refl = np.unique(rep_keys, return_index=True, return_inverse=True)
    uniq_rep = rep[first]
    hkl_asu, isym = symmetry.to_asu(uniq_rep, group, anomalous=False)
    centric = symmetry.centric_flags(hkl_asu, group)
    if anomalous:
        # a (−) reflection (reached through a Friedel operation) is stored negated; centric ones stay (+)
        minus = (isym % 2 == 0) & ~centric
        hkl_asu = np.where(minus[:, None], -hkl_asu, hkl_asu)
    epsilon = symmetry.epsilon_factors(hkl_asu, group)  # ε(−h) = ε(h)
    images, image = np.unique(batch, return_inverse=True)
    cell = np.asarray(cell, np.float64)
    return Unmerged(
        hkl=hkl_asu.astype(np.int32),  # (−) mates negated when anomalous
        refl=refl.astype(np.int32).ravel(),
        image=image.astype(np.int32).ravel(),
        batch=images.astype(np.int32),
        intensity=intensity,
        sigma=sigma,
        metadata=meta,  # raw, not standardized
        metadata_names=tuple(metadata_names),
        hkl_obs=hkl_obs,
        cell=cell,
        spacegroup=group.hm,
        anomalous=bool(anomalous),  # Friedel mates kept apart
        inv_d2=np.asarray(cell_mod.inv_d2(hkl_asu.astype(np.float64), cell), np.float64),
        epsilon=np.asarray(epsilon, np.int32),
        centric=np.asarray(centric, bool),
        rejected=rejected,  # counts by reason
        wavelength=float(wavelength),
    )


_DERIVED_METADATA = ("DHKL", "INV_D2", "RESOLUTION")


def _resolve_labels(mtz: gemmi.Mtz, path, intensity, sigma, batch, metadata) -> tuple[str, str, list[str]]:
    """Check the batch/intensity/sigma/metadata labels against the file; fill in the default I and σ labels."""
    labels = mtz.column_labels()
    if batch not in labels:
        raise UserInputError(
            f"{path}: no {batch!r} column (columns: {labels}); this looks merged — pass an unmerged MTZ or "
            "name the image column with --batch"
        )
    if intensity is None:
        js = [c.label for c in mtz.columns if c.type == "J"]
        if not js:
            raise UserInputError(f"{path}: no intensity (type J) column among {labels}; name it with --intensity")
        intensity = "I" if "I" in js else js[0]
    if sigma is None:
        # SIGI, SigI (careless/DIALS exports), sigI: names matched without case; else the only type-Q column
        cand = {f"SIG{intensity}".upper(), "SIGI"}
        sigma = next((c.label for c in mtz.columns if c.label.upper() in cand), None)
        qs = [c.label for c in mtz.columns if c.type == "Q"]
        if sigma is None and len(qs) == 1:
            sigma = qs[0]
        if sigma is None:
            raise UserInputError(f"{path}: no sigma column for {intensity!r} among {labels}; name it with --sigma")
    meta_names = [m for m in metadata if m]
    for col in (intensity, sigma, *[m for m in meta_names if m.upper() not in _DERIVED_METADATA]):
        if col not in labels:
            raise UserInputError(f"{path}: column {col!r} not found (columns: {labels}); fix --metadata/--intensity")
    if mtz.spacegroup is None:
        raise UserInputError(f"{path}: no space group in the MTZ header; set one (e.g. with gemmi or CCP4 reindex)")
    return intensity, sigma, meta_names


def read_unmerged(
    path: str | os.PathLike,
    *,
    anomalous: bool = False,
    metadata: tuple[str, ...] | list[str] = (),
    intensity: str | None = None,
    sigma: str | None = None,
    batch: str = "BATCH",
    partials: str = "refuse",
) -> Unmerged:
    """Read an unmerged MTZ with gemmi (through :func:`analysis.mtz_io.open_mtz`).

    Args:
      path: the MTZ file.
      anomalous: keep Friedel mates apart.
      metadata: per-observation column labels to carry (e.g. ``("XDET", "YDET")``); ``DHKL``/``RESOLUTION``
        (d, Å) and ``INV_D2`` (1/d², Å⁻²) are computed from the cell rather than read.
      intensity, sigma: column labels; default: the first J-type column (``I`` preferred) and its Q sigma.
      batch: image column label.
      partials: what to do with partial observations (:mod:`analysis.merging.partials`: M/ISYM's M flag,
        FRACTIONCALC, PARTIAL, or one hkl on consecutive images): "refuse" (error naming the column and the fix),
        "sum" (sum each spot's parts into one observation, counted in ``rejected["partials_summed"]``) or "keep".

    Raises:
      UserInputError: missing file/columns, merged input, partials (with ``partials="refuse"``), or nothing valid
        left — naming the fix.
    """
    if partials not in ("refuse", "sum", "keep"):
        raise ValueError(f"partials={partials!r}: choose 'refuse', 'sum' or 'keep'")
    mtz = open_mtz(path, expected="an unmerged MTZ (e.g. from XDS/DIALS/AIMLESS --unmerged)", noun="file")
    intensity, sigma, meta_names = _resolve_labels(mtz, path, intensity, sigma, batch, metadata)
    if "M/ISYM" in mtz.column_labels():
        mtz.switch_to_original_hkl()
    hkl, table = mtz_table(mtz)
    cell = np.array(mtz.cell.parameters, np.float64)
    inv_d2_obs = cell_mod.inv_d2(hkl.astype(np.float64), cell) if meta_names else None
    meta_cols = []
    for m in meta_names:
        if m.upper() == "INV_D2":
            meta_cols.append(inv_d2_obs)
        elif m.upper() in _DERIVED_METADATA:
            meta_cols.append(1.0 / np.sqrt(np.maximum(inv_d2_obs, 1e-12)))
        else:
            meta_cols.append(table[m])
    rows = (
        hkl,
        np.rint(table[batch]).astype(np.int64),
        table[intensity],
        table[sigma],
        np.stack(meta_cols, axis=1) if meta_cols else np.zeros((hkl.shape[0], 0)),
    )
    n_summed = 0
    evidence = None if partials == "keep" else partials_mod.detect_partials(table, hkl, rows[1])
    if evidence is not None and partials == "refuse":
        raise UserInputError(
            f"{path}: partial observations: {evidence.description} (column {evidence.column}). Merged as full "
            "observations they bias every intensity low. Fix: sum them (dmd merge --partials sum: each run of one "
            "hkl on consecutive images becomes one observation), or give unmerged data with partials summed "
            "(DIALS export, AIMLESS OUTPUT UNMERGED); --partials keep if they are full observations."
        )
    if evidence is not None:
        *rows, n_summed = partials_mod.sum_partials(*rows, evidence.partial)
        log.info("%s: summed %d partial rows (%s) into %d observations", path, evidence.n, evidence.column,
                 evidence.n - n_summed)  # fmt: skip
    u = group_observations(
        rows[0],
        rows[2],
        rows[3],
        rows[1],
        cell,
        mtz.spacegroup,
        anomalous=anomalous,
        metadata=rows[4] if meta_cols else None,
        metadata_names=meta_names,
        source=str(path),
        wavelength=float(mtz.datasets[-1].wavelength) if mtz.datasets else 0.0,
    )
    if n_summed:
        u.rejected["partials_summed"] = n_summed
    return u


def write_unmerged(path, hkl_obs, intensity, sigma, batch, cell, spacegroup, *, metadata=None, wavelength=1.0) -> Path:
    """Write an unmerged MTZ (H K L in the ASU + M/ISYM, BATCH, I, SIGI, metadata columns), atomically.

    Args:
      path: output file. hkl_obs: int ``[n_obs, 3]`` observed indices; intensity, sigma: ``[n_obs]`` I, σ(I);
      batch: int ``[n_obs]`` image numbers (≥ 1); cell: ``[6]`` Å/degrees; spacegroup: anything gemmi resolves;
      metadata: dict label → ``[n_obs]`` float columns (MTZ type R) or None; wavelength: Å.
    """
    hkl_obs = np.asarray(hkl_obs, np.int32).reshape(-1, 3)
    metadata = metadata or {}
    # H K L are stored in the ASU with M/ISYM = 256·M + ISYM (M = 0: fully recorded) saying how to get back
    hkl_asu, isym = symmetry.to_asu(hkl_obs, spacegroup)
    columns = {"M/ISYM": isym, "BATCH": batch, "I": intensity, "SIGI": sigma, **metadata}
    types = {"M/ISYM": "Y", "BATCH": "B", "I": "J", "SIGI": "Q", **dict.fromkeys(metadata, "R")}
    columns = {k: np.asarray(v, np.float32).reshape(-1) for k, v in columns.items()}
    mtz = build_mtz(
        hkl_asu, columns, cell, spacegroup, column_types=types, title=None, dataset="unmerged", wavelength=wavelength
    )
    for b in np.unique(np.asarray(batch, int)):
        bt = gemmi.Mtz.Batch()
        bt.number = int(b)
        bt.dataset_id = mtz.datasets[-1].id
        bt.wavelength = float(wavelength)
        mtz.batches.append(bt)
    mtz.sort(5)
    save_mtz(mtz, path)
    return Path(path)


def write_merged(
    path: str | os.PathLike,
    hkl,
    cell,
    spacegroup,
    columns: dict[str, tuple[str, np.ndarray]],
    *,
    inputs=(),
    title: str = "dmd merge",
    wavelength: float = 1.0,
) -> Path:
    """Write a merged MTZ atomically (through :func:`analysis.mtz_io.write_mtz`).

    Args:
      hkl: int ``[n, 3]`` reflections in the ASU (one row each).
      columns: label → (MTZ column type, ``[n]`` values); NaN marks a missing value (e.g. absent F(−)).
      inputs: paths that must not be overwritten.
    """
    hkl = np.asarray(hkl, np.int32).reshape(-1, 3)
    values = {label: np.asarray(v, np.float32).reshape(-1) for label, (_, v) in columns.items()}
    types = {label: ctype for label, (ctype, _) in columns.items()}
    kw = {"column_types": types, "title": title, "history": (), "dataset": "merged", "wavelength": wavelength}
    write_mtz(path, hkl, values, cell, spacegroup, inputs=inputs, **kw)
    return Path(path)


def read_merged(path: str | os.PathLike) -> tuple[np.ndarray, dict[str, np.ndarray], gemmi.Mtz]:
    """Read a merged MTZ: returns (hkl int32 ``[n, 3]``, {label: ``[n]`` float64, H K L included}, the gemmi Mtz).

    Raises:
      UserInputError: the file is missing or not an MTZ.
    """
    mtz = open_mtz(path, expected="a merged MTZ (e.g. from dmd merge)")
    hkl, cols = mtz_table(mtz)
    return hkl, cols, mtz
