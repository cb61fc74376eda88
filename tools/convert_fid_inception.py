#!/usr/bin/env python3
"""Convert pytorch-fid's FID InceptionV3 weights (.pth) to the safetensors file StyleForge loads.

StyleForge's ``styleforge_models::inception::FidInceptionV3::load`` reads one safetensors
file with pytorch-fid's state-dict keys (``Conv2d_1a_3x3.conv.weight``,
``Mixed_5b.branch1x1.bn.running_mean``, ..., ``fc.weight``), float32. It never reads pickle
files, so the weights pytorch-fid distributes are converted once with this script.

1. Download the weights pytorch-fid uses (``FID_WEIGHTS_URL`` in ``pytorch_fid/inception.py``;
   the TensorFlow ``inception-2015-12-05`` graph of the original FID code, ported to PyTorch;
   about 96 MB):

       curl -LO https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth

   (A pytorch-fid install that has already run keeps a copy in
   ``~/.cache/torch/hub/checkpoints/``.)

2. Convert, with any Python that has ``torch`` and ``safetensors`` (e.g. the fixtures venv,
   ``tools/fixtures/.venv/bin/python``):

       python tools/convert_fid_inception.py pt_inception-2015-12-05-6726825d.pth fid_inception_v3.safetensors

The keys are kept as they are; every floating-point tensor is written as contiguous float32;
the integer ``*.num_batches_tracked`` counters (if present) are dropped. The file is read with
``torch.load(weights_only=True)`` (no arbitrary code from the pickle), and its SHA-256 is
checked against the ``6726825d`` prefix in its published name, as ``torch.hub`` does
(``--no-check`` skips that, e.g. for a re-saved copy).
"""

from __future__ import annotations

import argparse
import hashlib
import sys

import torch
from safetensors.torch import save_file

EXPECTED_SHA256_PREFIX = "6726825d"
# A few tensors every FID InceptionV3 state dict has (first, FID-patched and last blocks).
REQUIRED = [
    "Conv2d_1a_3x3.conv.weight",
    "Mixed_5b.branch_pool.bn.running_var",
    "Mixed_7c.branch3x3dbl_3b.conv.weight",
    "fc.weight",
]


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pth", help="pt_inception-2015-12-05-6726825d.pth")
    parser.add_argument("out", help="output .safetensors, e.g. fid_inception_v3.safetensors")
    parser.add_argument("--no-check", action="store_true", help="skip the SHA-256 prefix check")
    args = parser.parse_args()

    if not args.no_check:
        digest = sha256(args.pth)
        if not digest.startswith(EXPECTED_SHA256_PREFIX):
            print(f"error: {args.pth} has SHA-256 {digest}, expected a prefix of "
                  f"{EXPECTED_SHA256_PREFIX} (pass --no-check to convert it anyway)",
                  file=sys.stderr)
            return 1

    state = torch.load(args.pth, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        print(f"error: {args.pth} does not hold a state dict", file=sys.stderr)
        return 1
    missing = [k for k in REQUIRED if k not in state]
    if missing:
        print(f"error: {args.pth} is not pytorch-fid's FID InceptionV3 state dict "
              f"(missing {', '.join(missing)})", file=sys.stderr)
        return 1

    tensors = {}
    for name, t in state.items():
        if name.endswith("num_batches_tracked"):
            continue
        if not torch.is_floating_point(t):
            print(f"error: tensor {name} has dtype {t.dtype}, expected a float", file=sys.stderr)
            return 1
        tensors[name] = t.detach().to(torch.float32).contiguous()
    save_file(tensors, args.out, metadata={"source": "pt_inception-2015-12-05 (pytorch-fid)"})
    params = sum(t.numel() for t in tensors.values())
    print(f"wrote {args.out}: {len(tensors)} tensors, {params} parameters")
    return 0


if __name__ == "__main__":
    sys.exit(main())
