"""Checks a checkpoint the way a user would read it: every /model/<name> dataset of
rank_00000.h5, read with h5py, equals the raw float32 dump <dump>/<name>.f32 the test wrote
from the model's own tensors, and has the shape listed in <dump>/shapes.txt."""
import os
import sys

import h5py
import numpy as np

ckpt, dump = sys.argv[1], sys.argv[2]
shapes = {}
with open(os.path.join(dump, "shapes.txt")) as f:
    for line in f:
        name, shape = line.split()
        shapes[name] = tuple(int(x) for x in shape.split(",") if x)
with h5py.File(os.path.join(ckpt, "rank_00000.h5"), "r") as f:
    stored = set(f["model"].keys())
    assert stored == set(shapes), sorted(stored ^ set(shapes))
    for name, shape in shapes.items():
        data = f["model"][name][...].astype(np.float32)
        expect = np.fromfile(os.path.join(dump, name + ".f32"), dtype="<f4").reshape(shape)
        assert data.shape == shape, (name, data.shape, shape)
        np.testing.assert_array_equal(data, expect, err_msg=name)
print(f"h5py: {len(shapes)} parameters equal the model's")
