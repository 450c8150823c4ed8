"""Input parsing and validation of powder peak lists (analysis.indexing.peaks)."""

import re

import numpy as np
import pytest

from analysis import cell as cell_mod
from analysis.indexing import peaks_from_values, read_peak_file
from dmd.base.errors import UserInputError

Q2 = np.array([0.0123, 0.0310, 0.0452, 0.0611, 0.0799, 0.0943, 0.1100, 0.1302, 0.1450, 0.1601, 0.1800, 0.2000])


def test_three_unit_conventions_agree():
    lam = 1.5406
    tth = cell_mod.two_theta_from_inv_d2(Q2, lam)
    a = peaks_from_values(tth, "2theta", wavelength=lam)
    b = peaks_from_values(1 / np.sqrt(Q2)[::1], "d")
    c = peaks_from_values(Q2, "q2")
    # float64 round trip of sin/arcsin: relative error ~1e-15; 1e-12 leaves margin
    np.testing.assert_allclose(a.inv_d2, Q2, rtol=1e-12)
    np.testing.assert_allclose(b.inv_d2, Q2, rtol=1e-12)
    np.testing.assert_allclose(c.inv_d2, Q2, rtol=0)
    np.testing.assert_allclose(a.two_theta, tth, rtol=0)


@pytest.mark.parametrize(
    "values, units, kw, match",
    [
        (Q2[:3], "q2", {}, "needs at least"),
        (np.r_[Q2[:5], Q2[4], Q2[5:]], "q2", {}, "duplicates"),
        (np.r_[-0.01, Q2], "q2", {}, "non-positive"),
        (np.r_[Q2[:5], np.nan, Q2[5:]], "q2", {}, "not a finite"),
        (Q2, "furlongs", {}, "unknown units"),
        (np.linspace(10, 80, 12), "2theta", {}, "need the wavelength"),
        (np.linspace(10, 190, 12), "2theta", {"wavelength": 1.54}, r"peak 12: 2θ = 190° is outside \(0, 180\)"),
        (np.r_[-5.0, np.linspace(10, 80, 11)], "2theta", {"wavelength": 1.54}, "peak 1: non-positive"),
        (np.r_[Q2[:5], np.inf, Q2[5:]], "q2", {}, "peak 6: position inf is not a finite"),
        # d-spacings passed as 2θ: falling, all below 20
        (1 / np.sqrt(Q2), "2theta", {"wavelength": 1.5406}, "look like d-spacings.*--units d"),
        # 2θ passed as d: rising up to 80
        (np.linspace(10, 80, 12), "d", {}, "look like 2θ.*--units 2theta"),
        # 2θ passed as q²: far beyond any 1/d²
        (np.linspace(10, 80, 12), "q2", {}, "is not a diffraction line.*--units"),
        # d passed as q²: falling and above 1 Å⁻²
        (1 / np.sqrt(Q2), "q2", {}, "look like d-spacings.*--units d"),
        (np.linspace(10, 80, 12), "2theta", {"wavelength": -1.0}, "not positive"),
        (1 / np.sqrt(Q2), "d", {"intensities": np.ones(3)}, "intensities"),
    ],
)
def test_bad_input_raises_with_fix(values, units, kw, match):
    with pytest.raises(UserInputError, match=match):
        peaks_from_values(values, units, system="cubic" if len(values) > 3 else None, **kw)


def test_unsorted_lines_are_refused_with_the_fix():
    # one swapped pair: the message cites the first line out of order and the sort that fixes it
    q2 = Q2.copy()
    q2[[4, 5]] = q2[[5, 4]]
    with pytest.raises(UserInputError, match=r"shuffled.txt: peak 6: .*out of order.*ascending order.*sort -g"):
        peaks_from_values(q2, "q2", source="shuffled.txt")
    # d-spacings rising but short (below the 2θ-like range): must be descending, fix says so
    with pytest.raises(UserInputError, match=r"descending \(largest d first\).*sort -gr"):
        peaks_from_values(np.sqrt(Q2), "d")
    # a list in order passes and carries no note
    assert peaks_from_values(Q2, "q2").notes == ()


def test_duplicates_named_even_when_unsorted():
    with pytest.raises(UserInputError, match=r"peaks: peak 1 and peak 7 are duplicates.*remove the repeated"):
        peaks_from_values(np.r_[Q2[6], Q2[:5], Q2[6], Q2[7:]], "q2")


def test_reversed_two_theta_list_is_refused_not_called_d():
    # a falling 2θ list above the d-spacing range is a 2θ list in the wrong order, not d-spacings
    tth = cell_mod.two_theta_from_inv_d2(Q2, 1.5406)
    with pytest.raises(UserInputError, match=r"out of order.*ascending order.*sort -g"):
        peaks_from_values(tth[::-1], "2theta", wavelength=1.5406)


def test_min_peaks_depends_on_lattice():
    peaks_from_values(Q2[:4], "q2", system="cubic")  # 4 lines are enough for one parameter
    with pytest.raises(UserInputError, match="triclinic lattice system needs at least 12.*cubic 4"):
        peaks_from_values(Q2[:11], "q2", system="triclinic")
    with pytest.raises(UserInputError, match="3 peaks given but indexing in any lattice system needs at least 4"):
        peaks_from_values(Q2[:3], "q2")


def test_read_file_header_and_override(tmp_path):
    f = tmp_path / "p.txt"
    lines = "\n".join(f"{v:.6f} {10 * i + 1}" for i, v in enumerate(Q2))
    f.write_text(f"# units: q2\n# wavelength: 1.5406\n{lines}\n")
    pk = read_peak_file(f)
    np.testing.assert_allclose(pk.inv_d2, np.round(Q2, 6), rtol=0)
    assert pk.intensity is not None and pk.intensity[0] == 1.0
    assert pk.wavelength == 1.5406 and pk.two_theta is not None
    g = tmp_path / "nounits.txt"
    g.write_text(lines + "\n")
    with pytest.raises(UserInputError, match="units unknown"):
        read_peak_file(g)
    assert read_peak_file(g, units="q2").n == Q2.size
    h = tmp_path / "bad.txt"
    h.write_text("# units: d\n1.0\nabc\n")
    with pytest.raises(UserInputError, match=r"bad.txt:3"):
        read_peak_file(h)
    n = tmp_path / "nan.txt"
    n.write_text("# units: q2\n" + "\n".join(f"{v:.6f}" for v in Q2[:4]) + "\nnan\n" + f"{Q2[5]}\n")
    with pytest.raises(UserInputError, match=r"nan.txt:6: position nan is not a finite number"):
        read_peak_file(n)
    with pytest.raises(UserInputError, match="no such peak file"):
        read_peak_file(tmp_path / "missing.txt", units="d")


def test_cli_rejects_bad_lists_before_the_search(tmp_path, capsys):
    """`dmd index` validates the list before the search starts (no progress bar, exit 2, the fix named)."""
    from dmd.cli import main

    cases = {
        "nan.txt": ("20.1\n25.3\nnan\n30.2\n35.0\n", "not a finite number; remove or fix that line"),
        "dup.txt": ("20.1\n25.3\n25.3\n30.2\n35.0\n40.0\n", "are duplicates.*remove the repeated line"),
        "d_as_tth.txt": ("3.5\n3.1\n2.8\n2.5\n2.2\n2.0\n", "look like d-spacings.*pass --units d"),
        "few.txt": ("20.1\n25.3\n30.0\n", "3 peaks given.*needs at least 4.*add more peaks"),
    }
    for name, (text, match) in cases.items():
        f = tmp_path / name
        f.write_text("# units: 2theta\n# wavelength: 1.5406\n" + text)
        assert main(["index", str(f)]) == 2
        err = capsys.readouterr().err
        assert re.search(match, err) and name in err, err
        assert "searching" not in err  # the search (and its progress bar) never started
