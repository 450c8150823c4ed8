"""Force-field fitting: sampling a state point at θ, at constant volume (NVT) or constant pressure (NPT).

NVT: a jitted Langevin sampler (:func:`make_sampler`, :func:`sample`). NPT (``FitConfig.pressure`` set): Langevin
(BAOAB) dynamics with a Monte Carlo barostat move every ``barostat_every`` steps through :func:`dmd.npt.run_npt`
(:func:`sample_npt`); every frame carries its box, so box-dependent observables (density, powder peak positions)
follow θ. Both ensembles weight a configuration by exp(−βŨ) (NPT: exp(−β[Ũ + PV]), and ∂(PV)/∂θ = 0 at fixed
positions and box), so the fluctuation and reweighting estimators are the same with per-frame boxes.

:func:`sampled_energy_fn` is the potential Ũ the dynamics samples (plain cutoffs replaced by cut-and-shifted).

Units: nm, ps, K, bar, kJ/mol.
"""

from __future__ import annotations

import collections
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from dmd import distributed
from dmd.base.errors import SimulationDiverged, UserInputError
from dmd.forces.nonbonded import lj_pair_energy
from dmd.integrators import make_integrator, relax_overlaps
from dmd.npt_run import BAROSTATS
from dmd.runloop import (
    LAZY_ENERGY_EVERY,
    MAX_REALLOCATIONS,
    compiled_for,
    grow_neighbors,
    is_cell_list,
    pad_neighbors,
    redo_on_overflow,
    with_energy,
)
from dmd.space import minimum_image, wrap_positions

__all__ = [
    "check_npt_settings",
    "check_frames",
    "make_sampler",
    "sample",
    "sample_npt",
    "sampled_energy_fn",
    "pathwise_sample",
    "replica_seed",
    "sample_replicas",
    "sample_states",
    "global_replica_devices",
    "replica_device_count",
]


def check_npt_settings(system, cfg, where: str = "") -> None:
    """Refuse constant-pressure fit settings that cannot run, each with the fix (``where`` names the config)."""
    p = cfg.pressure
    if not (isinstance(p, (int, float)) and np.isfinite(p) and p > 0):
        raise UserInputError(f"{where}simulation.pressure {p!r}: pass a positive pressure in bar (e.g. 1.0)")
    if cfg.barostat == "triclinic":
        raise UserInputError(
            f"{where}simulation.barostat 'triclinic': the cell-shape move is called flexible (all six box elements, "
            "OpenMM's MonteCarloFlexibleBarostat); use barostat: flexible (or anisotropic: a, b, c scaled, angles kept)"
        )
    if cfg.barostat not in BAROSTATS:
        raise UserInputError(f"{where}simulation.barostat {cfg.barostat!r}: use one of {', '.join(BAROSTATS)}")
    every = cfg.barostat_every
    if not (isinstance(every, int) and every >= 1):
        raise UserInputError(f"{where}simulation.barostat_every {every!r}: pass a positive number of steps (e.g. 25)")
    for key in ("report_every", "equilibration", "steps"):
        if int(getattr(cfg, key)) % every:
            raise UserInputError(
                f"{where}simulation.{key} {getattr(cfg, key)} must be a multiple of barostat_every {every} "
                "(frames are taken between volume moves); round it"
            )
    if cfg.integrator == "verlet":
        raise UserInputError(f"{where}simulation.pressure needs a thermostat: use integrator: langevin, not verlet")
    if cfg.estimator == "pathwise":
        raise UserInputError(
            f"{where}estimator 'pathwise' differentiates constant-volume trajectories; under pressure use "
            "estimator: fluctuation or reweighting"
        )
    if system.box is None:
        raise UserInputError(f"{where}simulation.pressure needs a periodic box; the system has none")


def check_frames(frames, energies, box, report_every: int, boxes=None) -> None:
    """Raise :class:`SimulationDiverged` on non-finite frames, energies or boxes or a frame-to-frame jump over half
    the (smallest) box edge (5 nm without a box)."""
    finite = np.isfinite(energies) & np.all(np.isfinite(frames), axis=(1, 2))
    if boxes is not None:
        finite &= np.all(np.isfinite(boxes.reshape(len(boxes), -1)), axis=1)
    if not np.all(finite):
        bad = int(np.argmax(~finite))
        raise SimulationDiverged(f"simulation diverged: non-finite state at frame {bad}", step=bad * report_every)
    jumps = np.max(np.abs(np.diff(frames, axis=0)), initial=0.0)
    limit = 5.0
    if box is not None:
        b = np.asarray(box if boxes is None else boxes, float)
        if b.ndim == (2 if boxes is None else 3):  # triclinic rows: the edges are the diagonal (reduced form)
            b = np.diagonal(b, axis1=-2, axis2=-1)
        limit = 0.5 * float(np.min(b))
    if jumps > limit:
        raise SimulationDiverged(f"simulation diverged: a frame-to-frame jump of {jumps:.3g} nm", step=-1)


def sample_npt(system, params, cfg, *, seed: int, positions=None, box=None, cache=None):
    """Equilibrate and sample at ``params`` and pressure ``cfg.pressure`` bar (:func:`dmd.npt.run_npt`).

    One cycle is ``cfg.barostat_every`` BAOAB steps plus one Monte Carlo volume move; the first
    ``equilibration / barostat_every`` cycles are dropped, then a frame is kept every ``report_every`` steps.
    ``cache``: a dict kept across rounds (compiled chunks are reused while the box stays in range).

    Returns:
      (frames ``[F, N, 3]`` nm, boxes ``[F, 3]`` or ``[F, 3, 3]`` nm, energies ``[F]`` kJ/mol, info dict with the
      barostat's ``acceptance`` and the neighbour-list ``rebuilds``).

    Raises:
      SimulationDiverged: non-finite or exploding frames (the caller keeps its last good θ).
    """
    from dmd.npt import run_npt

    every = int(cfg.barostat_every)
    stride = int(cfg.report_every) // every
    n_eq = int(cfg.equilibration) // every
    n_frames = max(2, int(cfg.steps) // int(cfg.report_every))
    dtype = jnp.asarray(system.positions).dtype
    start = dataclasses.replace(
        system,
        positions=system.positions if positions is None else jnp.asarray(positions, dtype),
        box=system.box if box is None else jnp.asarray(box, dtype),
    )
    kept = {"positions": [], "box": [], "potential": []}
    seen = [0]

    def on_chunk(state, records):
        idx = seen[0] + np.arange(len(records["potential"]))
        keep = (idx >= n_eq) & ((idx - n_eq + 1) % stride == 0)
        for k in kept:
            kept[k].append(np.asarray(records[k])[keep])
        seen[0] += len(idx)

    try:
        out = run_npt(
            start, n_cycles=n_eq + n_frames * stride, dt=cfg.dt, temperature=cfg.temperature,
            friction=cfg.friction, pressure_bar=float(cfg.pressure), every=every, seed=seed, params=params,
            anisotropic=cfg.barostat == "anisotropic", flexible=cfg.barostat == "flexible", on_chunk=on_chunk,
            record_positions=True, cache=cache,
        )  # fmt: skip
    except RuntimeError as exc:  # a neighbour list overflowing chunk after chunk: exploding coordinates
        raise SimulationDiverged(f"simulation diverged: {exc}", step=-1) from None
    frames = np.concatenate(kept["positions"]).astype(dtype)
    boxes = np.concatenate(kept["box"]).astype(dtype)
    energies = np.concatenate(kept["potential"])
    check_frames(frames, energies, system.box, cfg.report_every, boxes)
    return frames, boxes, energies, {"acceptance": out["acceptance"], "rebuilds": out["rebuilds"]}


_SAMPLERS: collections.OrderedDict = collections.OrderedDict()  # dmd.runloop.compiled_for's store


def make_sampler(system, cfg):
    """A jitted Langevin sampler: (state, params, n_reports) → (state, frames, energies); compiled once per system
    object and integrator settings (a second fit, or a target sampled beforehand on the same system, reuses it)."""
    settings = (cfg.integrator, float(cfg.dt), float(cfg.temperature), float(cfg.friction), int(cfg.report_every))
    return compiled_for(_SAMPLERS, system, settings, lambda: _make_sampler(system, cfg))


def _make_sampler(system, cfg):
    integ = make_integrator(cfg.integrator, system, dt=cfg.dt, temperature=cfg.temperature, friction=cfg.friction)
    every = int(cfg.report_every)

    lazy = every >= LAZY_ENERGY_EVERY  # frames keep the energy of the report's step only (dmd.runloop)

    @jax.jit
    def advance(state, params, dummy):
        def report(st, _):
            st = jax.lax.fori_loop(0, every, lambda _, s: integ.step(s, params, energy=not lazy), st)
            st = with_energy(system, params, (st,))[0] if lazy else st
            return st, (st.positions, st.potential_energy)

        return jax.lax.scan(report, state, None, length=dummy.shape[0])

    return integ, advance


def sample(system, params, cfg, *, seed: int, positions=None, sampler=None):
    """Equilibrate and sample at ``params``: returns (frames ``[F, N, 3]`` nm, energies ``[F]`` kJ/mol).

    Raises:
      SimulationDiverged: non-finite or exploding frames (the caller keeps its last good θ).
    """
    integ, advance = sampler or make_sampler(system, cfg)
    pos = system.positions if positions is None else positions
    n_eq = max(0, cfg.equilibration // cfg.report_every)
    n_prod = max(2, cfg.steps // cfg.report_every)
    key = jax.random.PRNGKey(seed)
    nbr = _round_neighbors(system, pos, advance)

    def run(nbr):
        # frames of another θ (a fit's previous round) can overlap under this θ: relax first (no-op otherwise)
        x0, nbr, _ = relax_overlaps(system, params, jnp.asarray(pos), nbr, dt=cfg.dt)
        state = integ.init(key, params, positions=x0, neighbor=nbr)
        if n_eq:
            state, _ = advance(state, params, jnp.zeros(n_eq))
        return advance(state, params, jnp.zeros(n_prod))

    # an overflowed list drops pairs: redo the sample with a larger one (grown on every attempt)
    _, (end, (frames, energies)), _ = redo_on_overflow(
        run,
        nbr,
        lambda result: result[0].neighbor,
        lambda _, r, attempt: grow_neighbors(system, r[0].neighbor, jnp.asarray(pos), attempt),
    )
    _remember_shape(advance, end.neighbor)
    frames = np.asarray(frames)
    energies = np.asarray(energies)
    check_frames(frames, energies, system.box, cfg.report_every)
    return frames, energies


_SHAPES: collections.OrderedDict = collections.OrderedDict()  # id(advance) -> (advance, the largest list shape)


def _list_shape(nbr):
    """The shape of a neighbour list that a compiled run depends on: ``("dense", W)`` for ``idx [..., N, W]``,
    ``("cells", max occupancy, cell capacity)`` for dmd's cell lists (capacity 0: all pairs), None without one."""
    if nbr is None:
        return None
    if is_cell_list(nbr):
        return ("cells", int(nbr.max_occupancy), int(nbr.cell_capacity))
    idx = getattr(nbr, "idx", None)
    return None if idx is None or idx.ndim < 2 else ("dense", int(idx.shape[-1]))


def _larger(old, new):
    """The elementwise larger of two list shapes of one kind; ``new`` when they are of different kinds (dense ↔
    cells, all pairs ↔ cells: a different program either way)."""
    if old is None or new is None or old[0] != new[0] or (new[0] == "cells" and (old[2] == 0) != (new[2] == 0)):
        return new
    return (new[0], *(max(o, n) for o, n in zip(old[1:], new[1:], strict=True)))


def _round_neighbors(system, pos, advance):
    """A neighbour list for a round starting at ``pos`` [N, 3] nm (None without one), at least as large as the
    last list this sampler ran with. Each round allocates afresh at its start positions (at a new θ when a fit moved
    σ), and a list of another width or capacity is another shape, which recompiled the sampler, its start and the
    overlap relaxation every round (~10 s a round for the 188-atom peptide cell on 2 CPU cores; LJ σ fit: 4 × 4
    programs). Widened, a list keeps its pairs (more padding) and the programs are compiled once: dense lists are
    padded (:func:`dmd.runloop.pad_neighbors`), cell lists reallocated at the larger capacities."""
    if system.neighbor_fn is None:
        return None
    nbr = system.allocate_neighbors(wrap_positions(jnp.asarray(pos), system.box))
    hit = _SHAPES.get(id(advance))
    have = _list_shape(nbr)
    want = have if hit is None or hit[0] is not advance else _larger(hit[1], have)
    if want == have:
        return nbr
    if want[0] == "dense":
        return pad_neighbors(nbr, want[1])
    return nbr.fns.allocate(nbr.reference_position, max_occupancy=want[1], cell_capacity=want[2], box=nbr.box)


def _remember_shape(advance, neighbor) -> None:
    """Keep the shape of the list a run ended with (grown after an overflow; stacked replicas too) for the next
    round of this sampler."""
    shape = _list_shape(neighbor)
    if shape is None:
        return
    hit = _SHAPES.get(id(advance))
    _SHAPES[id(advance)] = (advance, _larger(None if hit is None or hit[0] is not advance else hit[1], shape))
    _SHAPES.move_to_end(id(advance))
    while len(_SHAPES) > 16:
        _SHAPES.popitem(last=False)


# ----------------------------------------------------------------------------------------------------------------
# replicas: vmapped on one device, sharded over devices and processes


def replica_seed(seed: int, rnd: int, replica: int = 0, stream: int = 0) -> int:
    """The PRNG seed (a uint32) of ``replica`` in round ``rnd`` of fit seed ``seed``; replica 0 is the unreplicated
    fit's round seed, ``stream`` tells apart other draws of one round (the pathwise route's equilibration).

    Derived by ``jax.random.fold_in`` of round, replica and stream into ``PRNGKey(seed)`` and hashed to 32 bits, so
    every (seed, round, replica, stream) has its own stream: the former ``seed + rnd`` gave fit seed s at round r
    the velocities and noise of seed s + 1 at round r − 1."""
    key = jax.random.PRNGKey(int(seed))
    for k in (rnd, replica, stream):
        key = jax.random.fold_in(key, int(k))
    return int(jax.random.bits(key, (), jnp.uint32))


_VMAPPED: collections.OrderedDict = collections.OrderedDict()  # advance -> its vmapped jit, one per sampler


def _vmapped(advance):
    return compiled_for(_VMAPPED, advance, (), lambda: jax.jit(jax.vmap(advance, in_axes=(0, None, None))))


def _replica_sharding(n_replicas: int, devices=None):
    """Replicas split over gcd(R, devices) of this process's devices (None: one device, nothing to split)."""
    import math

    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    devs = list(jax.local_devices() if devices is None else devices)
    n = math.gcd(int(n_replicas), len(devs))
    if n <= 1:
        return None
    return NamedSharding(Mesh(np.asarray(devs[:n]), ("replicas",)), PartitionSpec("replicas"))


def global_replica_devices(n_replicas: int):
    """The devices of one replicas mesh over all processes, or None where R does not split evenly over them.

    Each of the P processes gives gcd(R / P, its device count) of its devices, in process order, so every process
    holds the same number of replicas (R / P) and the mesh spans every process. None in a single-process run (the
    replicas then shard over this process's devices) or when P does not divide R.
    """
    import math

    if not distributed.is_distributed():
        return None
    p = distributed.process_count()
    if n_replicas % p:
        return None
    by_process = [[d for d in jax.devices() if d.process_index == i] for i in range(p)]
    m = math.gcd(n_replicas // p, min(len(d) for d in by_process))
    return [d for devs in by_process for d in devs[:m]]


def replica_device_count(n_replicas: int) -> int:
    """How many devices a state's R replicas are sharded over (all processes' when one mesh spans them)."""
    import math

    devices = global_replica_devices(n_replicas)
    return len(devices) if devices is not None else math.gcd(int(n_replicas), len(jax.local_devices()))


def _place(state, sharding):
    """The stacked replica state (every process holds all of it) placed on ``sharding``: each device receives only
    its replicas (``jax.make_array_from_callback``), so the mesh may span processes."""
    if sharding.is_fully_addressable:
        return jax.device_put(state, sharding)

    def one(a):
        a = np.asarray(a)
        return jax.make_array_from_callback(a.shape, sharding, lambda idx: a[idx])

    return jax.tree_util.tree_map(one, state)


def sample_replicas(system, params, cfg, *, seeds, positions, sampler=None, devices=None):
    """R independent NVT replicas at ``params``, run together: one ``jax.vmap`` of the sampler over replicas,
    the replica axis sharded over ``devices`` (default: this process's devices; gcd(R, n_devices) of them; devices
    of several processes, e.g. :func:`global_replica_devices`: one mesh across processes, every process calls this
    with the same arguments and receives every replica's frames).

    Replica r starts at ``positions[r]`` with velocities and noise from ``seeds[r]``; each is what :func:`sample`
    gives for that start and seed (to round-off: the batched kernels may add in another order). A neighbour list
    that overflows in any replica is grown and all replicas are redone.

    Args:
      positions: ``[R, N, 3]`` nm. seeds: R ints.

    Returns:
      (frames ``[R, F, N, 3]`` nm, energies ``[R, F]`` kJ/mol) as numpy arrays.

    Raises:
      SimulationDiverged: a replica's frames are non-finite or explode (names the replica).
    """
    integ, advance = sampler or make_sampler(system, cfg)
    vadvance = _vmapped(advance)
    pos = np.asarray(positions)
    n_rep = len(seeds)
    if pos.shape[0] != n_rep:
        raise ValueError(f"sample_replicas: {n_rep} seeds but positions for {pos.shape[0]} replicas")
    n_eq = max(0, cfg.equilibration // cfg.report_every)
    n_prod = max(2, cfg.steps // cfg.report_every)
    sharding = _replica_sharding(n_rep, devices)
    nbr = _round_neighbors(system, pos[0], advance)
    for attempt in range(MAX_REALLOCATIONS + 1):
        states = []
        for r in range(n_rep):  # relax and initialise one by one (cheap, compiled once), then run all at once
            x0, nb, _ = relax_overlaps(system, params, jnp.asarray(pos[r]), nbr, dt=cfg.dt)
            states.append(integ.init(jax.random.PRNGKey(seeds[r]), params, positions=x0, neighbor=nb))
        state = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *states)
        if sharding is not None:
            state = _place(state, sharding)
        # host (numpy) parameters and scan inputs: replicated on every device of a mesh spanning processes
        local = sharding is None or sharding.is_fully_addressable
        prm, zeros = (params, jnp.zeros) if local else (jax.tree_util.tree_map(np.asarray, params), np.zeros)
        if n_eq:
            state, _ = vadvance(state, prm, zeros(n_eq))
        state, (frames, energies) = vadvance(state, prm, zeros(n_prod))
        over = None if state.neighbor is None else distributed.to_host(state.neighbor.did_buffer_overflow).reshape(-1)
        if over is None or not over.any():
            break
        if attempt == MAX_REALLOCATIONS:
            raise SimulationDiverged(f"neighbour list still overflows after {attempt} reallocations", step=-1)
        worst = int(np.argmax(over))
        one = jax.tree_util.tree_map(lambda a, i=worst: jnp.asarray(distributed.to_host(a)[i]), state.neighbor)
        nbr = grow_neighbors(system, one, jnp.asarray(pos[worst]), attempt + 1)
    _remember_shape(advance, state.neighbor)
    frames, energies = distributed.to_host(frames), distributed.to_host(energies)
    for r in range(n_rep):
        try:
            check_frames(frames[r], energies[r], system.box, cfg.report_every)
        except SimulationDiverged as exc:
            raise SimulationDiverged(f"{exc} (replica seed {seeds[r]})", step=exc.step) from None
    return frames, energies


def sample_states(jobs, rnd: int, replicas: int):
    """Sample R = ``replicas`` replicas of every state point, over every device of every process.

    ``jobs``: one ``(name, system, params, cfg, positions [R, N, 3])`` per state (``cfg`` that state's
    :class:`FitConfig`, its sampler ``(integ, advance)`` as a sixth entry or None). When the P processes divide R,
    each state's replicas run as one ``jax.vmap`` sharded over one mesh spanning all processes
    (:func:`global_replica_devices`; R / P replicas per process), and every process gathers every frame. Otherwise
    (R = 1 on 2 processes, say) the (state, replica) pairs, state-major, are cut into contiguous blocks, one per
    process (:func:`dmd.distributed.my_slice`; all on this process in a single-process run), each process samples
    its replicas of one state together (:func:`sample_replicas`: vmapped, sharded over its devices) and the frames
    are summed over processes into zero-filled arrays (exact: each entry is filled by one process only). Either way
    every process holds every frame and computes the same estimator terms and the same θ. Replica r of round
    ``rnd`` uses :func:`replica_seed` wherever it runs.

    Returns:
      one ``[R, F, N_s, 3]`` array of frames (nm) per state, the same on every process.

    Raises:
      SimulationDiverged: on every process when any replica diverged (naming the first such state and replica).
    """
    mesh_devices = global_replica_devices(replicas)
    if mesh_devices is not None:
        out = []
        for name, system, params, cfg, positions, sampler in jobs:
            seeds = [replica_seed(cfg.seed, rnd, r) for r in range(replicas)]
            try:  # a divergence is seen, and raised, on every process: all hold every frame
                frames, _ = sample_replicas(system, params, cfg, seeds=seeds, positions=np.asarray(positions),
                                            sampler=sampler, devices=mesh_devices)  # fmt: skip
            except SimulationDiverged as exc:
                raise SimulationDiverged(f"simulation diverged in state {name}: {exc}", step=-1) from None
            out.append(frames)
        return out
    items = [(s, r) for s in range(len(jobs)) for r in range(replicas)]
    mine = items[distributed.my_slice(len(items))]
    failed = np.zeros(len(items), np.float64)
    out, reason = [], ""
    for s, (_, system, params, cfg, positions, sampler) in enumerate(jobs):
        n_frames = max(2, cfg.steps // cfg.report_every)
        dtype = np.asarray(system.positions).dtype
        frames = np.zeros((replicas, n_frames, *np.shape(positions)[1:]), dtype)
        reps = [r for t, r in mine if t == s]
        if reps:
            seeds = [replica_seed(cfg.seed, rnd, r) for r in reps]
            try:
                local, _ = sample_replicas(system, params, cfg, seeds=seeds, positions=np.asarray(positions)[reps],
                                           sampler=sampler)  # fmt: skip
                frames[reps] = local
            except SimulationDiverged as exc:
                failed[[items.index((s, r)) for r in reps]] = 1.0
                reason = reason or str(exc)
        out.append(frames)
    failed = distributed.sum_over_processes(failed)
    if failed.any():
        s, r = items[int(np.argmax(failed))]
        detail = f": {reason}" if reason else ""
        raise SimulationDiverged(f"simulation diverged in replica {r} of state {jobs[s][0]}{detail}", step=-1)
    return [distributed.sum_over_processes(f) for f in out]


# ----------------------------------------------------------------------------------------------------------------
# the potential the dynamics samples


def sampled_energy_fn(system, *, warn: bool = True):
    """Ũ(params, pos [N, 3] nm, box) kJ/mol: the potential whose Boltzmann distribution the dynamics samples.

    The integrator moves atoms with F = −∇U, which is blind to the jump of a *plain* (unshifted, unswitched) cutoff:
    a pair crossing r_c changes U by u(r_c) but exerts no impulse. Langevin dynamics therefore samples
    exp(−βŨ) with the cut-and-shifted potential

        Ũ(x; θ) = U(x; θ) − Σ_{i<j, r_ij<r_c} u_ij(r_c; θ)

    and the fluctuation estimator −β cov(o, ∂Ũ/∂θ) and the reweighting weights exp(−βΔŨ) must use Ũ: with U they
    miss −β cov(o, N_in) ∂u(r_c)/∂θ, N_in the number of pairs inside r_c (a bias that grows with ∂u(r_c)/∂θ, larger
    for σ than for ε). For :func:`dmd.models.lj_fluid` with a plain cutoff Ũ is formed here exactly
    (Lorentz-Berthelot pairs, as the model builds them); switched or cutoff-free energies are continuous and
    returned unchanged. An OpenMM system with a plain LJ cutoff cannot be corrected pair by pair here: a warning
    says so (use a switch distance, which makes U continuous).
    """
    meta = system.metadata or {}
    nbr0 = _frame_neighbors(system)

    def plain(params, pos, box):
        if nbr0 is None:
            return system.energy_fn(params, pos, box=box, neighbor=None)
        # a list-based system (PME, cutoff periodic): the list of the start, rebuilt for this frame when it moved
        # past the skin; an overflowed list gives NaN (the fit refuses non-finite estimates) rather than a wrong U
        b = system.box if box is None else box
        nb = nbr0.set(reference_position=nbr0.reference_position.astype(pos.dtype)).update(pos, box=b)
        u = system.energy_fn(params, pos, box=b, neighbor=nb)
        return jnp.where(nb.did_buffer_overflow, jnp.nan, u)

    if meta.get("model") == "lj_fluid" and meta.get("switch_distance_nm") is None and meta.get("cutoff_nm"):
        r_c = float(meta["cutoff_nm"])
        names = list(system.param_labels["lj"]["sigma"])
        types = np.array([names.index(t) for t in meta["types"]], np.int32)
        i, j = np.triu_indices(len(types), 1)

        def shifted(params, pos, box):
            b = jnp.asarray(system.box if box is None else box, pos.dtype)
            d = minimum_image(pos[i] - pos[j], b)
            inside = jnp.sum(d * d, -1) < r_c * r_c
            sig = 0.5 * (params["lj"]["sigma"][types[i]] + params["lj"]["sigma"][types[j]])
            eps = jnp.sqrt(params["lj"]["epsilon"][types[i]] * params["lj"]["epsilon"][types[j]])
            jump = jnp.sum(jnp.where(inside, lj_pair_energy((sig / r_c) ** 2, eps), 0.0))
            return plain(params, pos, box) - jump

        return shifted
    if warn and meta.get("cutoff_nm") and meta.get("switch_distance_nm") is None and meta.get("model") != "lj_fluid":
        import warnings

        warnings.warn(
            f"{system.name}: plain nonbonded cutoff ({meta['cutoff_nm']} nm, no switch): the sampled ensemble is that "
            "of the cut-and-shifted LJ potential, so fluctuation/reweighting derivatives of LJ parameters carry a "
            "small bias; build the system with a switch distance to remove it",
            stacklevel=3,
        )
    return plain


def _frame_neighbors(system):
    """A neighbour list for evaluating Ũ on single frames (None for systems without one): allocated on the start
    positions with half again the capacity, since frames of a round are evaluated inside one compiled map."""
    if system.neighbor_fn is None:
        return None
    pos = wrap_positions(jnp.asarray(system.positions), system.box)
    count = int(system.allocate_neighbors(pos).max_occupancy)
    return system.allocate_neighbors(pos, extra_capacity=count // 2)


def pathwise_sample(system, params, cfg, rnd, positions, names, mapping, z, sampler):
    """Frames ``[F, N, 3]`` nm, tangents dx/dz ``[F, Pz, N, 3]`` of one pathwise round (NVT), and the chaos
    verdict on them (:func:`dmd.chaos.assess`: a sentence saying whether the pathwise route can be trusted)."""
    from dmd.sensitivity import run_sensitivities

    eq_cfg = dataclasses.replace(cfg, steps=max(cfg.equilibration, 2 * cfg.report_every), equilibration=0)
    eq_seed = replica_seed(cfg.seed, rnd, 0, 1)
    eq_frames, _ = sample(system, params, eq_cfg, seed=eq_seed, positions=positions, sampler=sampler)
    sys_r = dataclasses.replace(system, params=params)
    res = run_sensitivities(
        sys_r, names, steps=cfg.steps, dt=cfg.dt, temperature=cfg.temperature, friction=cfg.friction,
        seed=replica_seed(cfg.seed, rnd), method=cfg.sensitivity_method, window=cfg.window,
        report_every=cfg.report_every, pos=jnp.asarray(eq_frames[-1]), progress=False,
    )  # fmt: skip
    if res.first_nonfinite_frame is not None:
        raise SimulationDiverged("pathwise tangents overflowed (chaos); use the fluctuation estimator", step=-1)
    # dθ_entries/dz: each fitted z sets all of its tied entries
    dtheta_dz = np.asarray(jax.jacfwd(mapping.theta_of)(jnp.asarray(z)))  # [Pz, Pz] diagonal
    sizes = [sel.size for sel in mapping.selections]
    cols = np.repeat(np.arange(len(sizes)), sizes)
    dx = np.asarray(res.dx)  # [F, E, N, 3]
    dx_dz = np.zeros((dx.shape[0], len(sizes)) + dx.shape[2:])
    for e, p in enumerate(cols):
        dx_dz[:, p] += dx[:, e] * dtheta_dz[p, p]
    return np.asarray(res.positions), dx_dz, res.estimator_advice
