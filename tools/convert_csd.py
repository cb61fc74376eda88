#!/usr/bin/env python3
"""Convert a CSD style-descriptor checkpoint (.pth) to the safetensors file StyleForge loads.

CSD ("Measuring Style Similarity in Diffusion Models", Somepalli et al., 2024; reference code
``learn2phoenix/CSD``) is OpenAI CLIP's ViT-L/14 image tower fine-tuned for style, with a
1024 -> 768 style projection (``last_layer_style``) whose output is L2-normalised. The
published weights are a pickled PyTorch checkpoint: ``{"model_state_dict": {...}, ...}``
with keys prefixed ``module.`` (saved from ``DistributedDataParallel``) and OpenAI CLIP's
naming (``backbone.conv1.weight``, ``backbone.transformer.resblocks.N.attn.in_proj_weight``,
...). StyleForge never reads pickle files, so the checkpoint is converted once:

    python tools/convert_csd.py checkpoint.pth csd_vit_l.safetensors

with any Python that has ``torch`` and ``safetensors`` (e.g. ``tools/fixtures/.venv``).
The file is read with ``torch.load(weights_only=True)`` (no code from the pickle runs).

Output layout (what ``styleforge_models::csd::CsdModel::load`` reads), float32:

- the image tower in transformers' ``CLIPVisionModel`` naming, under ``vision_model.``:
  ``conv1`` -> ``embeddings.patch_embedding``, ``class_embedding`` ->
  ``embeddings.class_embedding``, ``positional_embedding`` ->
  ``embeddings.position_embedding.weight``, ``ln_pre`` -> ``pre_layrnorm``,
  ``transformer.resblocks.N`` -> ``encoder.layers.N`` with ``ln_1``/``ln_2`` ->
  ``layer_norm1``/``layer_norm2``, the fused ``attn.in_proj_weight``/``in_proj_bias`` split
  into ``self_attn.{q,k,v}_proj``, ``attn.out_proj`` -> ``self_attn.out_proj``,
  ``mlp.c_fc``/``mlp.c_proj`` -> ``mlp.fc1``/``mlp.fc2``; ``ln_post`` -> ``post_layernorm``;
- ``style_projection.weight`` = ``last_layer_style`` transposed (``[768, 1024]``: CSD
  computes ``feature @ last_layer_style``, a linear layer without bias);
- ``content_projection.weight`` likewise from ``last_layer_content`` when it is a plain
  matrix (the released model's ``content_proj_head="default"``);
- metadata ``format = "styleforge-csd"`` and ``config``: the tower's shape as JSON
  (``hidden_size``, ``intermediate_size``, ``num_hidden_layers``, ``num_attention_heads``,
  ``image_size``, ``patch_size``, ``hidden_act = "quick_gelu"``, ``layer_norm_eps``,
  ``projection_dim``). Heads default to OpenAI CLIP's rule ``width // 64`` (16 for ViT-L/14);
  ``--heads`` overrides it.

Checked by ``tools/fixtures/make_style_fixtures.py`` on a small random checkpoint with the
real key layout: the converted file, loaded by StyleForge, reproduces the CSD module's
style embeddings.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

import torch
from safetensors.torch import save_file

def strip(key: str) -> str:
    """`module.backbone.x` -> `backbone.x` (DistributedDataParallel's prefix dropped)."""
    return key[len("module."):] if key.startswith("module.") else key


def convert(state: dict[str, torch.Tensor], heads: int | None = None) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """CSD state dict -> (StyleForge tensors, safetensors metadata)."""
    sd = {strip(k): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    required = [
        "backbone.conv1.weight",
        "backbone.class_embedding",
        "backbone.positional_embedding",
        "backbone.ln_pre.weight",
        "backbone.ln_post.weight",
        "last_layer_style",
    ]
    missing = [k for k in required if k not in sd]
    if missing:
        raise SystemExit(
            f"not a CSD checkpoint: missing {', '.join(missing)} "
            f"(first keys: {', '.join(list(sd)[:5])})"
        )
    f32 = lambda t: t.detach().to(torch.float32).contiguous()  # noqa: E731
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()

    def take(src: str) -> torch.Tensor:
        used.add(src)
        return sd[src]

    vm = "vision_model."
    conv = take("backbone.conv1.weight")
    width, _, patch, _ = conv.shape
    out[vm + "embeddings.patch_embedding.weight"] = f32(conv)
    out[vm + "embeddings.class_embedding"] = f32(take("backbone.class_embedding"))
    pos = take("backbone.positional_embedding")
    out[vm + "embeddings.position_embedding.weight"] = f32(pos)
    side = math.isqrt(pos.shape[0] - 1)
    if side * side != pos.shape[0] - 1:
        raise SystemExit(f"backbone.positional_embedding has {pos.shape[0]} rows, not 1 + a square")
    for src, dst in (("ln_pre", "pre_layrnorm"), ("ln_post", "post_layernorm")):
        for p in ("weight", "bias"):
            out[f"{vm}{dst}.{p}"] = f32(take(f"backbone.{src}.{p}"))

    layers = 0
    while f"backbone.transformer.resblocks.{layers}.ln_1.weight" in sd:
        layers += 1
    if layers == 0:
        raise SystemExit("no backbone.transformer.resblocks.N layers in the checkpoint")
    intermediate = None
    for i in range(layers):
        s = f"backbone.transformer.resblocks.{i}."
        d = f"{vm}encoder.layers.{i}."
        w = take(s + "attn.in_proj_weight")
        b = take(s + "attn.in_proj_bias")
        if w.shape != (3 * width, width):
            raise SystemExit(f"{s}attn.in_proj_weight has shape {tuple(w.shape)}, expected {(3 * width, width)}")
        for j, name in enumerate(("q_proj", "k_proj", "v_proj")):
            out[d + f"self_attn.{name}.weight"] = f32(w[j * width:(j + 1) * width])
            out[d + f"self_attn.{name}.bias"] = f32(b[j * width:(j + 1) * width])
        for src, dst in (
            ("attn.out_proj", "self_attn.out_proj"),
            ("ln_1", "layer_norm1"),
            ("ln_2", "layer_norm2"),
            ("mlp.c_fc", "mlp.fc1"),
            ("mlp.c_proj", "mlp.fc2"),
        ):
            for p in ("weight", "bias"):
                out[f"{d}{dst}.{p}"] = f32(take(f"{s}{src}.{p}"))
        intermediate = sd[s + "mlp.c_fc.weight"].shape[0]

    style = take("last_layer_style")
    if style.ndim != 2 or style.shape[0] != width:
        raise SystemExit(f"last_layer_style has shape {tuple(style.shape)}, expected [{width}, projection_dim]")
    out["style_projection.weight"] = f32(style.t())
    content = sd.get("last_layer_content")
    if isinstance(content, torch.Tensor) and content.shape == style.shape:
        used.add("last_layer_content")
        out["content_projection.weight"] = f32(content.t())

    ignored = sorted(k for k in sd if k not in used)
    if ignored:
        print(f"not converted ({len(ignored)}): {', '.join(ignored[:8])}{' ...' if len(ignored) > 8 else ''}", file=sys.stderr)

    heads = heads or width // 64
    if heads <= 0 or width % heads:
        raise SystemExit(f"width {width} is not divisible by {heads} heads; give --heads")
    config = {
        "hidden_size": int(width),
        "intermediate_size": int(intermediate),
        "num_hidden_layers": layers,
        "num_attention_heads": int(heads),
        "image_size": int(side * patch),
        "patch_size": int(patch),
        "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-5,
        "projection_dim": int(style.shape[1]),
    }
    return out, {"format": "styleforge-csd", "config": json.dumps(config, sort_keys=True)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pth", help="the CSD checkpoint (.pth with model_state_dict)")
    parser.add_argument("out", help="output .safetensors, e.g. csd_vit_l.safetensors")
    parser.add_argument("--heads", type=int, default=None, help="attention heads (default width // 64)")
    args = parser.parse_args()
    ckpt = torch.load(args.pth, map_location="cpu", weights_only=True)
    state = ckpt.get("model_state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise SystemExit(f"{args.pth}: expected a dict with `model_state_dict`, got {type(ckpt).__name__}")
    tensors, metadata = convert(state, args.heads)
    save_file(tensors, args.out, metadata=metadata)
    print(f"wrote {args.out}: {len(tensors)} tensors, config {metadata['config']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
