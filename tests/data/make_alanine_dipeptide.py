"""Make alanine_dipeptide.pdb: ACE-ALA-NME cut from villin (OpenMM's test.pdb, residues LYS7-ALA8-VAL9).

ACE = CA, C, O of residue 7; ALA = heavy atoms of residue 8; NME = N, CA of residue 9; hydrogens
are added by Modeller.addHydrogens(amber14-all).
"""

import openmm.app as app
from villin import villin, write_with_hydrogens

pdb, res, pos = villin()
top = app.Topology()
chain = top.addChain()
coords = []


def get(r, name):
    return [a for a in r.atoms() if a.name == name][0]


def atom(r, name, element, src):
    coords.append(pos[src.index])
    return top.addAtom(name, app.Element.getBySymbol(element), r)


prev, ala, nxt = res[6], res[7], res[8]
r0 = top.addResidue("ACE", chain)
ch3 = atom(r0, "CH3", "C", get(prev, "CA"))
c, o = atom(r0, "C", "C", get(prev, "C")), atom(r0, "O", "O", get(prev, "O"))
r1 = top.addResidue("ALA", chain)
a = {n: atom(r1, n, n[0], get(ala, n)) for n in ["N", "CA", "CB", "C", "O"]}
r2 = top.addResidue("NME", chain)
n_n, n_c = atom(r2, "N", "N", get(nxt, "N")), atom(r2, "C", "C", get(nxt, "CA"))
bonds = [(ch3, c), (c, o), (c, a["N"]), (a["N"], a["CA"]), (a["CA"], a["CB"]), (a["CA"], a["C"]), (a["C"], a["O"])]
for x, y in bonds + [(a["C"], n_n), (n_n, n_c)]:
    top.addBond(x, y)
write_with_hydrogens(top, coords, "amber14-all.xml", "alanine_dipeptide.pdb")
