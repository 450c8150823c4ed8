"""Diffuse targets of a molecular crystal in ``dmd fit`` (issue 18 item 4c): a reduced triclinic (monoclinic) box,
scattering factors from the topology's elements, a parameter's ``start:``, and the short ε recovery.

System: examples/fit_diffraction/5e5z_cell.pdb, one P 1 21 1 cell of PDB 5E5Z (188 atoms, a 9.643, b 9.609,
c 19.029 Å, β 101.22°) with Amber14 + PME, as examples/fit_diffraction/peptide_diffuse.yaml builds it.
"""

import dataclasses
from pathlib import Path

import gemmi
import jax.numpy as jnp
import numpy as np
import pytest

from analysis.diffuse import diffuse_hkl
from analysis.mtz_io import write_mtz
from dmd.base.errors import UserInputError
from dmd.params import select
from fitting.fit_config import load_fit_config
from fitting.fit_targets import box_cell, diffuse_target, topology_elements
from fitting.forcefield_sampling import make_sampler, replica_seed, sample
from fitting.observables import frame_values

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fit_diffraction"
TRUTH, START = 0.29599, 0.35519  # Amber14 σ of protein-O (nm) and the example's start, 20% above


def _config(tmp_path, d_min=3.0, cell=None, **replace):
    """The example config with a synthetic MTZ (ones) on the box lattice to ``d_min`` Å (cell: the box's)."""
    text = (EXAMPLE / "peptide_diffuse.yaml").read_text().replace("d_min: 2.0", f"d_min: {d_min}")
    text = text.replace("pdb: 5e5z_cell.pdb", f"pdb: {EXAMPLE / '5e5z_cell.pdb'}")
    for old, new in replace.items():
        text = text.replace(old, new)
    (tmp_path / "cfg.yaml").write_text(text)
    cell = np.array([9.643, 9.609, 19.029, 90.0, 101.22, 90.0]) if cell is None else cell
    hkl, _ = diffuse_hkl(cell, d_min)
    write_mtz(tmp_path / "peptide_diffuse.mtz", hkl, {"IDIFF": np.ones(len(hkl))}, cell, "P 1")
    return tmp_path / "cfg.yaml", hkl


def _gemmi_f(hkl, elements, xyz_a, cell):
    """gemmi's F(h) (B = 0, complex ``[M]``) of one frame ``xyz_a [n, 3]`` Å in ``cell``."""
    calc = gemmi.StructureFactorCalculatorX(gemmi.UnitCell(*cell))
    model, chain = gemmi.Model("1"), gemmi.Chain("A")
    for el, p in zip(elements, xyz_a, strict=True):
        res, atom = gemmi.Residue(), gemmi.Atom()
        res.name = "UNL"
        atom.name, atom.element, atom.pos, atom.occ, atom.b_iso = el, gemmi.Element(el), gemmi.Position(*p), 1, 0
        res.add_atom(atom)
        chain.add_residue(res)
    model.add_chain(chain)
    return np.array([calc.calculate_sf_from_model(model, [int(v) for v in h]) for h in hkl])


def test_monoclinic_diffuse_target_has_f_of_the_topology_elements(tmp_path):
    # The target loads on the reduced monoclinic box and its per-frame F(h) (FFT route, elements C, N, O, H from
    # the OpenMM topology) is gemmi's structure factor of the same frame in the same cell.
    cfg, hkl = _config(tmp_path)
    system, params, targets, _, _ = load_fit_config(cfg)
    (t,) = targets
    assert np.ndim(system.box) == 2 and t.data.shape == (len(hkl),)
    cell = box_cell(system.box)
    np.testing.assert_allclose(cell, [9.643, 9.609, 19.029, 90.0, 101.22, 90.0], atol=2e-3)
    elements, atoms = topology_elements(system)
    st = gemmi.read_structure(str(EXAMPLE / "5e5z_cell.pdb"))  # the PDB's element column, read by gemmi
    assert atoms is None and elements == [a.element.name for ch in st[0] for r in ch for a in r]
    pos = np.asarray(system.positions, float)
    o = np.asarray(t.observable.per_frame(system.params, jnp.asarray(pos, jnp.float32)))
    m = len(hkl)
    f_dmd = o[m : 2 * m] + 1j * o[2 * m :]
    f_ref = _gemmi_f(hkl, elements, 10.0 * pos, cell)
    # float32 FFT route (plan tolerance 1e-6) against gemmi's float64 sum: 1e-3 of the largest |F| (an Ar form
    # factor for every atom, the old behaviour, is off by ~50% of |F|: 18 electrons against 1-8)
    np.testing.assert_allclose(f_dmd, f_ref, atol=1e-3 * np.abs(f_ref).max())
    np.testing.assert_allclose(o[:m], np.abs(f_ref) ** 2, atol=2e-3 * np.abs(f_ref).max() ** 2)


def test_element_key_refused_for_a_system_with_a_topology(tmp_path):
    cfg, _ = _config(tmp_path, **{"objective: absolute}": "objective: absolute, element: C}"})
    with pytest.raises(UserInputError, match="elements come from its topology"):
        load_fit_config(cfg)


def test_non_reduced_triclinic_box_refused_with_the_fix(tmp_path):
    cfg, _ = _config(tmp_path)
    system = load_fit_config(cfg)[0]
    box = np.asarray(system.box, float).copy()
    box[2] += box[0]  # the same lattice, c_x = 0.59 nm > a_x/2: not OpenMM's reduced form
    spec = {"observable": "diffuse", "file": "peptide_diffuse.mtz", "column": "IDIFF", "d_min": 3.0}
    with pytest.raises(UserInputError, match="reduced triclinic box.*dmd.space.reduce_box"):
        diffuse_target(spec, dataclasses.replace(system, box=box), tmp_path, cfg)


def test_mtz_of_another_cell_refused(tmp_path):
    cfg, _ = _config(tmp_path, cell=np.array([9.643, 9.609, 19.029, 90.0, 95.0, 90.0]))
    with pytest.raises(UserInputError, match="should be"):
        load_fit_config(cfg)


def test_parameter_start_sets_theta(tmp_path):
    cfg, _ = _config(tmp_path)
    system, params, _, _, _ = load_fit_config(cfg)
    labels = list(system.param_labels["NonbondedForce"]["sigma"])
    sig = np.asarray(system.params["NonbondedForce"]["sigma"], float)
    assert params[0].truth == TRUTH
    np.testing.assert_allclose(sig[labels.index("protein-O")], START, rtol=1e-6)
    np.testing.assert_allclose(sig[labels.index("protein-N")], 0.325, rtol=1e-5)  # the others keep Amber's
    bad, _ = _config(tmp_path / "..", **{"start: 0.35519": "start: high"})
    with pytest.raises(UserInputError, match="start: 'high' is not a number"):
        load_fit_config(bad)


def _round_losses(seed, sigmas, runs=2, steps=3000, equilibration=2000):
    """The example's ``absolute`` loss of the mean of ``runs`` fresh runs' own I_D (each the target's window:
    ``equilibration`` + ``steps`` from the PDB, as ``restart: crystal`` samples; seeds those of a replicated fit's
    round 0) against the shipped target, at each σ of protein-O."""
    system, _, (target,), cfg, _ = load_fit_config(EXAMPLE / "peptide_diffuse.yaml")
    cfg = dataclasses.replace(cfg, steps=steps, equilibration=equilibration)
    sel = select(system.param_labels, ["NonbondedForce/sigma/protein-O"])
    sampler, per = make_sampler(system, cfg), frame_values(target.observable.per_frame)  # one compilation each
    data = np.asarray(target.data, float)
    out = []
    for sigma in sigmas:
        params = sel.set(system.params, jnp.full((1,), sigma, jnp.float32))
        pred = 0.0
        for r in range(runs):
            frames, _ = sample(system, params, cfg, seed=replica_seed(seed, 0, r), sampler=sampler)
            pred = pred + np.asarray(target.observable.predict(np.asarray(per(params, jnp.asarray(frames))).mean(0)))
        pred = pred / runs
        out.append(float(np.mean((pred - data) ** 2) / np.mean(data**2)))
    return out


@pytest.mark.slow
def test_diffuse_loss_of_one_round_tells_the_start_sigma_from_the_truth():
    # The diffuse target identifies σ of protein-O at the size of one fit round: the mean of 2 fresh runs' own I_D
    # (3000 steps after 2000 from the PDB, the target's window) at the start σ (+20%) is further from the shipped
    # target than at the truth. This replaces a test that one fit round stepped σ down, which held or failed with
    # the round-off: one round's gradient is mostly noise (docs/fitting.md): at the start σ, 5 fresh one-replica
    # rounds gave 2Jᵀr (ln σ) −0.34, +1.07, −0.25, +0.27, −0.11, and 5 fresh 4-replica rounds +2.87, −1.96, +1.97,
    # +1.16, +0.60; the descent itself is benchmarks/bench_fit_molecular.py (8 seeds). The loss is robust: over seeds
    # 0, 1, 2 loss(start)/loss(truth) = 5.33, 3.44, 8.53 (0.085/0.016, 0.108/0.031, 0.121/0.014; load 6-7), while the
    # truth's own loss varies 2.2× between seeds (0.014-0.031), which bounds what a σ the observable did not see
    # (a broken parameter path: both losses alike) could give; 2.5 lies between. One run per σ was not robust:
    # ratios 1.97, 3.76, 1.54, 9.49, 2.72, 4.56, 2.13 over seeds 0-6 with truth losses 0.019-0.060.
    # 52.5 s at load 3.8 (two 2-run samples of 5000 steps and one compilation of the sampler and of F(h)).
    # 3 runs, not 2 (2026-12-05): a last-bit change of float32 SETTLE (per-component unit vectors, docs/engine.md "NVE
    # drift in float32") moved seed 0's 2-run sample to 0.052/0.022 = 2.35; with 3 runs 0.049/0.0093 = 5.24 (40 s).
    loss_start, loss_truth = _round_losses(0, [START, TRUTH], runs=3)
    assert loss_start > 2.5 * loss_truth, (loss_start, loss_truth)


def test_sampled_energy_of_a_pme_system_on_frames(tmp_path):
    # The fit's per-frame Ũ (fluctuation and reweighting routes) of a neighbour-list system (PME): equal to the
    # engine's energy with a list built for that very frame, also for a frame moved past the skin (the start's list
    # is rebuilt inside the compiled map). Before, it called the energy without a list and PME refused.
    from fitting.forcefield_sampling import sampled_energy_fn

    cfg, _ = _config(tmp_path)
    system = load_fit_config(cfg)[0]
    pos = jnp.asarray(system.positions, jnp.float32)
    frames = jnp.stack([pos, pos + 0.04 * jnp.asarray(np.random.default_rng(0).normal(size=pos.shape), jnp.float32)])
    with pytest.warns(UserWarning, match="plain nonbonded cutoff"):
        u_tilde = sampled_energy_fn(system)
    got = np.asarray(frame_values(u_tilde, box=system.box)(system.params, frames))
    for x, u in zip(frames, got, strict=True):
        ref = float(system.energy_fn(system.params, x, box=system.box, neighbor=system.allocate_neighbors(x)))
        # float32 sums of ~1e4 kJ/mol terms in another order: 1e-5 relative
        np.testing.assert_allclose(u, ref, rtol=1e-5, atol=1e-2)
