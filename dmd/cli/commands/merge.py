"""``dmd merge``: variational scaling and merging of an unmerged MTZ (analysis.merging).

Scale and merge an unmerged MTZ: Wilson prior, surrogate q(F), MLP scale model, ELBO fit. Writes OUT.mtz (F SIGF I
SIGI on a Wilson-scaled absolute scale, E SIGE normalized, N, [+/- columns]), OUT.json, OUT_shells.csv and
OUT_loss.png / OUT_cc.png / OUT_shells.png (and OUT_friedel.png with --anomalous). careless mono's option names
are accepted as aliases (``CARELESS_ALIASES``: --iterations, --learning-rate, --mlp-layers, --disable-image-scales,
--wilson-prior-b, --test-fraction, --merge-half-datasets, --refine-uncertainties, --studentt-likelihood-dof,
--intensity-key, --uncertainty-key, --image-key, --disable-progress-bar; --mc-samples, --mlp-width, --kl-weight,
--anomalous, --seed are spelled alike).
"""

from __future__ import annotations

import argparse
import os

from dmd.cli.common import add_overwrite_argument, check_input, check_outputs, emit, info

HELP = "scale and merge unmerged intensities by variational inference (careless-style)"


class _StudentT(argparse.Action):
    """careless's ``--studentt-likelihood-dof N``: the Student-t likelihood with N degrees of freedom."""

    def __call__(self, parser, namespace, values, option_string=None):
        namespace.dof = values
        namespace.likelihood = "student"


# careless mono's option names, accepted as aliases (careless 0.5): --iterations, --learning-rate, --mc-samples,
# --mlp-layers, --mlp-width, --disable-image-scales, --wilson-prior-b, --kl-weight, --test-fraction,
# --merge-half-datasets, --refine-uncertainties, --studentt-likelihood-dof, --anomalous, --intensity-key,
# --uncertainty-key, --image-key, --disable-progress-bar, --seed.
CARELESS_ALIASES = {
    "--iterations": "--steps",
    "--learning-rate": "--lr",
    "--mlp-layers": "--mlp-depth",
    "--disable-image-scales": "--no-image-terms",
    "--wilson-prior-b": "--wilson-b",
    "--test-fraction": "--holdout",
    "--merge-half-datasets": "--half-datasets",
    "--refine-uncertainties": "--error-model",
    "--studentt-likelihood-dof": "--likelihood student --dof",
    "--intensity-key": "--intensity",
    "--uncertainty-key": "--sigma",
    "--image-key": "--batch",
    "--disable-progress-bar": "--no-progress",
}


# dmd's option -> its careless spelling (the one-to-one aliases; --studentt-likelihood-dof has its own action)
_CARELESS_SPELLING = {ours: careless for careless, ours in CARELESS_ALIASES.items() if " " not in ours}


def _option(p: argparse.ArgumentParser, name: str, **kwargs) -> None:
    """``p.add_argument(name, **kwargs)``, with ``name``'s careless spelling (:data:`CARELESS_ALIASES`) as an alias."""
    p.add_argument(name, *([_CARELESS_SPELLING[name]] if name in _CARELESS_SPELLING else []), **kwargs)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``dmd merge`` (its parser is made by :func:`dmd.cli.build_parser`)."""
    p.add_argument(
        "unmerged",
        help="unmerged MTZ (H K L M/ISYM BATCH I SIGI [metadata columns]), XDS_ASCII.HKL (metadata XD, YD, ZD; "
        "image = frame of ZD) or CrystFEL stream (one image per crystal; metadata fs/px, ss/px; needs --spacegroup)",
    )
    p.add_argument(
        "--spacegroup",
        default=None,
        help="space group, e.g. 'P 43 21 2': needed for a CrystFEL stream; overrides XDS_ASCII.HKL's, same point group",
    )
    p.add_argument("--out", required=True, help="merged MTZ to write")
    p.add_argument("--anomalous", action="store_true", help="keep Friedel mates apart (F(+)/F(-) columns)")
    p.add_argument(
        "--metadata",
        default="",
        help="comma-separated metadata columns for the scale model, e.g. "
        "XDET,YDET (DHKL is computed from the cell); resolution is always included",
    )
    _option(p, "--intensity", default=None, help="intensity column (default: I or the first J column)")
    _option(p, "--sigma", default=None, help="sigma column (default: SIG<intensity> or SIGI)")
    _option(p, "--batch", default="BATCH", help="image column (default BATCH)")
    p.add_argument(
        "--partials",
        choices=["refuse", "sum", "keep"],
        default="refuse",
        help="partial observations (M/ISYM flag, FRACTIONCALC, PARTIAL, or one hkl on consecutive images): refuse "
        "(default), sum each spot's parts, or keep them as full observations",
    )
    p.add_argument(
        "--likelihood",
        choices=["normal", "student", "auto"],
        default="normal",
        help="error model of I given F; auto: fit Normal, continue with Student-t, keep the one with the higher "
        "held-out CCpred (holds out 5%% when --holdout is 0)",
    )
    p.add_argument("--dof", type=float, default=16.0, help="Student-t degrees of freedom (default 16)")
    p.add_argument(
        "--studentt-likelihood-dof",
        type=float,
        action=_StudentT,
        dest="dof",
        default=argparse.SUPPRESS,
        metavar="DOF",
        help="careless's spelling: --likelihood student --dof DOF",
    )
    p.add_argument("--kl-weight", type=float, default=1.0, help="weight of the KL term (default 1: the ELBO)")
    p.add_argument(
        "--surrogate",
        choices=["truncated_normal", "folded_normal"],
        default="truncated_normal",
        help="variational family of q(F)",
    )
    _option(p, "--error-model", action="store_true", help="learn SdFac/SdB/SdAdd")
    _option(p, "--steps", type=int, default=600, help="optimizer steps (default 600)")
    _option(p, "--lr", type=float, default=0.03, help="Adam learning rate (default 0.03, cosine-decayed)")
    p.add_argument("--mc-samples", type=int, default=8, help="stratified samples of F per step (default 8)")
    p.add_argument("--mlp-width", type=int, default=8, help="hidden width of the scale MLP (default 8)")
    _option(p, "--mlp-depth", type=int, default=2, help="hidden layers of the scale MLP (default 2)")
    _option(p, "--no-image-terms", action="store_true", help="drop the per-image scale and B terms")
    p.add_argument(
        "--image-smooth-sd",
        type=float,
        default=None,
        help="smoothness prior on the per-image log scale: difference between neighbouring images (BATCH one apart) "
        "~ N(0, SD²); for one rotation sweep, e.g. 0.001 (default off: independent images)",
    )
    p.add_argument(
        "--image-b-smooth-sd",
        type=float,
        default=None,
        help="smoothness prior on the per-image B (Å² per image), e.g. 0.1 (default off)",
    )
    _option(p, "--wilson-b", type=float, default=None, help="prior falloff B (Å²); default flat")
    p.add_argument("--batch-images", type=int, default=None, help="images per minibatch (large data)")
    _option(p, "--holdout", type=float, default=0.05, help="fraction of observations held out for CCpred")
    _option(p, "--half-datasets", action="store_true", help="CC1/2 (and CCanom) from random image halves")
    p.add_argument("--half-steps", type=int, default=None, help="steps of each half-dataset refit")
    p.add_argument("--shells", type=int, default=10, help="resolution shells in the summary (default 10)")
    p.add_argument("--seed", type=int, default=0, help="PRNG seed (holdout, Monte Carlo samples)")
    _option(p, "--no-progress", action="store_true", help="no progress bar")
    add_overwrite_argument(p, "OUT.mtz and the files beside it")


def outputs(out: str) -> list[str]:
    """The files ``dmd merge --out OUT`` writes (as :func:`analysis.merging.write_outputs` names them)."""
    stem = os.path.splitext(out)[0]
    return [
        out,
        f"{stem}.json",
        f"{stem}_loss.png",
        f"{stem}_cc.png",
        f"{stem}_shells.csv",
        f"{stem}_shells.png",
        f"{stem}_friedel.png",  # with --anomalous
        f"{stem}_half1.mtz",  # with --half-datasets
        f"{stem}_half2.mtz",
    ]


def run(args) -> int:
    """Run ``dmd merge`` (module docstring).

    Over 100 lines: a linear pipeline (read, report rejects, fit, write, summary) that maps each option onto the
    library's configuration once; split, every piece would take ``args`` and the summary back.
    """
    from dmd.base.errors import UserInputError

    check_input(args.unmerged, "", "unmerged MTZ, XDS_ASCII.HKL or CrystFEL stream")
    if not args.out.lower().endswith(".mtz"):
        raise UserInputError(f"--out {args.out}: give an .mtz path, e.g. merged.mtz")
    check_outputs(args.out, inputs=[args.unmerged], overwrite=args.overwrite, writes=outputs(args.out)[1:])
    if args.steps < 1:
        raise UserInputError(f"--steps {args.steps}: must be ≥ 1")
    if not 0.0 <= args.holdout < 0.5:
        raise UserInputError(f"--holdout {args.holdout}: must be in [0, 0.5)")
    if args.likelihood in ("student", "auto") and args.dof <= 0:
        raise UserInputError(f"--dof {args.dof}: must be > 0")
    for opt, v in (("--image-smooth-sd", args.image_smooth_sd), ("--image-b-smooth-sd", args.image_b_smooth_sd)):
        if v is not None and not v > 0:
            raise UserInputError(f"{opt} {v}: must be > 0 (leave it out for independent images)")

    from analysis.merging import MergeConfig, merge, write_outputs
    from analysis.merging.readers import read_observations
    from analysis.merging.shells import format_shell_table

    metadata = [m.strip() for m in args.metadata.split(",") if m.strip()]
    u = read_observations(
        args.unmerged,
        spacegroup=args.spacegroup,
        anomalous=args.anomalous,
        metadata=metadata,
        intensity=args.intensity,
        sigma=args.sigma,
        batch=args.batch,
        partials=args.partials,
        image_scales=not args.no_image_terms,
    )
    n_bad = sum(v for k, v in u.rejected.items() if k != "partials_summed")
    why = ", ".join(f"{n} {reason}" for reason, n in u.rejected.items() if n and reason != "partials_summed")
    info(
        f"read {args.unmerged}: {u.n_obs} observations of {u.n_refl} unique reflections on {u.n_images} images "
        f"({u.spacegroup}); rejected {n_bad} rows" + (f" ({why})" if why else "")
    )
    config = MergeConfig(
        surrogate=args.surrogate,
        likelihood=args.likelihood,
        dof=args.dof,
        error_model=args.error_model,
        mc_samples=args.mc_samples,
        mlp_width=args.mlp_width,
        mlp_depth=args.mlp_depth,
        image_scales=not args.no_image_terms,
        image_b=not args.no_image_terms,
        image_smooth_sd=args.image_smooth_sd,
        image_b_smooth_sd=args.image_b_smooth_sd,
        wilson_b=args.wilson_b,
        kl_weight=args.kl_weight,
        steps=args.steps,
        learning_rate=args.lr,
        batch_images=args.batch_images,
        holdout_fraction=args.holdout,
        seed=args.seed,
    )
    out = merge(
        u,
        config,
        half_datasets=args.half_datasets,
        half_steps=args.half_steps,
        n_shells=args.shells,
        progress=not args.no_progress,
    )
    paths = write_outputs(args.out, out, inputs=[args.unmerged])
    q = out.quality
    loss = float(out.result.history["loss"][-1])
    lines = [f"dmd merge: {config.steps} steps in {out.timings['fit_s']:.1f} s; final loss {loss:.4g}"]
    summary = {
        "unmerged": args.unmerged,
        "n_obs": u.n_obs,
        "n_unique": u.n_refl,
        "n_images": u.n_images,
        "spacegroup": u.spacegroup,
        "rejected": dict(u.rejected),
        "steps": config.steps,
        "fit_seconds": out.timings["fit_s"],
        "final_loss": loss,
        "outputs": {k: str(p) for k, p in paths.items()},
    }
    if q.get("ccpred"):
        lines.append(f"CCpred (held out, {q['ccpred']['n_obs']} obs): {q['ccpred']['overall']:.3f}")
        summary["ccpred"] = q["ccpred"]["overall"]
    if q.get("likelihood_choice"):
        c = q["likelihood_choice"]
        lines.append(
            f"likelihood auto: {c['chosen']} (held-out CCpred Normal {c['ccpred']['normal']:.3f}, "
            f"Student-t {c['ccpred']['student']:.3f})"
        )
        summary["likelihood_choice"] = c
    for key, label in (("cchalf", "CC1/2"), ("ccanom_half", "CCanom")):
        if key in q:
            shells = " ".join(f"{c:.2f}" for c in q[key]["per_shell"])
            lines.append(f"{label}: {q[key]['overall']:.3f} overall; per shell (low→high res): {shells}")
            summary[key] = {"overall": q[key]["overall"], "per_shell": q[key]["per_shell"]}
    w = out.wilson
    if "scale_k" in w:
        lines.append(
            f"Wilson scale k {w['scale_k']:.4g} (input units per e^2), B {w['b_wilson']:.1f} A^2 ({w['sigma_n']})"
        )
    else:
        lines.append(f"no absolute scale ({w['failed']}): F, SIGF, I, SIGI on the normalized scale")
    lines.append(format_shell_table(q["shells"]))
    summary.update(wilson=w, shells=q["shells"])
    lines.append("wrote " + ", ".join(str(p) for p in paths.values()))
    emit(args, summary, "\n".join(lines))
    return 0
