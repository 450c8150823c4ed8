"""``dmd diffuse``: diffuse scattering I_D = ⟨|F|²⟩ − |⟨F⟩|² from an MD trajectory, written to MTZ.

Streams frames (mdtraj, nm → Å), computes F(h, t) for the box's P1 reflections to ``--d-min`` with the
spread + FFT route (or the direct sum), accumulates Σ|F|² and ΣF in float64, and writes the MTZ columns
``ID`` (I_D), ``MEANF2`` (⟨|F|²⟩), ``MEANF_SQ`` (|⟨F⟩|²), ``FMEAN``/``PHIMEAN`` (|⟨F⟩|, phase of ⟨F⟩ in
degrees) with the box cell, plus a JSON summary and a PNG of the shell-averaged I_D beside the MTZ.
A checkpoint (``OUT.ckpt.npz``) is written every ``--checkpoint-every`` chunks; rerunning the same
command resumes from it.
"""

from __future__ import annotations

import argparse
import os
import time

from dmd import distributed
from dmd.base.errors import UserInputError
from dmd.cli.common import add_overwrite_argument, add_trajectory_arguments, check_input, check_outputs, emit, info

HELP = "diffuse scattering I_D = <|F|^2> - |<F>|^2 from a trajectory, to MTZ"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``dmd diffuse`` (its parser is made by :func:`dmd.cli.build_parser`)."""
    add_trajectory_arguments(p)
    p.add_argument("--d-min", type=float, required=True, help="high-resolution limit, Å")
    p.add_argument("--stride", type=int, default=1, help="use every S-th frame (default 1)")
    p.add_argument("--chunk", type=int, default=16, help="frames per chunk (memory vs speed; default 16)")
    p.add_argument("--selection", default=None, help="mdtraj atom selection, e.g. 'protein' (default: all atoms)")
    p.add_argument("--b-iso", type=float, default=0.0, help="isotropic B added to every atom, Å² (default 0)")
    p.add_argument("--method", choices=("fft", "direct"), default="fft", help="structure-factor route")
    p.add_argument("--tolerance", type=float, default=1e-5, help="FFT route relative accuracy (default 1e-5)")
    p.add_argument(
        "--spacegroup",
        default=None,
        help="also write ID_SYM: I_D averaged over the Laue group of this (parent-cell) space group",
    )
    p.add_argument("--checkpoint-every", type=int, default=20, help="chunks between checkpoints (0: never)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--out", required=True, help="output MTZ path")
    add_overwrite_argument(p, "OUT.mtz and the files beside it")
    distributed.add_arguments(p)


def _selection(traj, top, selection):
    if selection is None:
        return None
    import mdtraj

    try:
        topo = mdtraj.load_topology(top) if top else mdtraj.load_frame(traj, 0).topology
        idx = topo.select(selection)
    except Exception as exc:  # mdtraj raises many types for bad selections/files
        raise UserInputError(f"--selection {selection!r}: {exc}; use mdtraj selection syntax, e.g. 'protein'") from exc
    if len(idx) == 0:
        raise UserInputError(f"--selection {selection!r} selects no atoms; check the selection against --top")
    return idx


def _frames_fn(args, plan, hkl, els, dtype, mesh):
    """``F(pos [T, N, 3] fractional, cells [T, 6]) -> [T, M]`` complex; with a ``mesh``, a ``shard_map`` that computes
    each device's block of frames on that device (inputs and output sharded by frames)."""
    import jax
    import jax.numpy as jnp

    from analysis import structure_factors

    b = jnp.full((len(els),), args.b_iso, dtype)

    def f(pos, cells):
        if args.method == "fft":
            return structure_factors.structure_factors_fft(plan, pos, cells, b)
        return structure_factors.structure_factors_direct(hkl, pos, cells, els, b)

    if mesh is None:
        return f
    from jax.sharding import PartitionSpec

    rows = PartitionSpec(mesh.axis_names[0])
    return jax.jit(jax.shard_map(f, mesh=mesh, in_specs=(rows, rows), out_specs=rows))


def _sum_over_processes(state):
    """A :class:`analysis.diffuse.DiffuseState` summed over processes (float64, identical on every process)."""
    import numpy as np

    from analysis import diffuse

    return diffuse.DiffuseState(
        float(distributed.sum_over_processes(np.array([state.sum_w]))[0]),
        distributed.sum_over_processes(state.sum_f2),
        distributed.sum_over_processes(state.sum_f),
        int(distributed.sum_over_processes(np.array([state.n_frames], np.int64))[0]),
    )


def _n_shells(n_refl: int) -> int:
    """Resolution shells for per-shell statistics: about 50 reflections a shell, 1 to 10 shells."""
    return max(1, min(10, n_refl // 50))


def run(args) -> int:
    """Run ``dmd diffuse`` (module docstring).

    Over 100 lines: one linear pipeline (checks, the resumable and distributed frame loop, MTZ, plot, summary) whose
    steps share the run's arguments, accumulated sums and paths; it reads top to bottom as the command's record.
    """
    if args.d_min <= 0:
        raise UserInputError(f"--d-min must be positive (Å), got {args.d_min}")
    if args.stride < 1 or args.chunk < 1:
        raise UserInputError("--stride and --chunk must be ≥ 1")
    if not args.out.lower().endswith(".mtz"):
        raise UserInputError(f"--out {args.out}: give an .mtz path")
    check_input(args.traj, "--traj", "trajectory")
    check_input(args.top, "--top", "topology")
    inputs = [args.traj] + ([args.top] if args.top else [])
    ckpt = args.out + ".ckpt.npz"
    stem = os.path.splitext(args.out)[0]
    resuming = os.path.exists(ckpt)  # rerunning an interrupted command continues it
    check_outputs(args.out, inputs=inputs, overwrite=args.overwrite or resuming, writes=[stem + ".png", stem + ".json"])

    import jax
    import jax.numpy as jnp
    import numpy as np

    from analysis import diffuse, structure_factors
    from analysis.mtz_io import write_mtz
    from analysis.structure_io import trajectory_frames
    from dmd.base.io import savez, write_json
    from dmd.base.plotting import save_figure
    from dmd.base.progress import progress_bar

    multi = distributed.from_args(args, inputs)  # frames sharded over every process's devices; process 0 writes
    dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    atom_indices = _selection(args.traj, args.top, args.selection)
    # one mesh over all devices of all processes: each chunk's frames are split over it, every device computes F of
    # its own frames; each process adds its devices' frames into float64 sums (host), summed over processes at the end
    mesh = distributed.global_mesh("frames") if len(jax.devices()) > 1 else None

    t0 = time.perf_counter()
    state, hkl, plan, cell0, n_skip = None, None, None, None, 0
    if os.path.exists(ckpt):
        if multi:  # every process resumes from the same checkpoint (it holds the sums over all processes)
            distributed.check_same(f"the checkpoint {os.path.basename(ckpt)} (SHA-256)", distributed.file_digest(ckpt))
        z = np.load(ckpt)
        hkl, n_skip = z["hkl"], int(z["n_frames"])
        state = diffuse.DiffuseState(float(z["sum_w"]), z["sum_f2"], z["sum_f"], int(z["n_frames"]))
        if not distributed.is_writer():  # process 0 carries the checkpoint's sums, the others add theirs to them
            state = diffuse.diffuse_init(len(hkl))
        info(f"resuming from {ckpt}: {n_skip} frames already accumulated")
    cells_seen = []
    bar = progress_bar(desc="frames", unit="frame", enabled=not args.no_progress and distributed.is_writer())
    frames_iter = trajectory_frames(
        args.traj, args.top, stride=args.stride, chunk=args.chunk, atom_indices=atom_indices
    )
    seen, n_chunks, f_of = 0, 0, None
    for frac, cells, els in frames_iter:
        if cell0 is None:
            cell0 = cells[0]
            if hkl is None:
                hkl, _ = diffuse.diffuse_hkl(cell0, args.d_min, args.supercell)
            if state is None:
                state = diffuse.diffuse_init(len(hkl))
            if args.method == "fft":
                b = np.full(len(els), args.b_iso)
                plan = structure_factors.make_fft_plan(hkl, cell0, els, b, tolerance=args.tolerance)
            f_of = _frames_fn(args, plan, hkl, els, dtype, mesh)
        t = len(frac)
        if seen + t <= n_skip:  # already in the checkpoint
            seen += t
            bar.update(t)
            continue
        start = max(0, n_skip - seen)
        frac, cells = frac[start:], cells[start:]
        seen += t
        if mesh is None:
            state = diffuse.diffuse_update(state, np.asarray(f_of(jnp.asarray(frac, dtype), jnp.asarray(cells, dtype))))
        else:
            (pos, n), (cl, _) = (distributed.shard_rows(np.asarray(a, dtype), mesh) for a in (frac, cells))
            for _, block in distributed.local_rows(f_of(pos, cl), n):  # this process's devices' frames
                state = diffuse.diffuse_update(state, block)
        cells_seen.append(cells)
        bar.update(len(frac))
        n_chunks += 1
        if args.checkpoint_every and n_chunks % args.checkpoint_every == 0:
            total = _sum_over_processes(state) if multi else state  # the same chunks on every process: in step
            if distributed.is_writer():
                savez(ckpt, inputs, hkl=hkl, sum_w=total.sum_w, sum_f2=total.sum_f2, sum_f=total.sum_f,
                      n_frames=total.n_frames)  # fmt: skip
    bar.close()
    if multi and state is not None:  # add every process's float64 partial sums (identical on all processes)
        state = _sum_over_processes(state)
    if state is None or state.n_frames == 0:
        raise UserInputError(f"{args.traj}: no frames read; check --stride and the trajectory")
    i_d, mean_f2, mean_f_sq = diffuse.diffuse_finalize(state)
    mean_f = state.sum_f / state.sum_w
    cols = {
        "ID": i_d,
        "MEANF2": mean_f2,
        "MEANF_SQ": mean_f_sq,
        "FMEAN": np.abs(mean_f),
        "PHIMEAN": np.degrees(np.angle(mean_f)),
    }
    types = {"ID": "J", "MEANF2": "J", "MEANF_SQ": "J", "FMEAN": "F", "PHIMEAN": "P"}
    if args.spacegroup:
        try:
            cols["ID_SYM"] = diffuse.symmetry_average(hkl, i_d, args.spacegroup, supercell=args.supercell)
        except ValueError as exc:
            raise UserInputError(f"--spacegroup: {exc}") from exc
        types["ID_SYM"] = "J"
        sym_cc = diffuse.diffuse_cc(i_d, cols["ID_SYM"], diffuse.inv_d2_of(hkl, cell0), n_shells=_n_shells(len(hkl)))
    cells_all = np.concatenate(cells_seen) if cells_seen else cell0[None]
    cell_mean = cells_all.mean(axis=0)
    parent_cell = np.concatenate([cell_mean[:3] / np.asarray(args.supercell, float), cell_mean[3:]])
    history = [
        f"dmd diffuse traj={os.path.basename(args.traj)} frames={state.n_frames} stride={args.stride}",
        f"box = supercell {tuple(args.supercell)} of parent cell; box indices H, parent-lattice h = H / supercell",
        f"method={args.method} d_min={args.d_min} b_iso={args.b_iso}",
    ]
    if not distributed.is_writer():
        return 0
    write_mtz(args.out, hkl, cols, cell_mean, "P 1", column_types=types, history=history, inputs=inputs)
    elapsed = time.perf_counter() - t0

    # shell-averaged plot and summary
    from dmd.base.plotting import pyplot

    plt = pyplot()

    inv_d2 = diffuse.inv_d2_of(hkl, cell_mean)
    n_sh = max(1, min(20, len(hkl) // 50))
    edges = np.quantile(inv_d2, np.linspace(0, 1, n_sh + 1))
    idx = np.clip(np.searchsorted(edges, inv_d2, side="right") - 1, 0, n_sh - 1)
    mid = np.array([inv_d2[idx == k].mean() for k in range(n_sh)])
    shell_id = np.array([i_d[idx == k].mean() for k in range(n_sh)])
    shell_f2 = np.array([mean_f2[idx == k].mean() for k in range(n_sh)])
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.semilogy(np.sqrt(mid), shell_f2, "o-", label="⟨|F|²⟩")
    ax.semilogy(np.sqrt(mid), np.maximum(shell_id, 1e-12), "s-", label="I_D = ⟨|F|²⟩ − |⟨F⟩|²")
    ax.set_xlabel("s = 1/d (Å⁻¹)")
    ax.set_ylabel("shell mean (e²)")
    ax.set_title(f"{os.path.basename(args.traj)}: {state.n_frames} frames, {len(hkl)} reflections")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, stem + ".png", inputs)
    summary = {
        "traj": args.traj,
        "top": args.top,
        "n_frames": state.n_frames,
        "n_atoms": plan.n_atoms if plan is not None else None,
        "n_reflections": len(hkl),
        "d_min": args.d_min,
        "supercell": list(args.supercell),
        "cell_mean": cell_mean,
        "parent_cell": parent_cell,
        "parent_indices": "h = H / supercell (fractional off Bragg positions)",
        "method": args.method,
        "dtype": str(jnp.dtype(dtype)),
        "devices": 1 if mesh is None else int(mesh.devices.size),  # frames sharded over (all processes)
        "processes": distributed.process_count() if multi else 1,
        "seconds": elapsed,
        "frames_per_second": state.n_frames / elapsed,
        "mean_I_D": float(np.mean(i_d)),
        "mean_F2": float(np.mean(mean_f2)),
        "outputs": [args.out, stem + ".png", stem + ".json"],
    }
    if args.spacegroup:  # how symmetric the ensemble's I_D already is: CC(ID, ID_SYM) → 1 with sampling
        summary["spacegroup"] = args.spacegroup
        keys = ("cc_total", "cc_anisotropic", "shell_edges_d", "cc_total_shells", "cc_anisotropic_shells")
        summary["symmetry_cc"] = {k: sym_cc[k] for k in (*keys, "n_per_shell")}
    write_json(stem + ".json", summary, inputs)
    if os.path.exists(ckpt):
        os.remove(ckpt)
    lines = [
        f"dmd diffuse: {state.n_frames} frames, {len(hkl)} reflections to {args.d_min} Å in {elapsed:.1f} s "
        f"({state.n_frames / elapsed:.1f} frames/s); mean I_D {np.mean(i_d):.4g} e², "
        f"mean <|F|^2> {np.mean(mean_f2):.4g} e² → {args.out}"
    ]
    if args.spacegroup:
        lines.append(
            f"ID vs ID_SYM ({args.spacegroup}): CC total {sym_cc['cc_total']:.4f}, "
            f"anisotropic {sym_cc['cc_anisotropic']:.4f}"
        )
    emit(args, summary, "\n".join(lines))
    return 0
