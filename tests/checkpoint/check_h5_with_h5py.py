"""Reads the file written by test_h5_file with h5py, as a user would, and checks every
value against numpy computed here independently. Exit 0 when all match."""
import sys

import h5py
import numpy as np

with h5py.File(sys.argv[1], "r") as f:
    base = np.arange(12, dtype=np.float64).reshape(3, 4) * 0.25 - 1.0
    assert f["model"]["w.f32"].dtype == np.float32, f["model"]["w.f32"].dtype
    np.testing.assert_array_equal(f["model"]["w.f32"][...], base.astype(np.float32))
    # bf16 is stored as a 16-bit float with float32's exponent; h5py widens it to float32.
    bf = f["model"]["w.bf16"]
    assert bf.dtype.itemsize in (2, 4), bf.dtype
    np.testing.assert_array_equal(bf[...].astype(np.float64), base)
    np.testing.assert_array_equal(f["model"]["v.f64"][...], np.arange(5) / 3.0)
    np.testing.assert_array_equal(f["state"]["i64"][...], np.arange(6) - 3)
    assert f.attrs["format"] == "hydra-test", f.attrs["format"]
    assert f.attrs["step"] == 42
    assert list(f["model"]["w.f32"].attrs["global_shape"]) == [3, 4]
    assert abs(f.attrs["loss"] - 2.5) < 1e-15
print("h5py check ok")
