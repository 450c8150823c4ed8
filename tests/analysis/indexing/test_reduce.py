"""Cell reduction and lattice equivalence, checked against gemmi's Niggli reduction."""

import pathlib

import gemmi
import jax
import jax.numpy as jnp
import numpy as np

from analysis import cell as cell_mod
from analysis.indexing import read_peak_file, refine_candidate
from analysis.indexing.reduce import metric_tolerance, niggli_cell, same_lattice, supercell_index
from analysis.indexing.search import reduce_x as _reduce_x

DATA = pathlib.Path(__file__).resolve().parents[2] / "data" / "indexing"

reduce_x = jax.jit(_reduce_x, static_argnames="system")  # one compile per system, not op-by-op


def _gemmi_niggli(cell):
    gv = gemmi.GruberVector(gemmi.UnitCell(*cell), "P", False)
    gv.niggli_reduce()
    return np.array(gv.cell_parameters())


def test_selling_reduction_matches_gemmi_niggli_lattice():
    rng = np.random.default_rng(3)
    for _ in range(5):
        cell = np.r_[rng.uniform(4, 12, 3), rng.uniform(70, 110, 3)]
        # a badly chosen basis of the same lattice: b' = b + 2a, c' = c - 3b + a
        m = np.array([[1, 0, 0], [2, 1, 0], [1, -3, 1]], float)
        g_bad = m @ cell_mod.metric(cell) @ m.T
        cell_bad = cell_mod.cell_from_metric(g_bad)
        x_bad = cell_mod.reciprocal_params(cell_bad, "triclinic")
        x_red = np.asarray(reduce_x(jnp.asarray(x_bad), "triclinic"))
        cell_red = cell_mod.cell_from_reciprocal_params(x_red, "triclinic")
        # the reduced reciprocal basis spans the same lattice (tolerance: float64 round-off ~1e-12)
        assert same_lattice(cell_red, "P", cell, "P", rel_tol=1e-8)
        np.testing.assert_allclose(cell_mod.volume(cell_red), cell_mod.volume(cell), rtol=1e-10)
        # and gemmi's Niggli cell of our reduced cell is gemmi's Niggli cell of the input
        np.testing.assert_allclose(_gemmi_niggli(cell_red), _gemmi_niggli(cell), rtol=1e-7, atol=1e-6)
        # reduced reciprocal vectors are short: the three lengths² are the smallest of the input's
        assert x_red[:3].max() <= x_bad[:3].max() + 1e-12


def test_monoclinic_lagrange_reduction_keeps_lattice():
    cell = np.array([6.0, 7.0, 9.0, 90.0, 104.0, 90.0])
    # c' = c + 2a: same lattice, oblique setting
    g = cell_mod.metric(cell)
    m = np.array([[1, 0, 0], [0, 1, 0], [2, 0, 1]], float)
    cell_bad = cell_mod.cell_from_metric(m @ g @ m.T)
    x = cell_mod.reciprocal_params(cell_bad, "monoclinic")
    x_red = np.asarray(reduce_x(jnp.asarray(x), "monoclinic"))
    assert x_red[0] <= x_red[2] and x_red[3] >= 0  # canonical: A ≤ C, E ≥ 0
    cell_red = cell_mod.cell_from_reciprocal_params(x_red, "monoclinic")
    assert same_lattice(cell_red, "P", cell, "P", rel_tol=1e-8)


def test_niggli_cell_of_centred_lattices():
    # cF a: primitive rhombohedral cell a/√2, 60° (ITA); cI a: a√3/2, 109.47°
    np.testing.assert_allclose(
        niggli_cell([10, 10, 10, 90, 90, 90], "F"), [7.0710678, 7.0710678, 7.0710678, 60, 60, 60], rtol=1e-6
    )
    np.testing.assert_allclose(np.sort(niggli_cell([10, 10, 10, 90, 90, 90], "I")[:3]), [8.6602540] * 3, rtol=1e-6)


def test_same_lattice_settings_and_centrings():
    assert same_lattice([10, 10, 10, 90, 90, 90], "F", [7.0710678, 7.0710678, 7.0710678, 60, 60, 60], "P")
    assert not same_lattice([10, 10, 10, 90, 90, 90], "I", [7.0710678, 7.0710678, 7.0710678, 60, 60, 60], "P")
    assert same_lattice([5, 6, 7, 90, 90, 90], "P", [7, 5, 6, 90, 90, 90], "P")  # axis permutation
    assert not same_lattice([5, 6, 7, 90, 90, 90], "P", [5, 6, 7.1, 90, 90, 90], "P")  # 1.4 % off in c


def test_supercell_index():
    assert supercell_index([5, 6, 7, 90, 100, 90], "P", [10, 6, 7, 90, 100, 90], "P") == 2
    assert supercell_index([5, 6, 7, 90, 90, 90], "P", [5, 18, 7, 90, 90, 90], "P") == 3
    assert supercell_index([5, 6, 7, 90, 90, 90], "P", [5, 6, 7, 90, 90, 90], "C") == 0  # C-centred: smaller lattice
    assert supercell_index([5, 6, 7, 90, 90, 90], "P", [5, 6, 7.5, 90, 90, 90], "P") == 0


def test_supercell_index_finds_every_index2_sublattice():
    """All 7 index-2 superlattices are recognized, including those along face and body diagonals."""
    small = np.array([5.0, 6.0, 7.0, 80.0, 100.0, 95.0])
    g = cell_mod.metric(small)
    # the 7 index-2 sublattices of Z³ as basis matrices (columns: new axes in old coordinates)
    bases = [
        [[2, 0, 0], [0, 1, 0], [0, 0, 1]],
        [[1, 0, 0], [0, 2, 0], [0, 0, 1]],
        [[1, 0, 0], [0, 1, 0], [0, 0, 2]],
        [[1, 1, 0], [1, -1, 0], [0, 0, 1]],  # a ± b
        [[1, 1, 0], [0, 0, 1], [1, -1, 0]],  # a ± c
        [[1, 0, 0], [0, 1, 1], [0, 1, -1]],  # b ± c
        [[1, 1, 0], [0, 1, 1], [1, 0, 1]],  # a+b, b+c, a+c (det 2)
    ]
    for m in bases:
        m = np.array(m, float)
        assert abs(abs(np.linalg.det(m)) - 2) < 1e-9
        big = cell_mod.cell_from_metric(m.T @ g @ m)
        # exact metrics: the index is found for each of the 7 (a row-style HNF finds only the 3 axial ones)
        assert supercell_index(small, "P", big, "P") == 2, m.tolist()


def test_singular_reciprocal_metric_gives_nan_cell_not_an_exception():
    """A degenerate candidate (a* ∥ b*: G* of rank 2) is dropped by refinement instead of crashing the run."""
    from analysis.indexing.solution import cell_of

    x = np.array([0.01, 0.01, 0.04, 0.02, 0.0, 0.0])  # A = B, D = 2√(AB): rank-2 reciprocal metric
    assert np.all(np.isnan(cell_of(x, "triclinic")))
    assert np.all(np.isfinite(cell_of(np.array([0.01, 0.02, 0.04, 0.001, 0.0, 0.0]), "triclinic")))


def test_float64_reductions_keep_the_lattice_and_are_reduced():
    """numpy (float64, to convergence) path of reduce_x: same lattice, Selling products all ≤ 0, Lagrange form."""
    from analysis.indexing import reduce

    cell = np.array([5.1, 7.3, 9.8, 83.0, 97.0, 104.0])
    m = np.array([[1, 0, 0], [2, 1, 0], [1, -3, 1]], float)
    x_bad = cell_mod.reciprocal_params(cell_mod.cell_from_metric(m @ cell_mod.metric(cell) @ m.T), "triclinic")
    x_red = reduce.reduce_x(np.asarray(x_bad), "triclinic")
    assert isinstance(x_red, np.ndarray) and x_red.dtype == np.float64
    assert same_lattice(cell_mod.cell_from_reciprocal_params(x_red, "triclinic"), "P", cell, "P", rel_tol=1e-10)
    # Delaunay reduced: every superbase product b_i·b_j ≤ 0 (b4 = −b1−b2−b3); round-off margin 1e-12 tr
    g = cell_mod.reciprocal_metric_from_params(x_red, "triclinic")
    e = np.array([[1.0, 0, 0, -1], [0, 1, 0, -1], [0, 0, 1, -1]])
    g4 = e.T @ g @ e
    assert np.all(g4[np.triu_indices(4, 1)] <= 1e-12 * np.trace(g4))
    a, c, e_ = reduce.lagrange_reduce(0.01, 0.05, 0.03)  # c' = c - a: 0.01·(h² ...) reduced form
    assert a <= c and e_ >= 0 and abs(e_) <= a  # Lagrange-reduced: |E| ≤ A ≤ C
    assert np.isclose(4 * a * c - e_**2, 4 * 0.01 * 0.05 - 0.03**2)  # the determinant is invariant


def test_metric_tolerance_is_n_esds_of_the_metric_by_monte_carlo():
    """reduce.metric_tolerance against sampled cells: n_esd × the largest standard deviation of the metric entries of
    cells drawn with the given (independent, Gaussian) esds, over ⟨a²⟩."""
    cell = np.array([9.83, 17.67, 17.70, 99.98, 103.74, 94.55])
    esd = np.array([0.048, 0.093, 0.086, 0.22, 0.18, 0.30])
    rng = np.random.default_rng(0)
    draws = cell + esd * rng.standard_normal((20000, 6))
    g = np.stack([np.asarray(cell_mod.metric(c), float) for c in draws])
    sd = g.reshape(-1, 9).std(axis=0).max()
    # linear propagation against 20 000 draws: the sampled sd carries ~0.5 % noise, the curvature of cos ~0.1 %
    np.testing.assert_allclose(metric_tolerance(cell, esd, 4.0), 4.0 * sd / np.mean(cell[:3] ** 2), rtol=0.02)


def test_noisy_list_tolerance_scales_with_the_truth_esds():
    """Issue 21 (idx21l), the success test of bench_indexing.py on a noisy aP list (blind list 12 of seed 2024): the
    blind search found 4.007 × 7.275 × 12.034 Å, 84.80° 86.36° 81.08° (M20 14.3), the true lattice refined to another
    minimum (one line assigned differently). The fixed 2e-2 of ⟨a²⟩ failed it (c² off by 1.4 Å², ⟨a²⟩ 71 Å²);
    4 esds of the truth's metric, refined on the list as a triclinic cell under the search's error model, accept it,
    and still reject a wrong cell of the same volume (the 2e-2 test accepted none of them either)."""
    pk = read_peak_file(DATA / "ap_noisy_12_generated.txt")
    q = pk.inv_d2
    truth = [4.0134, 7.2712, 11.9737, 84.1691, 86.5238, 81.0393]
    found = [4.007, 7.2745, 12.034, 84.7998, 86.3596, 81.0808]
    g = cell_mod.inv_d2_slope_two_theta(pk.two_theta, pk.wavelength)
    ref = refine_candidate(
        cell_mod.reciprocal_params(niggli_cell(truth, "P"), "triclinic"), 0.0, q, "triclinic",
        g_zero=g, refine_zero=True, zero_sigma=0.05,
    )  # fmt: skip
    tol = max(2e-2, metric_tolerance(ref.cell, ref.cell_esd, 4.0))
    assert not same_lattice(truth, "P", found, "P", 2e-2)  # the old test
    assert 2.2e-2 < tol < 4e-2, tol  # c esd ≈ 0.02 Å: σ(c²) ≈ 0.47 Å², 4 σ / 71 Å²
    assert same_lattice(truth, "P", found, "P", tol)
    wrong = [4.007, 7.2745, 12.034, 88.0, 86.3596, 81.0808]  # α 3.2° off: ~35 esds
    assert not same_lattice(truth, "P", wrong, "P", tol)
