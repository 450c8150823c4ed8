"""One home for multi-process runs on JAX's own distributed runtime (``jax.distributed``).

Every process runs the same command. :func:`initialize` joins them (coordinator address, process count and
id from arguments, from ``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID``, or from
the cluster, e.g. SLURM's ``SLURM_*`` variables, which ``jax.distributed.initialize`` detects itself).
:func:`global_mesh` is one 1-D mesh over all processes' devices; :func:`shard_rows` places a host array's rows
on it (each device receives its own block only) and :func:`local_rows` reads back the rows this process's
devices hold; :func:`is_writer` is true on process 0 only (the one that writes outputs); :func:`check_same`
stops every process with the same clear message when the processes disagree on an input; :func:`my_slice` is
the contiguous block of items a process owns and :func:`sum_over_processes` adds per-process partial sums
(float64 on the host, summed in process order so the result is identical on every process). CPU collectives
between processes use gloo (JAX's default).
"""

from __future__ import annotations

import hashlib
import os

import numpy as np

from dmd.base.errors import UserInputError

__all__ = [
    "initialize",
    "is_distributed",
    "is_writer",
    "process_index",
    "process_count",
    "global_mesh",
    "check_same",
    "file_digest",
    "my_slice",
    "sum_over_processes",
    "add_arguments",
    "from_args",
    "to_host",
    "shard_rows",
    "local_rows",
    "free_local_port",
]

_STATE = {"on": False}


def initialize(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None):
    """Join the distributed run (idempotent). Must run before any JAX computation.

    Args:
      coordinator: ``host:port`` of process 0's coordinator (default ``$JAX_COORDINATOR_ADDRESS``, or
        detected from SLURM / Open MPI).
      num_processes, process_id: default ``$JAX_NUM_PROCESSES`` / ``$JAX_PROCESS_ID``, or detected.
    """
    import jax

    if _STATE["on"]:
        return
    env = os.environ
    coordinator = coordinator or env.get("JAX_COORDINATOR_ADDRESS")
    if num_processes is None and env.get("JAX_NUM_PROCESSES"):
        num_processes = int(env["JAX_NUM_PROCESSES"])
    if process_id is None and env.get("JAX_PROCESS_ID"):
        process_id = int(env["JAX_PROCESS_ID"])
    try:
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes, process_id=process_id)
    except (RuntimeError, ValueError) as exc:
        raise UserInputError(
            f"--distributed: could not join the run ({exc}); give --coordinator HOST:PORT --num-processes N "
            "--process-id I (or JAX_COORDINATOR_ADDRESS/JAX_NUM_PROCESSES/JAX_PROCESS_ID, or run under srun)"
        ) from exc
    _STATE["on"] = True


def is_distributed() -> bool:
    """True once :func:`initialize` joined a run of more than one process."""
    return _STATE["on"] and process_count() > 1


def process_index() -> int:
    import jax

    return jax.process_index()


def process_count() -> int:
    import jax

    return jax.process_count()


def is_writer() -> bool:
    """True on the process that writes outputs (process 0; always true in a single-process run)."""
    return process_index() == 0


def global_mesh(axis: str = "frames"):
    """A 1-D :class:`jax.sharding.Mesh` named ``axis`` over every device of every process."""
    import jax
    from jax.sharding import Mesh

    return Mesh(np.asarray(jax.devices()).reshape(-1), (axis,))


def file_digest(path: str) -> str:
    """SHA-256 hex digest of a file's bytes (to check that processes read the same input)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_same(what: str, value) -> None:
    """Stop every process with the same :class:`UserInputError` unless all processes hold the same ``value``.

    ``value`` is any object with a stable ``repr`` (a length, a digest, a tuple of them). Single process:
    nothing to check.
    """
    if not is_distributed():
        return
    from jax.experimental import multihost_utils

    mine = np.frombuffer(hashlib.sha256(repr(value).encode()).digest(), np.uint8)
    every = np.asarray(multihost_utils.process_allgather(mine))
    if not np.all(every == every[0]):
        bad = [i for i in range(len(every)) if not np.array_equal(every[i], every[0])]
        raise UserInputError(
            f"--distributed: processes disagree on {what} (process {process_index()} has {value!r}; processes "
            f"{bad} differ from process 0); give every process the same input files and options. Nothing written."
        )


def my_slice(n: int) -> slice:
    """The contiguous block of ``n`` items (frames, chunks) this process owns: near-equal blocks in process order."""
    k, p = process_count() if is_distributed() else 1, process_index() if is_distributed() else 0
    edges = [(n * i) // k for i in range(k + 1)]
    return slice(edges[p], edges[p + 1])


def sum_over_processes(x):
    """Σ over processes of a numpy array ``x`` (same shape everywhere), identical on every process.

    Gathered to every host and added in process order in the input dtype (complex128/float64 partial sums
    stay exact to round-off). Single process: ``x`` itself.
    """
    x = np.asarray(x)
    if not is_distributed():
        return x
    from jax.experimental import multihost_utils

    # gathered as raw bytes: exact whatever jax_enable_x64 says (JAX would cast float64 to float32)
    raw = np.ascontiguousarray(x).view(np.uint8).reshape(-1)
    every = np.asarray(multihost_utils.process_allgather(raw))
    parts = [np.ascontiguousarray(b).view(x.dtype).reshape(x.shape) for b in every]
    out = parts[0].copy()
    for part in parts[1:]:
        out = out + part
    return out


def add_arguments(parser, sharded: str = "frames sharded over all processes") -> None:
    """The ``--distributed`` options of a command (argparse ``parser``; ``sharded`` says what is split)."""
    g = parser.add_argument_group("multi-process (jax.distributed)")
    g.add_argument(
        "--distributed",
        action="store_true",
        help=f"join a multi-process run: {sharded}, process 0 writes the outputs",
    )
    g.add_argument(
        "--coordinator", default=None, help="HOST:PORT of process 0 (default $JAX_COORDINATOR_ADDRESS/SLURM)"
    )
    g.add_argument("--num-processes", type=int, default=None, help="processes in the run (default env/SLURM)")
    g.add_argument("--process-id", type=int, default=None, help="this process's id 0..N-1 (default env/SLURM)")


def from_args(args, inputs=()) -> bool:
    """Join the run if ``args.distributed``; check every process sees the same ``inputs`` (file digests) and
    options. Returns whether this is a multi-process run."""
    if not getattr(args, "distributed", False):
        return False
    initialize(args.coordinator, args.num_processes, args.process_id)
    options = {
        k: v
        for k, v in sorted(vars(args).items())
        if k not in ("process_id", "func", "traj", "top", "data") and not callable(v)
    }
    check_same("the options", options)
    for path in inputs:
        check_same(f"the input file {os.path.basename(path)} (SHA-256)", file_digest(path))
    return is_distributed()


def to_host(x) -> np.ndarray:
    """A jax array (possibly sharded over devices of several processes) as one numpy array on every process."""
    if getattr(x, "is_fully_addressable", True):
        return np.asarray(x)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def shard_rows(x, mesh):
    """``x [n, ...]`` (numpy, the same on every process) as a jax array sharded by rows over the 1-D ``mesh``.

    The rows are padded to a multiple of the mesh size by repeating the last row (computations on a pad row stay
    finite; callers drop rows ≥ n, e.g. with :func:`local_rows`). Each device receives its own block only
    (``jax.make_array_from_callback``: a process places data on its own devices, none crosses processes).
    Returns ``(array [n_pad, ...], n)``.
    """
    import jax
    from jax.sharding import NamedSharding, PartitionSpec

    x = np.asarray(x)
    n = x.shape[0]
    pad = (-n) % mesh.devices.size
    if pad:
        x = np.concatenate([x, np.repeat(x[-1:], pad, axis=0)])
    sharding = NamedSharding(mesh, PartitionSpec(mesh.axis_names[0]))
    return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx]), n


def local_rows(x, n: int):
    """The rows ``< n`` of a row-sharded jax array ``x`` that this process's devices hold, as numpy blocks in row
    order: a list of ``(first_row, block)`` (each block once, however many devices replicate it)."""
    out = {}
    for shard in x.addressable_shards:
        start = shard.index[0].start or 0
        if start < n and start not in out:
            out[start] = np.asarray(shard.data)[: n - start]
    return sorted(out.items(), key=lambda kv: kv[0])


def free_local_port() -> int:
    """A TCP port free on this machine now, for the coordinator of processes on one host
    (``--coordinator localhost:PORT``: tests, benchmarks, a single-machine multi-process run)."""
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]
