"""Make tests/data/alanine_dipeptide.pdb: ACE-ALA-NME cut from villin (test.pdb) residue ALA 7, H by Modeller."""

import os
import openmm.app as app, openmm as mm, openmm.unit as u

d = os.path.dirname(app.__file__) + "/data"
pdb = app.PDBFile(d + "/test.pdb")
res = list(pdb.topology.residues())
pos = pdb.positions
top = app.Topology()
ch = top.addChain()


def atom(r, name, el, src):
    a = top.addAtom(name, app.Element.getBySymbol(el), r)
    coords.append(pos[src.index])
    return a


coords = []
prev, ala, nxt = res[6], res[7], res[8]
get = lambda r, n: [a for a in r.atoms() if a.name == n][0]
r0 = top.addResidue("ACE", ch)
c_ch3 = atom(r0, "CH3", "C", get(prev, "CA"))
c_c = atom(r0, "C", "C", get(prev, "C"))
c_o = atom(r0, "O", "O", get(prev, "O"))
r1 = top.addResidue("ALA", ch)
a = {n: atom(r1, n, n[0], get(ala, n)) for n in ["N", "CA", "CB", "C", "O"]}
r2 = top.addResidue("NME", ch)
n_n = atom(r2, "N", "N", get(nxt, "N"))
n_c = atom(r2, "C", "C", get(nxt, "CA"))
for x, y in [
    (c_ch3, c_c),
    (c_c, c_o),
    (c_c, a["N"]),
    (a["N"], a["CA"]),
    (a["CA"], a["CB"]),
    (a["CA"], a["C"]),
    (a["C"], a["O"]),
    (a["C"], n_n),
    (n_n, n_c),
]:
    top.addBond(x, y)
import numpy as np

m = app.Modeller(top, u.Quantity(np.array([c.value_in_unit(u.nanometer) for c in coords]), u.nanometer))
ff = app.ForceField("amber14-all.xml")
m.addHydrogens(ff)
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "alanine_dipeptide.pdb")
with open(out, "w") as f:
    app.PDBFile.writeFile(m.topology, m.positions, f)
print(m.topology.getNumAtoms())
