"""Generate synthetic training data and fit the indexing prior (writes prior_weights.npz).

Usage::

    python -m analysis.indexing.train_prior --n-per-system 3000 --out analysis/indexing/prior_weights.npz
    python -m analysis.indexing.train_prior --n-per-system 600 --epochs 0     # table only, quick

Per lattice system, patterns are drawn from every Bravais lattice of the system with
random gemmi space groups (synth.py), half clean and half with the error model. From
each pattern we record (1) the vocabulary row of each of the first 10 lines in the
canonical reduced setting (prior.assignment_labels) and (2) which reference rows the
first 20 lines use. Saved arrays, per system:

* ``table``  ``[10, V]``: Laplace-smoothed log p(row | peak position);
* ``ref_order`` ``[n]``: reference rows used by any training pattern, most used first,
  then the remaining rows by index size (search.py truncates this list);
* ``w1, b1, w2, b2``: the peak-conditioned MLP (prior.py), trained with optax Adam on
  the masked cross-entropy of the labels (skipped with ``--epochs 0``).

Deterministic for a given ``--seed``. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import analysis.indexing.prior as prior_mod
import analysis.indexing.synth as synth
from analysis.indexing.reference import SEARCH_SYSTEMS, reference_rows

BRAVAIS_BY_SYSTEM = {
    "cubic": ("cP", "cI", "cF"),
    "tetragonal": ("tP", "tI"),
    "hexagonal": ("hP", "hR"),
    "orthorhombic": ("oP", "oC", "oI", "oF"),
    "monoclinic": ("mP", "mC"),
    "triclinic": ("aP",),
}


def make_dataset(system: str, n: int, rng: np.random.Generator, n_peaks: int = 20):
    """(features [n, 19], labels [n, 10], row-usage counts [n_ref]) for one system."""
    ref = reference_rows(system)
    feats, labels = [], []
    usage = np.zeros(ref.rows.shape[0])
    brs = BRAVAIS_BY_SYSTEM[system]
    for i in range(n):
        errors = synth.ErrorModel() if i % 2 else None
        pat = synth.synthetic_pattern(brs[i % len(brs)], rng, n_peaks=n_peaks, errors=errors)
        feats.append(prior_mod.peak_features(pat.inv_d2))
        true_q = np.asarray(synth.cell_mod.inv_d2(pat.hkl.astype(float), pat.cell))
        true_q = np.where(pat.impurity, np.nan, true_q)
        labels.append(prior_mod.assignment_labels(true_q, pat.cell, system))
        x = prior_mod.canonical_x(pat.cell, system)
        inv_d2_ref = ref.rows @ x
        hit = np.abs(true_q[:, None] - inv_d2_ref[None, :]) <= 1e-6 * true_q[:, None]
        used = hit.any(axis=1)
        usage[np.argmax(hit[used], axis=1)] += 1
    return np.array(feats), np.array(labels), usage


def fit_table(labels: np.ndarray, v: int, alpha: float = 0.5) -> np.ndarray:
    """Laplace-smoothed log-frequencies ``[10, V]`` of labels (−1 ignored)."""
    counts = np.full((prior_mod.N_FIRST_MAX, v), alpha)
    for i in range(prior_mod.N_FIRST_MAX):
        lab = labels[:, i]
        np.add.at(counts[i], lab[lab >= 0], 1.0)
    return np.log(counts / counts.sum(axis=1, keepdims=True))


def fit_mlp(feats, labels, table, *, hidden: int = 64, epochs: int = 30, seed: int = 0, lr: float = 3e-3):
    """Train the peak-conditioned MLP (residual logits on top of the table) with optax Adam."""
    import jax
    import jax.numpy as jnp
    import optax

    n_first, v = table.shape
    key = jax.random.PRNGKey(seed)
    k1, k2 = jax.random.split(key)
    f = jnp.asarray(feats, jnp.float32)
    mu, sd = f.mean(0), f.std(0) + 1e-6
    params = {
        "w1": jax.random.normal(k1, (f.shape[1], hidden)) / np.sqrt(f.shape[1]),
        "b1": jnp.zeros(hidden),
        "w2": jax.random.normal(k2, (hidden, n_first * v)) * 0.01,
        "b2": jnp.zeros(n_first * v),
    }
    lab = jnp.asarray(labels)
    tab = jnp.asarray(table, jnp.float32)

    def loss(p, fb, lb):
        h = jax.nn.gelu(((fb - mu) / sd) @ p["w1"] + p["b1"])
        logits = (h @ p["w2"] + p["b2"]).reshape(-1, n_first, v) + tab
        logp = jax.nn.log_softmax(logits, -1)
        mask = lb >= 0
        ll = jnp.take_along_axis(logp, jnp.maximum(lb, 0)[..., None], -1)[..., 0]
        return -jnp.sum(ll * mask) / jnp.maximum(mask.sum(), 1)

    opt = optax.adam(lr)
    state = opt.init(params)

    @jax.jit
    def update(p, s, fb, lb):
        val, grads = jax.value_and_grad(loss)(p, fb, lb)
        upd, s = opt.update(grads, s, p)
        return optax.apply_updates(p, upd), s, val

    rng = np.random.default_rng(seed)
    n = f.shape[0]
    n_val = max(n // 10, 1)
    perm = rng.permutation(n)
    val_i, tr_i = perm[:n_val], perm[n_val:]
    bs = 256
    for ep in range(epochs):
        order = rng.permutation(tr_i)
        for s0 in range(0, order.size, bs):
            b = order[s0 : s0 + bs]
            params, state, _ = update(params, state, f[b], lab[b])
        if ep % 10 == 9 or ep == epochs - 1:
            print(f"    epoch {ep + 1}: val NLL {float(loss(params, f[val_i], lab[val_i])):.3f}", flush=True)
    table_nll = float(loss({**params, "w2": params["w2"] * 0, "b2": params["b2"] * 0}, f[val_i], lab[val_i]))
    print(f"    table-only val NLL {table_nll:.3f}", flush=True)
    # fold the input standardization into the first layer so prior.py needs raw features only
    w1 = np.asarray(params["w1"]) / np.asarray(sd)[:, None]
    b1 = np.asarray(params["b1"]) - np.asarray(mu / sd) @ np.asarray(params["w1"])
    # float32 on disk keeps the shipped file small (< 2 MB for all systems)
    out = {"w1": w1, "b1": b1, "w2": np.asarray(params["w2"]), "b2": np.asarray(params["b2"])}
    return {k: np.asarray(v, np.float32) for k, v in out.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-per-system", type=int, default=3000)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--hidden", type=int, default=96)
    ap.add_argument("--seed", type=int, default=12345)
    ap.add_argument("--systems", default=",".join(SEARCH_SYSTEMS))
    ap.add_argument("--out", default=prior_mod.DEFAULT_WEIGHTS)
    args = ap.parse_args(argv)
    arrays = {}
    for system in args.systems.split(","):
        t0 = time.time()
        rng = np.random.default_rng([args.seed, SEARCH_SYSTEMS.index(system)])
        feats, labels, usage = make_dataset(system, args.n_per_system, rng)
        v = prior_mod.VOCAB_SIZE[system]
        table = fit_table(labels, v)
        used = np.flatnonzero(usage > 0)
        used = used[np.argsort(-usage[used], kind="stable")]
        rest = np.setdiff1d(np.arange(usage.size), used)
        arrays[f"{system}/table"] = table
        arrays[f"{system}/ref_order"] = np.concatenate([used, rest]).astype(np.int32)
        arrays[f"{system}/ref_used"] = np.int32(used.size)
        print(
            f"{system}: {args.n_per_system} patterns, label coverage {np.mean(labels >= 0):.3f}, "
            f"{used.size} reference rows used, {time.time() - t0:.1f}s",
            flush=True,
        )
        if args.epochs > 0:
            mlp = fit_mlp(feats, labels, table, hidden=args.hidden, epochs=args.epochs, seed=args.seed)
            arrays.update({f"{system}/{k}": val for k, val in mlp.items()})
    from dmd.base.io import savez

    savez(args.out, **arrays)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
