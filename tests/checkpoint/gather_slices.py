"""Independent check of `hydra ckpt consolidate` (argv[2]) for a sharded checkpoint (argv[1]):
places every /model/<name> dataset of every rank file into the whole tensor at its
global_offset attribute, with numpy and h5py only, checks that each element is stored exactly
once, and compares with the consolidated file. Exit 0 when all match."""
import glob
import os
import sys

import h5py
import numpy as np

ckpt, consolidated = sys.argv[1], sys.argv[2]
whole, count = {}, {}
files = sorted(glob.glob(os.path.join(ckpt, "rank_*.h5")))
assert len(files) > 1, files
sliced = 0
for path in files:
    with h5py.File(path, "r") as f:
        for name, ds in f.get("model", {}).items():
            shape = tuple(int(x) for x in ds.attrs["global_shape"])
            offset = tuple(int(x) for x in ds.attrs["global_offset"])
            data = ds[...].astype(np.float64)
            if name not in whole:
                whole[name] = np.zeros(shape)
                count[name] = np.zeros(shape, dtype=np.int64)
            assert whole[name].shape == shape, (path, name, shape, whole[name].shape)
            region = tuple(slice(o, o + n) for o, n in zip(offset, data.shape))
            whole[name][region] = data
            count[name][region] += 1
            sliced += data.shape != shape
assert sliced > 0, "no parameter was split: not a sharded checkpoint"
with h5py.File(consolidated, "r") as out:
    assert out.attrs["format"] == "hydra-weights", out.attrs["format"]
    assert set(out["model"]) == set(whole), sorted(set(out["model"]) ^ set(whole))
    for name, w in whole.items():
        assert (count[name] == 1).all(), (name, "elements stored", int(count[name].min()), "to", int(count[name].max()), "times")
        got = out["model"][name][...].astype(np.float64)
        assert got.shape == w.shape, (name, got.shape, w.shape)
        np.testing.assert_array_equal(got, w, err_msg=name)
print("gathered: %d parameters from %d rank files (%d slices) equal the consolidated file" % (len(whole), len(files), sliced))
