"""Reads the file written by test_h5_file with h5py, as a user would, and checks every
value against numpy computed here independently, and each dataset's crc32 and crc32_blocks
against Python's zlib. Exit 0 when all match."""
import sys
import zlib

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
    # The checksums, as docs/CHECKPOINT.md describes them, over the raw row-major bytes (not
    # for bf16, which h5py widens to float32 and so does not return as stored).
    for name in ("model/w.f32", "model/v.f64", "state/i64"):
        d = f[name]
        raw = d[...].tobytes()
        assert d.attrs["crc32"] == zlib.crc32(raw), name
        size = int(d.attrs["crc32_block_bytes"])
        blocks = [zlib.crc32(raw[i:i + size]) for i in range(0, len(raw), size)]
        assert list(d.attrs["crc32_blocks"]) == blocks, (name, list(d.attrs["crc32_blocks"]), blocks)
print("h5py check ok")
