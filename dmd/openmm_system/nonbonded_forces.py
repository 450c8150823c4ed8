"""NonbondedForce (Coulomb + LJ, NoCutoff/CutoffPeriodic/PME) and CHARMM's CustomNonbondedForce (tabulated LJ)
and CustomBondForce (1-4 LJ), converted to :mod:`dmd.forces.nonbonded` specs and θ."""

from __future__ import annotations

import dataclasses

import numpy as np

from dmd.base.errors import UserInputError
from dmd.forces import nonbonded
from dmd.forces.numba_pairs import KERNELS
from dmd.forces.pme import pme_grid_parameters
from dmd.openmm_system.common import index_label, unique_labels, value

_TAB_LJ = {"acoef(type1,type2)/r^12-bcoef(type1,type2)/r^6", "acoef(type1,type2)/r^12-bcoef(type1,type2)/r^6;"}
_LJ14 = {"4*epsilon*((sigma/r)^12-(sigma/r)^6)", "4*epsilon*((sigma/r)^12-(sigma/r)^6);"}


def pme_parameters(openmm_system, force, pos):
    """OpenMM's PME α (1/nm) and grid: the force's explicit values, else OpenMM's rule from its
    ``ewaldErrorTolerance`` (:func:`dmd.forces.pme.pme_grid_parameters`), else (a partial explicit setting)
    OpenMM's own choice from a throw-away Reference context."""
    import openmm as mm
    import openmm.unit as unit

    alpha, nx, ny, nz = force.getPMEParameters()
    alpha = value(alpha, unit.nanometer**-1)
    if alpha > 0 and nx > 0:
        return float(alpha), (int(nx), int(ny), int(nz))
    if alpha == 0:
        vecs = openmm_system.getDefaultPeriodicBoxVectors()
        box = np.array([[value(v[k], unit.nanometer) for k in range(3)] for v in vecs])
        cutoff = value(force.getCutoffDistance(), unit.nanometer)
        return pme_grid_parameters(cutoff, box, force.getEwaldErrorTolerance())
    sys_copy = mm.System()
    for i in range(openmm_system.getNumParticles()):
        sys_copy.addParticle(openmm_system.getParticleMass(i))
    sys_copy.setDefaultPeriodicBoxVectors(*openmm_system.getDefaultPeriodicBoxVectors())
    f = mm.XmlSerializer.clone(force)
    sys_copy.addForce(f)
    ctx = mm.Context(sys_copy, mm.VerletIntegrator(0.001), mm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(pos)
    alpha, nx, ny, nz = f.getPMEParametersInContext(ctx)
    del ctx
    return float(alpha), (int(nx), int(ny), int(nz))


def _lj_types(sigma, epsilon, atom_types):
    """Group atoms into LJ types: by force-field type name when consistent, else by (σ, ε) values."""
    n = len(sigma)
    if atom_types is not None and len(atom_types) == n:
        names, index = [], np.zeros(n, dtype=np.int32)
        key_of = {}
        for i, t in enumerate(atom_types):
            key = (t, sigma[i], epsilon[i])
            if key not in key_of:
                key_of[key] = len(names)
                names.append(t)
            index[i] = key_of[key]
        labels = unique_labels(names)
    else:
        keys = {}
        index = np.zeros(n, dtype=np.int32)
        for i in range(n):
            index[i] = keys.setdefault((sigma[i], epsilon[i]), len(keys))
        labels = tuple(f"lj{k}" for k in range(len(keys)))
    t_count = len(labels)
    sig_t = np.zeros(t_count)
    eps_t = np.zeros(t_count)
    sig_t[index] = sigma
    eps_t[index] = epsilon
    return index, sig_t, eps_t, labels


def convert_nonbonded(force, n, atom_types, atom_labels, box):
    import openmm as mm
    import openmm.unit as unit

    method_map = {
        mm.NonbondedForce.NoCutoff: "NoCutoff",
        mm.NonbondedForce.CutoffPeriodic: "CutoffPeriodic",
        mm.NonbondedForce.PME: "PME",
    }
    m = force.getNonbondedMethod()
    if m not in method_map:
        names = {mm.NonbondedForce.CutoffNonPeriodic: "CutoffNonPeriodic", mm.NonbondedForce.Ewald: "Ewald"}
        raise UserInputError(
            f"NonbondedForce method {names.get(m, 'LJPME')} is not supported; use NoCutoff, CutoffPeriodic or PME"
        )
    method = method_map[m]
    q = np.zeros(n)
    sig = np.zeros(n)
    eps = np.zeros(n)
    for i in range(n):
        c, s, e = force.getParticleParameters(i)
        q[i], sig[i], eps[i] = (
            value(c, unit.elementary_charge),
            value(s, unit.nanometer),
            value(e, unit.kilojoule_per_mole),
        )
    if force.getNumParticleParameterOffsets() or force.getNumExceptionParameterOffsets():
        raise UserInputError("NonbondedForce parameter offsets are not supported")
    tindex, sig_t, eps_t, tlabels = _lj_types(sig, eps, atom_types)
    seps = np.sqrt(eps_t[tindex])
    excluded, exc = [], []
    e2 = unit.elementary_charge**2  # once: a new Unit object per exception cost more than the conversion
    for k in range(force.getNumExceptions()):
        i, j, cp, s, e = force.getExceptionParameters(k)
        i, j = (i, j) if i < j else (j, i)
        excluded.append((i, j))
        cp, s, e = value(cp, e2), value(s, unit.nanometer), value(e, unit.kilojoule_per_mole)
        if cp == 0.0 and e == 0.0:
            continue
        qq = q[i] * q[j]
        q_scale = cp / qq if qq != 0.0 else 0.0
        q_fixed = 0.0 if qq != 0.0 else cp
        se = seps[i] * seps[j]
        e_scale = e / se if se != 0.0 else 0.0
        e_fixed = 0.0 if se != 0.0 else e
        mix = 0.5 * (sig[i] + sig[j])
        sig_mix = abs(s - mix) <= 1e-12 * max(abs(mix), 1e-30)
        exc.append((i, j, q_scale, q_fixed, e_scale, e_fixed, sig_mix, s))
    excluded = np.array(excluded, dtype=np.int32).reshape(-1, 2)
    exc_pairs = np.array([[r[0], r[1]] for r in exc], dtype=np.int32).reshape(-1, 2)
    col = lambda k, dt=np.float64: np.array([r[k] for r in exc], dtype=dt)  # noqa: E731
    cutoff = None if method == "NoCutoff" else float(value(force.getCutoffDistance(), unit.nanometer))
    nocutoff_pairs = None
    if method == "NoCutoff":
        iu, ju = np.triu_indices(n, 1)
        keep = np.ones(len(iu), dtype=bool)
        if len(excluded):
            key = iu.astype(np.int64) * n + ju
            keep = ~np.isin(key, excluded[:, 0].astype(np.int64) * n + excluded[:, 1])
        nocutoff_pairs = np.stack([iu[keep], ju[keep]], axis=1).astype(np.int32)
    switch = None
    if method != "NoCutoff" and force.getUseSwitchingFunction():
        switch = float(value(force.getSwitchingDistance(), unit.nanometer))
        if force.getUseDispersionCorrection():
            raise UserInputError("a switching function together with the dispersion correction is not supported yet")
    spec = nonbonded.NonbondedSpec(
        method=method,
        cutoff=cutoff,
        type_index=tindex,
        type_counts=np.bincount(tindex, minlength=len(tlabels)),
        excluded=excluded,
        exc_pairs=exc_pairs,
        exc_q_scale=col(2),
        exc_q_fixed=col(3),
        exc_eps_scale=col(4),
        exc_eps_fixed=col(5),
        exc_sig_mix=col(6, bool),
        exc_sig_fixed=col(7),
        exceptions_periodic=bool(force.getExceptionsUsePeriodicBoundaryConditions()) and method != "NoCutoff",
        rf_dielectric=float(force.getReactionFieldDielectric()),
        switch_distance=switch,
        dispersion_correction=bool(force.getUseDispersionCorrection()) and method != "NoCutoff",
        nocutoff_pairs=nocutoff_pairs,
    )
    params = {"charge": q, "sigma": sig_t, "epsilon": eps_t}
    labels = {"charge": atom_labels, "sigma": tlabels, "epsilon": tlabels}
    return spec, params, labels


def convert_tabulated_lj(force, n, atom_types):
    import openmm as mm

    expr = force.getEnergyFunction().replace(" ", "")
    if (
        expr not in _TAB_LJ
        or force.getNumPerParticleParameters() != 1
        or force.getNumTabulatedFunctions() != 2
        or force.getNumGlobalParameters()
        or force.getNumInteractionGroups()
        or force.getNumComputedValues()
    ):
        raise UserInputError(f"CustomNonbondedForce {expr!r} is not supported (only CHARMM's tabulated LJ)")
    if force.getUseLongRangeCorrection() and force.getNonbondedMethod() != mm.CustomNonbondedForce.NoCutoff:
        raise UserInputError("the LJ long-range correction of CustomNonbondedForce is not supported yet; use NoCutoff")
    m = force.getNonbondedMethod()
    methods = {mm.CustomNonbondedForce.NoCutoff: "NoCutoff", mm.CustomNonbondedForce.CutoffPeriodic: "CutoffPeriodic"}
    if m not in methods:
        raise UserInputError("CustomNonbondedForce CutoffNonPeriodic is not supported")
    method = methods[m]
    tables = {}
    for k in range(2):
        nx, ny, values = force.getTabulatedFunction(k).getFunctionParameters()
        tables[force.getTabulatedFunctionName(k)] = np.array(values, dtype=np.float64).reshape(ny, nx).T
    a, b = tables["acoef"], tables["bcoef"]
    nt = a.shape[0]
    diag_a, diag_b = np.diag(a), np.diag(b)
    ok = (diag_a > 0) & (diag_b > 0)
    sig_t = np.where(ok, (np.where(ok, diag_a, 1) / np.where(ok, diag_b, 1)) ** (1 / 6), 0.1)
    eps_t = np.where(ok, diag_b**2 / (4 * np.where(ok, diag_a, 1)), 0.0)
    tindex = np.array([int(round(force.getParticleParameters(i)[0])) for i in range(n)], dtype=np.int32)
    nbfix, nbfix_sig, nbfix_eps = [], [], []
    for i in range(nt):
        for j in range(i, nt):
            s = 0.5 * (sig_t[i] + sig_t[j])
            e = np.sqrt(eps_t[i] * eps_t[j])
            ea, eb = 4 * e * s**12, 4 * e * s**6
            if abs(ea - a[i, j]) > 1e-9 * max(abs(a[i, j]), 1e-30) or abs(eb - b[i, j]) > 1e-9 * max(
                abs(b[i, j]), 1e-30
            ):
                okp = a[i, j] > 0 and b[i, j] > 0
                nbfix.append((i, j))
                nbfix_sig.append((a[i, j] / b[i, j]) ** (1 / 6) if okp else 0.1)
                nbfix_eps.append(b[i, j] ** 2 / (4 * a[i, j]) if okp else 0.0)
    names = [[] for _ in range(nt)]
    if atom_types is not None:
        for i, t in enumerate(atom_types):
            if t not in names[tindex[i]]:
                names[tindex[i]].append(t)
    tlabels = unique_labels("+".join(v) if v else f"type{k}" for k, v in enumerate(names))
    excl = {tuple(sorted(force.getExclusionParticles(k))) for k in range(force.getNumExclusions())}
    pairs = None
    if method == "NoCutoff":
        iu, ju = np.triu_indices(n, 1)
        keep = np.ones(len(iu), dtype=bool)
        if excl:
            ex = np.array(sorted(excl), dtype=np.int64)
            keep = ~np.isin(iu.astype(np.int64) * n + ju, ex[:, 0] * n + ex[:, 1])
        pairs = np.stack([iu[keep], ju[keep]], axis=1).astype(np.int32)
    import openmm.unit as unit

    switch = float(value(force.getSwitchingDistance(), unit.nanometer)) if force.getUseSwitchingFunction() else None
    spec = nonbonded.TabulatedLJSpec(
        method=method,
        cutoff=None if method == "NoCutoff" else float(value(force.getCutoffDistance(), unit.nanometer)),
        type_index=tindex,
        nbfix_pairs=np.array(nbfix, dtype=np.int32).reshape(-1, 2),
        pairs=pairs,
        switch_distance=switch if method != "NoCutoff" else None,
    )
    params = {"sigma": sig_t, "epsilon": eps_t}
    labels = {"sigma": tlabels, "epsilon": tlabels}
    if nbfix:
        params.update(nbfix_sigma=np.array(nbfix_sig), nbfix_epsilon=np.array(nbfix_eps))
        nl = unique_labels(f"{tlabels[i]}:{tlabels[j]}" for i, j in nbfix)
        labels.update(nbfix_sigma=nl, nbfix_epsilon=nl)
    return spec, params, labels


def nonbonded_term(force, openmm_system, n, atom_types, atom_labels, box, pos, metadata, pair_kernel="auto"):
    """NonbondedForce as ``(spec, params, labels, fn)``; records the method, cutoff and PME grid in ``metadata``.
    ``pair_kernel``: :attr:`dmd.forces.nonbonded.NonbondedSpec.pair_kernel`."""
    spec, params, labels = convert_nonbonded(force, n, atom_types, atom_labels, box)
    if pair_kernel not in KERNELS:
        raise UserInputError(f"pair_kernel {pair_kernel!r}: pass one of {', '.join(KERNELS)}")
    spec = dataclasses.replace(spec, pair_kernel=pair_kernel)
    if spec.method != "NoCutoff":
        metadata.update(
            nonbonded_method=spec.method,
            cutoff_nm=spec.cutoff,
            dispersion_correction=spec.dispersion_correction,
            switch_distance_nm=spec.switch_distance,
            pair_kernel=pair_kernel,
        )
        if spec.method == "PME":
            alpha, grid = pme_parameters(openmm_system, force, pos)
            spec = dataclasses.replace(spec, alpha=alpha, grid=grid)
            metadata.update(pme_alpha=alpha, pme_grid=list(grid), pme_order=5)
        if spec.method == "CutoffPeriodic":
            metadata.update(reaction_field_dielectric=spec.rf_dielectric)
    return spec, params, labels, lambda p, x, b, nb, spec=spec: nonbonded.nonbonded_energy(spec, p, x, b, nb)


def tabulated_lj_term(force, openmm_system, n, atom_types, neighbor_cutoff):
    """CHARMM's CustomNonbondedForce as ``(spec, params, labels, fn)``.

    ``neighbor_cutoff`` (nm or None) is the NonbondedForce's cutoff, which a cutoff CustomNonbondedForce must share,
    as it must share that force's exclusions (one neighbour list serves both).
    """
    import openmm as mm

    spec, params, labels = convert_tabulated_lj(force, n, atom_types)
    custom_excl = {tuple(sorted(force.getExclusionParticles(k))) for k in range(force.getNumExclusions())}
    nb_forces = [f for f in openmm_system.getForces() if isinstance(f, mm.NonbondedForce)]
    nb_excl = (
        {tuple(sorted(nb_forces[0].getExceptionParameters(k)[:2])) for k in range(nb_forces[0].getNumExceptions())}
        if nb_forces
        else set()
    )
    if spec.method != "NoCutoff" and custom_excl != nb_excl:
        raise UserInputError(
            "CustomNonbondedForce exclusions differ from the NonbondedForce exceptions; not supported with cutoffs"
        )
    if spec.method != "NoCutoff":
        if neighbor_cutoff is not None and abs(neighbor_cutoff - spec.cutoff) > 1e-12:
            raise UserInputError("CustomNonbondedForce and NonbondedForce cutoffs differ; not supported")
    return spec, params, labels, lambda p, x, b, nb, spec=spec: nonbonded.tabulated_lj_energy(spec, p, x, b, nb)


def lj14_term(force):
    """CHARMM's 1-4 LJ CustomBondForce as ``(params, labels, fn)``: θ ``sigma`` nm, ``epsilon`` kJ/mol per pair."""
    expr = force.getEnergyFunction().replace(" ", "")
    pnames = [force.getPerBondParameterName(i) for i in range(force.getNumPerBondParameters())]
    if expr not in _LJ14 or sorted(pnames) != ["epsilon", "sigma"] or force.getNumGlobalParameters():
        raise UserInputError(f"CustomBondForce {expr!r} is not supported (only CHARMM's 1-4 LJ)")
    if force.usesPeriodicBoundaryConditions():
        raise UserInputError("periodic CustomBondForce is not supported")
    rows = [force.getBondParameters(i) for i in range(force.getNumBonds())]
    idx = np.array([r[:2] for r in rows], dtype=np.int32).reshape(-1, 2)
    vals = np.array([list(r[2]) for r in rows], dtype=np.float64).reshape(-1, 2)
    lab = unique_labels(index_label(i) for i in idx)
    return (
        {"sigma": vals[:, pnames.index("sigma")], "epsilon": vals[:, pnames.index("epsilon")]},
        {"sigma": lab, "epsilon": lab},
        lambda p, x, b, nb, idx=idx: nonbonded.lj_bond_energy(p["sigma"], p["epsilon"], x, idx),
    )
