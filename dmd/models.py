"""Small model systems for tests and benchmarks, each returned as a :class:`dmd.System`.

Units are OpenMM's (nm, kJ/mol, amu, ps, K). The defaults of :func:`lj_fluid` are argon
(σ = 0.34 nm, ε = 0.996 kJ/mol = 119.8 K·k_B, m = 39.948 amu), so reduced units map as
length σ, energy ε, time τ = σ sqrt(m/ε) ≈ 2.15 ps, temperature ε/k_B ≈ 119.8 K.

Lennard-Jones with an *absolute* cutoff r_c (nm, as OpenMM's NonbondedForce)::

    E = Σ_{i<j, r_ij < r_c} 4 ε_ij [(σ_ij/r_ij)^12 − (σ_ij/r_ij)^6] · S(r_ij)
    σ_ij = (σ_i + σ_j)/2,  ε_ij = sqrt(ε_i ε_j)            (Lorentz-Berthelot)
    S(r) = 1 − 6x⁵ + 15x⁴ − 10x³,  x = (r − r_s)/(r_c − r_s) for r_s < r < r_c, else 1

(S is OpenMM's switching function, used when ``switch_distance`` is given; without it the
potential is plainly truncated, as OpenMM's default.) The cutoff does **not** move with σ:
d/dσ is the derivative at fixed r_c, which is what OpenMM would compute too.
"""

from __future__ import annotations

import functools
import importlib.util
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero

from dmd.base.errors import UserInputError
from dmd.base.units import KB_KJ_PER_MOL_K
from dmd.forces.nonbonded import lj_pair_energy, pair_energy_full, safe_sqrt, switch_factor
from dmd.system import System

__all__ = ["lj_fluid", "harmonic_chain", "harmonic_oscillator", "ARGON"]

# Argon LJ parameters (nm, kJ/mol, amu): Rahman 1964 values, ε/k_B = 119.8 K.
ARGON = {"sigma": 0.34, "epsilon": 119.8 * KB_KJ_PER_MOL_K, "mass": 39.948}


def _type_names(n_types: int) -> tuple[str, ...]:
    return tuple(chr(ord("A") + i) if n_types <= 26 else f"T{i}" for i in range(n_types))


def _lattice_positions(n_atoms: int, box_length: float, rng: np.random.Generator, jitter: float) -> np.ndarray:
    """n_atoms spread over the sites of a cubic lattice filling the box, plus a small jitter.

    Simple cubic, BCC and FCC are tried with the atoms spread evenly over the sites (taking the
    first n would pack them into part of the box); the one with the largest nearest-neighbour
    distance wins, so the start does not heat the fluid much when it melts.
    """
    from scipy.spatial import cKDTree

    bases = {
        "sc": np.zeros((1, 3)),
        "bcc": np.array([[0, 0, 0], [0.5, 0.5, 0.5]]),
        "fcc": np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]),
    }
    best, best_d = None, -1.0
    for basis in bases.values():
        m = math.ceil((n_atoms / len(basis)) ** (1.0 / 3.0) - 1e-9)
        cells = np.stack(np.meshgrid(*(np.arange(m),) * 3, indexing="ij"), -1).reshape(-1, 1, 3)
        sites = (cells + basis[None]).reshape(-1, 3)
        sites = sites[np.round(np.linspace(0, len(sites) - 1, n_atoms)).astype(int)]
        pos = np.mod((sites + 0.25) * (box_length / m), box_length)
        d = cKDTree(pos, boxsize=box_length).query(pos, k=2)[0][:, 1].min()
        if d > best_d + 1e-9:
            best, best_d = pos, d
    return np.mod(best + rng.normal(scale=jitter * best_d, size=(n_atoms, 3)), box_length)


def _lj_pair_energy(r2, sig, eps, mask, r_cut, r_switch):
    """Masked LJ pair energies (:func:`dmd.forces.nonbonded.lj_pair_energy` times OpenMM's switch
    :func:`dmd.forces.nonbonded.switch_factor`); the double-where keeps gradients finite for masked pairs."""
    r2_safe = jnp.where(mask, r2, 1.0)
    e = lj_pair_energy(sig * sig / r2_safe, eps)
    if r_switch is not None:
        e = e * switch_factor(jnp.sqrt(r2_safe), r_cut, r_switch)
    return jnp.where(mask, e, 0.0)


def _numba_lj_serves(pair_kernel, dtype, r_switch) -> bool:
    """True when :func:`lj_fluid`'s energy runs on the numba LJ kernel (float32, no switch, a CPU backend)."""
    from dmd.forces.numba_pairs import KERNELS

    if pair_kernel not in KERNELS:
        raise UserInputError(f"lj_fluid: pair_kernel={pair_kernel!r}; use one of {', '.join(KERNELS)}")
    if pair_kernel == "xla" or r_switch is not None or jnp.dtype(dtype) != jnp.float32:
        return False
    has_numba = importlib.util.find_spec("numba") is not None
    return pair_kernel == "numba" or (jax.default_backend() == "cpu" and has_numba)


def lj_fluid(
    n_atoms: int = 500,
    density: float = 0.8,
    temperature: float = 1.0 * ARGON["epsilon"] / KB_KJ_PER_MOL_K,
    *,
    cutoff: float | None = None,
    sigma: float = ARGON["sigma"],
    epsilon: float = ARGON["epsilon"],
    mass: float = ARGON["mass"],
    n_types: int = 1,
    switch_distance: float | None = None,
    skin: float | None = None,
    capacity_multiplier: float = 1.25,
    dtype=jnp.float32,
    seed: int = 0,
    neighbor_impl: str = "dmd",
    half_list: bool | None = None,
    pair_kernel: str = "auto",
    rebuild_kernel: str | None = None,
) -> System:
    """A periodic Lennard-Jones fluid in a cubic box.

    Args:
      n_atoms: number of atoms N.
      density: reduced number density ρσ³ (box edge L = (N/ρ)^(1/3) σ).
      temperature: K; stored in ``metadata["temperature_K"]`` as the state point the
        caller should simulate at (default ε/k_B, i.e. T* = 1, ≈ 119.8 K).
      cutoff: absolute LJ cutoff r_c in **nm** (default 2.5 σ). Fixed: θ changes never move it.
      sigma: σ in nm (every type starts at this value).
      epsilon: ε in kJ/mol.
      mass: amu per atom.
      n_types: atom types, assigned round-robin and named "A", "B", ...; θ has one σ and one ε per type.
      switch_distance: nm; when given, OpenMM's switching function from here to r_c (smooth energy,
        for NVE). None: plain truncation (OpenMM's default).
      skin: neighbour-list skin in nm (default 0.3 σ); the list is rebuilt only when some atom has
        moved so far that a pair may have entered cutoff + skin (two largest displacements > skin).
      capacity_multiplier: neighbour-list slack over the occupancy found at allocation.
      dtype: float dtype of positions, masses and θ (float32 production, float64 validation).
      seed: numpy seed of the lattice jitter.
      neighbor_impl: "dmd" (:mod:`dmd.neighbors`, cell-sorted, fast) or "jax_md"
        (``jax_md.partition.neighbor_list``, dense format).
      half_list: with ``neighbor_impl="dmd"``, list each pair once (:func:`dmd.neighbors.half_pair_filter`) and
        evaluate it once (:func:`dmd.forces.nonbonded.pair_energy_full` with ``half=True``, each pair's partner share
        scattered in its row-block loop): −17 to −25% CPU per step at N = 8,000, but that loop runs on one thread,
        so with a second core free the default full list (row sums XLA spreads over both cores) is faster
        (0.93-1.04× against 0.72-0.75× OpenMM on a quiet machine); at N = 1,000 ~20% more CPU per step. Same
        energies and forces to float32 round-off (docs/engine.md, "LJ fluid: fused pair values and half list").
        None (default): the half list where the numba pair kernel serves (``pair_kernel``), else the full list.
      pair_kernel: "auto", "numba" or "xla" (:func:`dmd.forces.numba_pairs.pair_forces`): with a half list, the
        energy and forces (position derivatives) from the multi-threaded numba LJ kernel where it serves (float32,
        no switch, CPU); θ and box derivatives and tangents stay on XLA.
      rebuild_kernel: "auto", "numba" or "xla" (:func:`dmd.forces.neighbors.resolve_rebuild_kernel`, default the
        environment's ``DMD_REBUILD_KERNEL`` or auto): the list rebuild, the same list either way.

    Returns:
      System with θ = ``{"lj": {"sigma": [n_types] nm, "epsilon": [n_types] kJ/mol}}`` labelled by
      type name, ``box`` ``[3]`` nm, a neighbour list, and ``metadata`` (cutoff_nm, skin_nm,
      temperature_K, tau_ps, types, ...).

    Over 100 lines: the energy closures (neighbour-list and dense all-pairs forms, the dense one with its custom
    derivatives) share the pair parameters, switch and box of one System; the rest is the documented arguments.
    """
    if n_atoms < 2:
        raise UserInputError(f"lj_fluid: n_atoms={n_atoms}; pass n_atoms >= 2")
    if not density > 0:
        raise UserInputError(f"lj_fluid: density={density}; pass a positive reduced density such as 0.8")
    box_length = (n_atoms / density) ** (1.0 / 3.0) * sigma
    r_cut = 2.5 * sigma if cutoff is None else float(cutoff)
    skin = 0.3 * sigma if skin is None else float(skin)
    if r_cut + skin > box_length / 2:
        raise UserInputError(
            f"lj_fluid: cutoff + skin = {r_cut + skin:.3f} nm exceeds half the box ({box_length / 2:.3f} nm); "
            "use more atoms or a smaller --cutoff"
        )
    if switch_distance is not None and not 0 < switch_distance < r_cut:
        raise UserInputError(f"lj_fluid: switch_distance={switch_distance} must lie in (0, cutoff={r_cut})")
    rng = np.random.default_rng(seed)
    positions = _lattice_positions(n_atoms, box_length, rng, jitter=0.02)
    types = np.arange(n_atoms) % n_types
    names = _type_names(n_types)
    box = jnp.full((3,), box_length, dtype)
    r_switch = None if switch_distance is None else float(switch_distance)
    types_j = jnp.asarray(types, jnp.int32)

    def _pair_params(params, i_types, j_types):
        sig_t = params["lj"]["sigma"]
        eps_t = params["lj"]["epsilon"]
        if n_types == 1:  # one type: scalars, not two [N, C] gathers per evaluation
            return sig_t[0], eps_t[0]
        sig = 0.5 * (sig_t[i_types] + sig_t[j_types])
        eps = jnp.sqrt(eps_t[i_types] * eps_t[j_types])
        return sig, eps

    def _dense_energy(params, pos, box, idx):
        """E from a dense neighbour list (padding = N, each pair listed from both atoms)."""
        n = pos.shape[0]
        valid = idx < n
        jdx = jnp.where(valid, idx, 0)
        dr = pos[:, None, :] - pos[jdx]
        dr = dr - box * jnp.round(dr / box)
        r2 = jnp.sum(dr * dr, -1)
        sig, eps = _pair_params(params, types_j[:, None], types_j[jdx])
        mask = valid & (r2 < r_cut * r_cut)
        return 0.5 * jnp.sum(_lj_pair_energy(r2, sig, eps, mask, r_cut, r_switch))

    def _dense_energy_grad(params, pos, box, idx):
        """(E, ∇_x E) computed row by row: ∇_i E = Σ_j 2 (de/dr²)(r_ij²) dr_ij over row i.

        Exact for a symmetric list (every pair listed from both atoms, as both neighbour lists
        here build it). Autodiff of the gather ``pos[jdx]`` would instead scatter-add N·C
        contributions, which on XLA CPU costs ~5× the energy itself.
        """
        n = pos.shape[0]
        valid = idx < n
        jdx = jnp.where(valid, idx, 0)
        dr = pos[:, None, :] - pos[jdx]
        dr = dr - box * jnp.round(dr / box)
        r2 = jnp.sum(dr * dr, -1)
        sig, eps = _pair_params(params, types_j[:, None], types_j[jdx])
        mask = valid & (r2 < r_cut * r_cut)
        # e and de/dr² in one forward-mode pass (elementwise, so a unit tangent gives the derivative)
        e, de = jax.jvp(lambda q: _lj_pair_energy(q, sig, eps, mask, r_cut, r_switch), (r2,), (jnp.ones_like(r2),))
        return 0.5 * jnp.sum(e), jnp.sum((2 * de)[..., None] * dr, axis=1)

    @jax.custom_jvp
    def _dense_energy_cjvp(params, pos, box, idx):
        return _dense_energy(params, pos, box, idx)

    @functools.partial(_dense_energy_cjvp.defjvp, symbolic_zeros=True)
    def _dense_energy_jvp(primals, tangents):
        # dE = ∇_x E · dx (row-wise gradient, no scatter) + forward-mode dE/dθ·dθ + dE/dbox·dbox.
        # Reverse mode transposes only the first term, so forces cost a gather; jvp-of-grad and
        # jacfwd differentiate _dense_energy_grad / _dense_energy as ordinary code: exact.
        params, pos, box, idx = primals
        dparams, dpos, dbox, _ = tangents
        e, g = _dense_energy_grad(params, pos, box, idx)
        t = jnp.zeros_like(e)
        if not isinstance(dpos, SymbolicZero):
            t = t + jnp.sum(g * dpos)
        others = jax.tree_util.tree_leaves((dparams, dbox), is_leaf=lambda z: isinstance(z, SymbolicZero))
        if not all(isinstance(z, SymbolicZero) for z in others):

            def inst(z, ref):
                return jnp.zeros(jnp.shape(ref), jnp.result_type(ref)) if isinstance(z, SymbolicZero) else z

            dparams = jax.tree_util.tree_map(inst, dparams, params, is_leaf=lambda z: isinstance(z, SymbolicZero))
            dbox = inst(dbox, box)
            _, t2 = jax.jvp(lambda p, b: _dense_energy(p, pos, b, idx), (params, box), (dparams, dbox))
            t = t + t2
        return e, t

    if half_list is None:
        half_list = neighbor_impl == "dmd" and _numba_lj_serves(pair_kernel, dtype, r_switch)
    half_pairs = pair_energy_full("LJ", r_cut, switch=r_switch, half=True, pair_kernel=pair_kernel)

    def energy_fn(params, pos, *, box=box, neighbor=None):
        box = jnp.asarray(box, pos.dtype)
        n = pos.shape[0]
        if neighbor is None:  # all pairs i<j: O(N²), for small systems and checks
            i, j = np.triu_indices(n, 1)
            dr = pos[i] - pos[j]
            dr = dr - box * jnp.round(dr / box)
            r2 = jnp.sum(dr * dr, -1)
            sig, eps = _pair_params(params, types_j[i], types_j[j])
            return jnp.sum(_lj_pair_energy(r2, sig, eps, r2 < r_cut * r_cut, r_cut, r_switch))
        if not getattr(neighbor, "full", True):  # half list: each pair once (pair_energy_full's own custom jvp)
            sig_a = params["lj"]["sigma"][types_j]
            seps_a = safe_sqrt(params["lj"]["epsilon"])[types_j]
            return half_pairs(pos, box, neighbor.idx, jnp.zeros((n,), pos.dtype), sig_a, seps_a)
        # dense list [N, C], padding = N, each pair appears twice; forces row-wise (custom_jvp)
        return _dense_energy_cjvp(params, pos, box, neighbor.idx)

    def terms_fn(params, pos, *, box=box, neighbor=None):
        return {"lj": energy_fn(params, pos, box=box, neighbor=neighbor)}

    if neighbor_impl == "jax_md":
        from jax_md import partition, space

        displacement, _ = space.periodic(box_length)
        fns = partition.neighbor_list(
            displacement,
            box_length,
            r_cut,
            dr_threshold=skin,
            capacity_multiplier=capacity_multiplier,
            format=partition.NeighborListFormat.Dense,
        )
        # space.periodic takes no box keyword: drop the one System.allocate_neighbors passes
        neighbor_fn = partition.NeighborListFns(
            lambda pos, extra_capacity=0, **kw: fns.allocate(pos, extra_capacity), fns.update
        )
    elif neighbor_impl == "dmd":
        from dmd.forces.neighbors import resolve_rebuild_kernel
        from dmd.neighbors import cell_neighbor_list

        neighbor_fn = cell_neighbor_list(
            box_length,
            r_cut,
            skin=skin,
            capacity_multiplier=capacity_multiplier,
            half=half_list,
            rebuild_kernel=resolve_rebuild_kernel(rebuild_kernel),
        )
    else:
        raise UserInputError(f"lj_fluid: neighbor_impl={neighbor_impl!r}; use 'dmd' or 'jax_md'")

    params = {
        "lj": {
            "sigma": jnp.full((n_types,), sigma, dtype),
            "epsilon": jnp.full((n_types,), epsilon, dtype),
        }
    }
    labels = {"lj": {"sigma": names, "epsilon": names}}
    return System(
        energy_fn=energy_fn,
        params=params,
        param_labels=labels,
        masses=jnp.full((n_atoms,), mass, dtype),
        positions=jnp.asarray(positions, dtype),
        box=box,
        terms_fn=terms_fn,
        neighbor_fn=neighbor_fn,
        name=f"lj_fluid(N={n_atoms}, rho*={density})",
        metadata={
            "model": "lj_fluid",
            "cutoff_nm": r_cut,
            "switch_distance_nm": r_switch,
            "skin_nm": skin,
            "density_reduced": density,
            "temperature_K": float(temperature),
            "tau_ps": sigma * math.sqrt(mass / epsilon),
            "types": [names[t] for t in types],
            "neighbor_impl": neighbor_impl,
            "half_list": bool(neighbor_impl == "dmd" and half_list),
        },
    )


def harmonic_chain(
    n_atoms: int = 8,
    k: float = 1000.0,
    r0: float = 0.15,
    mass: float = 12.0,
    temperature: float = 300.0,
    *,
    dtype=jnp.float32,
    seed: int = 0,
) -> System:
    """A free linear chain of beads joined by harmonic springs (no box, no neighbour list).

        E = Σ_b ½ k_b (|x_{b+1} − x_b| − r0_b)²

    Args:
      n_atoms: beads (n_atoms − 1 bonds).
      k: spring constant, kJ/mol/nm² (every bond starts here).
      r0: rest length, nm.
      mass: amu per bead.
      temperature: K, stored in ``metadata["temperature_K"]``.

    Returns:
      System with θ = ``{"bond": {"k": [n_bonds] kJ/mol/nm², "r0": [n_bonds] nm}}`` labelled ``"i-j"``
      (atom indices of the bond). A bonded chain has no box and no neighbour list.
    """
    if n_atoms < 2:
        raise UserInputError(f"harmonic_chain: n_atoms={n_atoms}; pass n_atoms >= 2")
    rng = np.random.default_rng(seed)
    pos = np.zeros((n_atoms, 3))
    pos[:, 0] = np.arange(n_atoms) * r0
    pos += rng.normal(scale=0.01 * r0, size=pos.shape)
    i = np.arange(n_atoms - 1)
    j = i + 1

    def energy_fn(params, pos, *, box=None, neighbor=None):
        d = pos[j] - pos[i]
        r = jnp.sqrt(jnp.sum(d * d, -1))
        return jnp.sum(0.5 * params["bond"]["k"] * (r - params["bond"]["r0"]) ** 2)

    labels = tuple(f"{a}-{b}" for a, b in zip(i, j, strict=True))
    theta = {"k": jnp.full((n_atoms - 1,), k, dtype), "r0": jnp.full((n_atoms - 1,), r0, dtype)}
    return _one_term_system(
        "bond", energy_fn, theta, {"k": labels, "r0": labels}, jnp.full((n_atoms,), mass, dtype),
        jnp.asarray(pos, dtype), f"harmonic_chain(N={n_atoms})", temperature,
    )  # fmt: skip


def harmonic_oscillator(
    n_atoms: int = 1,
    dim: int = 3,
    k: float = 100.0,
    mass: float = 1.0,
    temperature: float = 300.0,
    *,
    dtype=jnp.float32,
    seed: int = 0,
) -> System:
    """Independent isotropic harmonic wells, the analytic limit for integrator checks.

        E = Σ_i ½ k_i |x_i − c_i|²,   exactly ⟨E⟩ = n_atoms·dim·kT/2,  Var(x) = kT/k per dof.

    Args:
      n_atoms: number of particles; dim: spatial dimension (positions ``[n_atoms, dim]``).
      k: kJ/mol/nm²; mass: amu; temperature: K (``metadata["temperature_K"]``).

    Returns:
      System with θ = ``{"spring": {"k": [n_atoms], "center": [n_atoms, dim] nm}}``.
    """
    rng = np.random.default_rng(seed)
    center = np.zeros((n_atoms, dim))
    pos = center + rng.normal(scale=math.sqrt(KB_KJ_PER_MOL_K * temperature / k), size=(n_atoms, dim))

    def energy_fn(params, pos, *, box=None, neighbor=None):
        d = pos - params["spring"]["center"]
        return jnp.sum(0.5 * params["spring"]["k"][:, None] * d * d)

    labels = tuple(str(a) for a in range(n_atoms))
    center_labels = tuple(f"{a}.{c}" for a in range(n_atoms) for c in "xyzw"[:dim])
    theta = {"k": jnp.full((n_atoms,), k, dtype), "center": jnp.asarray(center, dtype)}
    return _one_term_system(
        "spring", energy_fn, theta, {"k": labels, "center": center_labels}, jnp.full((n_atoms,), mass, dtype),
        jnp.asarray(pos, dtype), f"harmonic_oscillator(n={n_atoms}, dim={dim})", temperature,
    )  # fmt: skip


def _one_term_system(term, energy_fn, theta, labels, masses, positions, name, temperature) -> System:
    """A box-free :class:`dmd.System` with one energy term ``term`` (θ ``theta`` labelled ``labels``); the model
    name is ``name`` up to its parenthesis."""
    return System(
        energy_fn=energy_fn,
        params={term: theta},
        param_labels={term: labels},
        masses=masses,
        positions=positions,
        terms_fn=lambda params, pos, *, box=None, neighbor=None: {term: energy_fn(params, pos)},
        name=name,
        metadata={"model": name.split("(")[0], "temperature_K": float(temperature)},
    )
