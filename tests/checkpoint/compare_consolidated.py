"""The consolidated file (argv[2]) holds exactly the parameters of the checkpoint's rank file
(argv[1]/rank_00000.h5), with equal values, dtypes and shapes, read with h5py."""
import os
import sys

import h5py
import numpy as np

with h5py.File(os.path.join(sys.argv[1], "rank_00000.h5"), "r") as ckpt, h5py.File(sys.argv[2], "r") as out:
    assert out.attrs["format"] == "hydra-weights", out.attrs["format"]
    assert set(out["model"]) == set(ckpt["model"]), sorted(set(out["model"]) ^ set(ckpt["model"]))
    for name in ckpt["model"]:
        a, b = out["model"][name], ckpt["model"][name]
        assert a.shape == b.shape and a.dtype == b.dtype, (name, a.shape, b.shape, a.dtype, b.dtype)
        np.testing.assert_array_equal(a[...], b[...], err_msg=name)
    print("consolidated: %d parameters equal the checkpoint's" % len(ckpt["model"]))
