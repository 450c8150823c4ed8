"""fitting.fstore: the HDF5 store is written atomically (dmd.base.io.atomic_path) and equals the in-memory one."""

import numpy as np
import pytest

from fitting import fstore


def _frames(n_frames=6, n_voxels=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n_frames, n_voxels)) + 1j * rng.standard_normal((n_frames, n_voxels))


def test_hdf5_store_equals_in_memory_store(tmp_path):
    f = _frames()
    mem = fstore.build_store([f[:4], f[4:]], 6, 5, dtype=np.float64, progress=False)
    disk = fstore.build_store([f[:4], f[4:]], 6, 5, path=tmp_path / "f.h5", dtype=np.float64, progress=False)
    # same rows and F̄ to the last bit: both are the same float64 arithmetic
    np.testing.assert_array_equal(np.asarray(disk.z), mem.z)
    np.testing.assert_array_equal(disk.f_mean, mem.f_mean)
    np.testing.assert_allclose(mem.f_mean, f.mean(axis=0), rtol=1e-12)
    assert disk.path == str(tmp_path / "f.h5")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.h5"]  # no temporary left behind


def test_failed_build_leaves_no_file_and_keeps_the_old_store(tmp_path):
    f = _frames()
    path = tmp_path / "f.h5"
    old = fstore.build_store([f], 6, 5, path=path, dtype=np.float64, progress=False)
    z_old = np.asarray(old.z).copy()
    old.z.file.close()
    bad = f.copy()
    bad[5, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fstore.build_store([bad[:3], bad[3:]], 6, 5, path=path, dtype=np.float64, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.h5"]  # the partial file is gone
    np.testing.assert_array_equal(np.asarray(fstore.open_store(path).z), z_old)  # the old store is intact
