"""Make tests/data/tripeptide_charmm.pdb: ALA-VAL-PHE (villin residues 8-10 of OpenMM's test.pdb), zwitterionic
termini, hydrogens from Modeller.addHydrogens(charmm36); OXT placed at the next residue's N position."""

import openmm.app as app
from villin import villin, write_with_hydrogens

pdb, res, pos = villin()
top = app.Topology()
ch = top.addChain()
coords, made = [], {}
for r in res[7:10]:
    nr = top.addResidue(r.name, ch)
    for a in r.atoms():
        if a.element.symbol == "H":
            continue
        made[a] = top.addAtom(a.name, a.element, nr)
        coords.append(pos[a.index])
last = list(top.residues())[-1]
oxt = top.addAtom("OXT", app.Element.getBySymbol("O"), last)
coords.append(pos[[a for a in res[10].atoms() if a.name == "N"][0].index])
for a, b in pdb.topology.bonds():
    if a in made and b in made:
        top.addBond(made[a], made[b])
top.addBond([a for a in last.atoms() if a.name == "C"][0], oxt)
write_with_hydrogens(top, coords, "charmm36.xml", "tripeptide_charmm.pdb")
