#!/usr/bin/env python3
"""Writes the reference safetensors files under tests/data/safetensors/ with the official
`safetensors` package (and huggingface_hub's shard splitter), so the C++ tests can check
moeopt's reader against files nobody here wrote, without Python at test time.

Run from the repository root: .venv/bin/python tests/python/make_safetensors_reference.py

  reference_all_dtypes.safetensors   one [3, 5] tensor per dtype named "t.<DTYPE>", element i
                                     of the j-th tensor = pattern(i, j) (see below), metadata
                                     {"format": "pt", "source": "safetensors <version>"}
  sharded/                           model-0000k-of-00004.safetensors + index: tensors
                                     "w.<k>" U8 [100] filled with (k * 31 + i) % 256, split by
                                     huggingface_hub with max_shard_size=250
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np
import safetensors
from huggingface_hub.serialization import split_state_dict_into_shards_factory

from safetensors_crosscheck import DTYPES, encode, pattern_values, serialize_ref  # noqa: E402

OUT = os.path.join("tests", "data", "safetensors")


def main():
    os.makedirs(OUT, exist_ok=True)
    tensors = {}
    for j, dt in enumerate(DTYPES):
        tensors[f"t.{dt}"] = (dt, [3, 5], encode(pattern_values(15, j, dt), dt))
    meta = {"format": "pt", "source": f"safetensors {safetensors.__version__}"}
    with open(os.path.join(OUT, "reference_all_dtypes.safetensors"), "wb") as f:
        f.write(serialize_ref(tensors, meta))

    sharded = os.path.join(OUT, "sharded")
    os.makedirs(sharded, exist_ok=True)
    data = {f"w.{k}": bytes((k * 31 + i) % 256 for i in range(100)) for k in range(7)}
    split = split_state_dict_into_shards_factory(
        data, get_storage_size=len, filename_pattern="model{suffix}.safetensors",
        max_shard_size=250)
    for fname, names in split.filename_to_tensors.items():
        with open(os.path.join(sharded, fname), "wb") as f:
            f.write(serialize_ref({n: ("U8", [100], data[n]) for n in names}, {"format": "pt"}))
    index = {"metadata": split.metadata, "weight_map": split.tensor_to_filename}
    with open(os.path.join(sharded, "model.safetensors.index.json"), "w") as f:
        f.write(json.dumps(index, indent=2, sort_keys=True) + "\n")
    print("wrote", OUT, sorted(os.listdir(sharded)))


if __name__ == "__main__":
    main()
