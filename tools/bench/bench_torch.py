#!/usr/bin/env python3
"""PyTorch / diffusers side of StyleForge's benchmark (CPU, or a CUDA GPU with --device).

Runs the same named workloads as `styleforge bench`, built from the same configs
(bench/configs/*.json, diffusers / transformers config.json format; keys starting with "_"
are comments), so the two can be compared as ratios measured in the same run.

Every workload runs in its own fresh subprocess, so its peak RSS (ru_maxrss) is not polluted
by the models of other workloads. See README.md next to this file.

    tools/fixtures/.venv/bin/python tools/bench/bench_torch.py [--workloads a,b] [--repeats N]
        [--warmup N] [--threads N] [--device cpu|cuda[:N]] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
CONFIGS = os.path.join(REPO, "bench", "configs")

# name: (kind, config file, batch, default repeats)
#   kind: unet-forward | unet-train | text-encoder | vae-decode
# Default repeats are 10, lowered for the workloads whose single run takes several seconds on a
# 2-core machine (an explicit --repeats overrides every default).
WORKLOADS = {
    "tiny-forward-b1": ("unet-forward", "unet-tiny.json", 1, 10),
    "tiny-forward-b2": ("unet-forward", "unet-tiny.json", 2, 10),
    "tiny-forward-b4": ("unet-forward", "unet-tiny.json", 4, 10),
    "tiny-train-b1": ("unet-train", "unet-tiny.json", 1, 10),
    "tiny-train-b4": ("unet-train", "unet-tiny.json", 4, 10),
    "sd15-half-forward-b1": ("unet-forward", "unet-sd15-half.json", 1, 10),
    "sd15-half-train-b1": ("unet-train", "unet-sd15-half.json", 1, 3),
    "sd15-forward-b2": ("unet-forward", "unet-sd15.json", 2, 5),
    "text-encoder-sd15-b2": ("text-encoder", "text-encoder-sd15.json", 2, 10),
    "vae-decode-sd15-b1": ("vae-decode", "vae-sd15.json", 1, 5),
    "inception-fid-b16": ("inception", None, 16, 5),
    "clip-b16-image-b16": ("clip-vision", "clip-vit-b16-vision.json", 16, 5),
    "csd-l14-style-b8": ("csd", "csd-vit-l14.json", 8, 3),
    "dinov2-base-cls-b16": ("dinov2", "dinov2-base.json", 16, 5),
    "fid-2048": ("fid", None, 2500, 5),
    "fid-2048-n20": ("fid", None, 20, 5),
    # StyleForge's step at 512 px: UNet + text encoder trained, StyleRef + Aux rows.
    "sd15-512-styleforge": ("styleforge-step", "unet-sd15.json", 2, 2),
    "sd15-512-styleforge-ckpt": ("styleforge-step", "unet-sd15.json", 2, 2),
    "sd15-512-styleforge-ckpt-8bit": ("styleforge-step", "unet-sd15.json", 2, 2),
    # txt2img: 30 DDIM steps, guidance 7.5, one image (the GPU check's generation).
    "sd15-512-ddim30": ("generate", "unet-sd15.json", 1, 2),
    # Tiny models of the same two workloads (the GPU check's dry run).
    "tiny-styleforge-ckpt-8bit": ("styleforge-step", "unet-tiny.json", 2, 2),
    "tiny-ddim30": ("generate", "unet-tiny.json", 1, 2),
    # The VAE decode at 512 px (64x64 latents, LATENT_SIDE).
    "vae-decode-sd15-512": ("vae-decode", "vae-sd15.json", 1, 3),
    # txt2img in stages (text encoding, 5 DDIM steps with guidance 7.5, VAE decode), each
    # stage timed; and its tiny twin.
    "sd15-generate-512": ("generate-stages", "unet-sd15.json", 1, 2),
    "tiny-generate": ("generate-stages", "unet-tiny.json", 1, 2),
}

# Latent side of the workloads that do not use LATENT_HW.
LATENT_SIDE = {"vae-decode-sd15-512": 64}

# Denoising steps of the "generate-stages" workloads.
STAGED_STEPS = 5

# The text encoder and VAE that go with each UNet in the end-to-end workloads, and the
# latents' side.
TOPOLOGIES = {
    "unet-sd15.json": ("text-encoder-sd15.json", "vae-sd15.json", 64),
    "unet-tiny.json": ("text-encoder-tiny.json", "vae-tiny.json", 32),
}

# Where the child computes (--device); inputs are drawn on the CPU and moved there.
DEVICE = "cpu"
# --fallback-adamw: torch's AdamW where bitsandbytes is not installed (recorded in the
# result's "optimizer").
FALLBACK_ADAMW = False

LATENT_HW = (32, 32)
SEQ_LEN = 77
SEED = 0


# --------------------------------------------------------------------------------------------
# Child: build one workload, time it, report
# --------------------------------------------------------------------------------------------


def load_config(path):
    with open(path, encoding="utf-8") as f:
        cfg = json.load(f)
    return {k: v for k, v in cfg.items() if not k.startswith("_")}


def build(name, configs_dir):
    """Returns (step_fn, info). step_fn() runs one timed iteration."""
    import torch
    import torch.nn.functional as F

    kind, cfg_file, b, _ = WORKLOADS[name]
    cfg = load_config(os.path.join(configs_dir, cfg_file)) if cfg_file else {}
    torch.manual_seed(SEED)
    g = torch.Generator().manual_seed(SEED + 1)
    info = {"config": cfg_file, "batch": b, "kind": kind}

    if kind in ("unet-forward", "unet-train"):
        from diffusers import UNet2DConditionModel

        model = UNet2DConditionModel.from_config(cfg).to(DEVICE, torch.float32)
        h, w = LATENT_HW
        sample = torch.randn(b, model.config.in_channels, h, w, generator=g).to(DEVICE)
        timesteps = torch.randint(0, 1000, (b,), generator=g, dtype=torch.int64).to(DEVICE)
        context = torch.randn(b, SEQ_LEN, model.config.cross_attention_dim, generator=g).to(DEVICE)
        procs = sorted({type(p).__name__ for p in model.attn_processors.values()})
        info["attention"] = procs
        info["params"] = sum(p.numel() for p in model.parameters())
        info["inputs"] = {
            "sample": list(sample.shape),
            "timesteps": timesteps.tolist(),
            "encoder_hidden_states": list(context.shape),
        }
        if kind == "unet-forward":
            model.eval()

            def step():
                with torch.no_grad():
                    model(sample, timesteps, encoder_hidden_states=context).sample

        else:
            model.train()
            target = torch.randn(b, model.config.out_channels, h, w, generator=g).to(DEVICE)
            opt = torch.optim.AdamW(model.parameters(), lr=1e-5, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)
            info["optimizer"] = "torch.optim.AdamW(lr=1e-5, betas=(0.9,0.999), weight_decay=1e-2, eps=1e-8)"

            def step():
                pred = model(sample, timesteps, encoder_hidden_states=context).sample
                loss = F.mse_loss(pred, target)
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)

        return step, info

    if kind == "styleforge-step":
        return build_styleforge_step(name, cfg_file, configs_dir, g, info)

    if kind == "generate":
        return build_generate(cfg_file, configs_dir, info)

    if kind == "generate-stages":
        return build_generate_stages(cfg_file, configs_dir, info)

    if kind == "text-encoder":
        from transformers import CLIPTextConfig, CLIPTextModel

        model = CLIPTextModel(CLIPTextConfig.from_dict(cfg)).to(DEVICE, torch.float32).eval()
        ids = torch.randint(0, cfg["vocab_size"], (b, SEQ_LEN), generator=g, dtype=torch.int64).to(DEVICE)
        info["attention"] = [str(getattr(model.config, "_attn_implementation", None))]
        info["params"] = sum(p.numel() for p in model.parameters())
        info["inputs"] = {"input_ids": list(ids.shape)}

        def step():
            with torch.no_grad():
                model(ids).last_hidden_state

        return step, info

    if kind == "vae-decode":
        from diffusers import AutoencoderKL

        model = AutoencoderKL.from_config(cfg).to(DEVICE, torch.float32).eval()
        h, w = (LATENT_SIDE[name],) * 2 if name in LATENT_SIDE else LATENT_HW
        z = torch.randn(b, model.config.latent_channels, h, w, generator=g).to(DEVICE)
        info["attention"] = sorted({type(p).__name__ for p in model.attn_processors.values()})
        info["params"] = sum(p.numel() for p in model.parameters())
        info["inputs"] = {"latents": list(z.shape)}

        def step():
            with torch.no_grad():
                model.decode(z).sample

        return step, info

    if kind == "inception":
        # pytorch-fid's FID InceptionV3 with torch's default init (its weights would be
        # downloaded: the loader is pointed at the fresh model's own state dict instead).
        import pytorch_fid.inception as pfi

        def own_weights(*_args, **_kwargs):
            net = pfi._inception_v3(num_classes=1008, aux_logits=False, weights=None)
            net.Mixed_5b = pfi.FIDInceptionA(192, pool_features=32)
            net.Mixed_5c = pfi.FIDInceptionA(256, pool_features=64)
            net.Mixed_5d = pfi.FIDInceptionA(288, pool_features=64)
            net.Mixed_6b = pfi.FIDInceptionC(768, channels_7x7=128)
            net.Mixed_6c = pfi.FIDInceptionC(768, channels_7x7=160)
            net.Mixed_6d = pfi.FIDInceptionC(768, channels_7x7=160)
            net.Mixed_6e = pfi.FIDInceptionC(768, channels_7x7=192)
            net.Mixed_7b = pfi.FIDInceptionE_1(1280)
            net.Mixed_7c = pfi.FIDInceptionE_2(2048)
            return net.state_dict()

        pfi.load_state_dict_from_url = own_weights
        model = pfi.InceptionV3([3], resize_input=False, normalize_input=True).eval()
        x = torch.rand(b, 3, 299, 299, generator=g)
        info["params"] = sum(p.numel() for p in model.parameters())
        info["inputs"] = {"images": list(x.shape)}

        def step():
            with torch.no_grad():
                model(x)[0]

        return step, info

    if kind == "clip-vision":
        from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

        model = CLIPVisionModelWithProjection(CLIPVisionConfig.from_dict(cfg)).to(torch.float32).eval()
        size = cfg["image_size"]
        x = torch.randn(b, 3, size, size, generator=g)
        info["attention"] = [str(getattr(model.config, "_attn_implementation", None))]
        info["params"] = sum(p.numel() for p in model.parameters())
        info["inputs"] = {"pixel_values": list(x.shape)}

        def step():
            with torch.no_grad():
                model(pixel_values=x).image_embeds

        return step, info

    if kind == "csd":
        # learn2phoenix/CSD's CSD_CLIP: the CLIP image tower (OpenAI layout; transformers'
        # CLIPVisionModel computes the same), `feature @ last_layer_style`, L2-normalised.
        from transformers import CLIPVisionConfig, CLIPVisionModel

        model = CLIPVisionModel(CLIPVisionConfig.from_dict(cfg)).to(torch.float32).eval()
        style = torch.randn(cfg["hidden_size"], cfg["projection_dim"], generator=g) * cfg["hidden_size"] ** -0.5
        size = cfg["image_size"]
        x = torch.randn(b, 3, size, size, generator=g)
        info["attention"] = [str(getattr(model.config, "_attn_implementation", None))]
        info["params"] = sum(p.numel() for p in model.parameters()) + style.numel()
        info["inputs"] = {"pixel_values": list(x.shape)}

        def step():
            with torch.no_grad():
                feature = model(pixel_values=x).pooler_output
                F.normalize(feature @ style, dim=1, p=2)

        return step, info

    if kind == "dinov2":
        # transformers' Dinov2Model (trained at 518 px) on 224 px inputs: position embeddings
        # interpolated; the class token of last_hidden_state.
        from transformers import Dinov2Config, Dinov2Model

        model = Dinov2Model(Dinov2Config.from_dict(cfg)).to(torch.float32).eval()
        x = torch.randn(b, 3, 224, 224, generator=g)
        info["attention"] = [str(getattr(model.config, "_attn_implementation", None))]
        info["params"] = sum(p.numel() for p in model.parameters())
        info["inputs"] = {"pixel_values": list(x.shape)}

        def step():
            with torch.no_grad():
                model(pixel_values=x).last_hidden_state[:, 0]

        return step, info

    if kind == "fid":
        # pytorch-fid's Fréchet distance (scipy sqrtm) of two 2048-d feature sets of b
        # samples each: from statistics made once (b >= 2048), or from the features.
        import numpy as np
        from pytorch_fid.fid_score import calculate_frechet_distance

        rng = np.random.default_rng(SEED)
        a = rng.standard_normal((b, 2048))
        c = rng.standard_normal((b, 2048)) * 1.1 + 0.05
        info["inputs"] = {"features": [b, 2048]}
        if b >= 2048:
            mu1, s1 = a.mean(0), np.cov(a, rowvar=False)
            mu2, s2 = c.mean(0), np.cov(c, rowvar=False)

            def step():
                calculate_frechet_distance(mu1, s1, mu2, s2)

        else:
            # pytorch-fid's path for a small set: statistics, then the 2048-d sqrtm.
            def step():
                calculate_frechet_distance(a.mean(0), np.cov(a, rowvar=False), c.mean(0), np.cov(c, rowvar=False))

        return step, info

    raise ValueError(kind)


def build_styleforge_step(name, unet_file, configs_dir, g, info):
    """What diffusers' DreamBooth script does per step with --train_text_encoder,
    --with_prior_preservation (prior weight 1), --max_grad_norm 1, AdamW lr 1e-5, one
    instance and one class row at 64x64 latents; `-ckpt` adds --gradient_checkpointing,
    `-8bit` --use_8bit_adam (bitsandbytes' AdamW8bit)."""
    import torch
    import torch.nn.functional as F
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    checkpointing = "-ckpt" in name
    eight_bit = name.endswith("-8bit")
    te_file, _, side = TOPOLOGIES[unet_file]
    unet_cfg = load_config(os.path.join(configs_dir, unet_file))
    unet = UNet2DConditionModel.from_config(unet_cfg).to(DEVICE, torch.float32).train()
    te_cfg = load_config(os.path.join(configs_dir, te_file))
    te = CLIPTextModel(CLIPTextConfig.from_dict(te_cfg)).to(DEVICE, torch.float32).train()
    if checkpointing:
        unet.enable_gradient_checkpointing()
        te.gradient_checkpointing_enable()
    sched = DDPMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"
    )
    params = list(unet.parameters()) + list(te.parameters())
    try:
        import bitsandbytes as bnb
    except ImportError:
        if eight_bit and not FALLBACK_ADAMW:
            raise
        bnb = None
    if eight_bit and bnb is not None:
        opt = bnb.optim.AdamW8bit(params, lr=1e-5, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)
        info["optimizer"] = f"bitsandbytes {bnb.__version__} AdamW8bit(lr=1e-5)"
    elif eight_bit:
        opt = torch.optim.AdamW(params, lr=1e-5, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)
        info["optimizer"] = "torch.optim.AdamW(lr=1e-5): bitsandbytes not installed (--fallback-adamw)"
    else:
        opt = torch.optim.AdamW(params, lr=1e-5, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)
        info["optimizer"] = "torch.optim.AdamW(lr=1e-5)"
    b = 2
    latents = torch.randn(b, unet.config.in_channels, side, side, generator=g).to(DEVICE)
    noise = torch.randn(b, unet.config.in_channels, side, side, generator=g).to(DEVICE)
    timesteps = torch.tensor([100, 500], dtype=torch.int64).to(DEVICE)
    ids = torch.randint(0, te_cfg["vocab_size"], (b, SEQ_LEN), generator=g, dtype=torch.int64).to(DEVICE)
    info["params"] = sum(p.numel() for p in params)
    info["gradient_checkpointing"] = checkpointing
    info["inputs"] = {"latents": list(latents.shape), "input_ids": list(ids.shape)}

    def step():
        noisy = sched.add_noise(latents, noise, timesteps)
        context = te(ids)[0]
        pred = unet(noisy, timesteps, encoder_hidden_states=context).sample
        loss = F.mse_loss(pred[:1], noise[:1]) + F.mse_loss(pred[1:], noise[1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step, info


def sd_ddim_scheduler():
    """Stable Diffusion 1.x's DDIM scheduler settings (its scheduler_config.json)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )


def fixed_prompt_ids():
    """A prompt of 8 fixed tokens and the empty negative prompt, as CLIP token ids padded
    with end-of-text to SEQ_LEN (no tokenizer offline)."""
    import torch

    bos, eos = 49406, 49407
    prompt = torch.tensor([[bos] + [320 + i for i in range(8)] + [eos] * (SEQ_LEN - 9)], device=DEVICE)
    negative = torch.tensor([[bos] + [eos] * (SEQ_LEN - 1)], device=DEVICE)
    return prompt, negative


def build_generate(unet_file, configs_dir, info):
    """diffusers' StableDiffusionPipeline, DDIM, 30 steps, guidance 7.5, one image. There is
    no tokenizer offline: the prompt and the empty negative prompt are fixed token ids (77
    each, as the tokenizer pads them), encoded by the text encoder inside the timed call."""
    import torch
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    te_file, vae_file, side = TOPOLOGIES[unet_file]
    unet = UNet2DConditionModel.from_config(load_config(os.path.join(configs_dir, unet_file)))
    te_cfg = load_config(os.path.join(configs_dir, te_file))
    te = CLIPTextModel(CLIPTextConfig.from_dict(te_cfg))
    vae = AutoencoderKL.from_config(load_config(os.path.join(configs_dir, vae_file)))
    sched = sd_ddim_scheduler()
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=te,
        tokenizer=None,
        unet=unet,
        scheduler=sched,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    ).to(DEVICE, torch.float32)
    pipe.set_progress_bar_config(disable=True)
    prompt, negative = fixed_prompt_ids()
    size = side * pipe.vae_scale_factor
    info["params"] = sum(p.numel() for m in (unet, te, vae) for p in m.parameters())
    info["inputs"] = {"image": [1, 3, size, size], "steps": 30, "guidance_scale": 7.5}

    def step():
        with torch.no_grad():
            cond = te(prompt)[0]
            uncond = te(negative)[0]
            pipe(
                prompt_embeds=cond,
                negative_prompt_embeds=uncond,
                num_inference_steps=30,
                guidance_scale=7.5,
                height=size,
                width=size,
                generator=torch.Generator(DEVICE).manual_seed(0),
                output_type="pt",
            ).images

    return step, info


def build_generate_stages(unet_file, configs_dir, info):
    """txt2img as StableDiffusionPipeline.__call__ runs it (DDIM, STAGED_STEPS steps,
    guidance 7.5, one image, output_type="pt"), written out so that each stage is timed:
    text encoding (prompt and empty negative prompt from fixed ids, as build_generate), the
    denoising loop, and the VAE decode with the [0, 1] postprocessing. The scheduler's
    timesteps and the initial latents come first, outside the stages. step() returns the
    stage times in ms."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    te_file, vae_file, side = TOPOLOGIES[unet_file]
    unet = UNet2DConditionModel.from_config(load_config(os.path.join(configs_dir, unet_file)))
    unet = unet.to(DEVICE, torch.float32).eval()
    te_cfg = load_config(os.path.join(configs_dir, te_file))
    te = CLIPTextModel(CLIPTextConfig.from_dict(te_cfg)).to(DEVICE, torch.float32).eval()
    vae = AutoencoderKL.from_config(load_config(os.path.join(configs_dir, vae_file)))
    vae = vae.to(DEVICE, torch.float32).eval()
    sched = sd_ddim_scheduler()
    prompt, negative = fixed_prompt_ids()
    guidance = 7.5
    scale = 2 ** (len(vae.config.block_out_channels) - 1)
    info["params"] = sum(p.numel() for m in (unet, te, vae) for p in m.parameters())
    info["inputs"] = {"image": [1, 3, side * scale, side * scale], "steps": STAGED_STEPS, "guidance_scale": guidance}
    info["attention"] = sorted({type(p).__name__ for p in unet.attn_processors.values()})

    def step():
        with torch.no_grad():
            sched.set_timesteps(STAGED_STEPS, device=DEVICE)
            g = torch.Generator(DEVICE).manual_seed(0)
            latents = torch.randn((1, unet.config.in_channels, side, side), generator=g, device=DEVICE)
            sync()
            t0 = time.perf_counter()
            cond = te(prompt)[0]
            uncond = te(negative)[0]
            context = torch.cat([uncond, cond])
            sync()
            t1 = time.perf_counter()
            latents = latents * sched.init_noise_sigma
            for t in sched.timesteps:
                model_input = sched.scale_model_input(torch.cat([latents] * 2), t)
                pred = unet(model_input, t, encoder_hidden_states=context).sample
                pred_uncond, pred_cond = pred.chunk(2)
                pred = pred_uncond + guidance * (pred_cond - pred_uncond)
                latents = sched.step(pred, t, latents).prev_sample
            sync()
            t2 = time.perf_counter()
            image = vae.decode(latents / vae.config.scaling_factor).sample
            (image / 2 + 0.5).clamp(0, 1)
            sync()
            t3 = time.perf_counter()
        return {
            "text_encoding": (t1 - t0) * 1000.0,
            "denoising": (t2 - t1) * 1000.0,
            "vae_decode": (t3 - t2) * 1000.0,
        }

    return step, info


def median_stages(times, stages):
    """The stages of the median repetition (the mean of the two middle ones for an even
    count), as `styleforge bench` reports them: [{"name", "median_ms"}] in run order."""
    if not stages or not stages[0]:
        return []
    order = sorted(range(len(times)), key=lambda i: times[i])
    n = len(order)
    middle = order[n // 2 : n // 2 + 1] if n % 2 == 1 else order[n // 2 - 1 : n // 2 + 1]
    return [
        {"name": name, "median_ms": sum(stages[i][name] for i in middle) / len(middle)}
        for name in stages[0]
    ]


def sync():
    if DEVICE != "cpu":
        import torch

        torch.cuda.synchronize()


def current_rss_mb():
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return None


def gemm_peak(size=2048, repeats=5):
    """GFLOP/s of the best of `repeats` square f32 products (torch.mm, MKL on x86)."""
    import torch

    a = torch.randn(size, size)
    b = torch.randn(size, size)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * size**3 / best / 1e9


def child_main(args):
    import resource

    import torch

    global DEVICE, FALLBACK_ADAMW
    DEVICE = args.device
    FALLBACK_ADAMW = args.fallback_adamw
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(args.threads)
    if args.child == "gemm-peak":
        print("RESULT " + json.dumps({"gflops": gemm_peak()}), flush=True)
        return
    import diffusers
    import transformers

    transformers.logging.set_verbosity_error()
    diffusers.utils.logging.set_verbosity_error()

    rss_import = current_rss_mb()
    step, info = build(args.child, args.configs)
    rss_built = current_rss_mb()
    for _ in range(args.warmup):
        step()
        sync()
    times = []
    stages = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        stage_ms = step()
        sync()
        times.append((time.perf_counter() - t0) * 1000.0)
        if stage_ms:
            stages.append(stage_ms)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    if DEVICE != "cpu":
        info["device"] = torch.cuda.get_device_name(DEVICE)
        info["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated(DEVICE) / 2**20
        info["cuda_max_reserved_mb"] = torch.cuda.max_memory_reserved(DEVICE) / 2**20
        info["tf32"] = {
            "matmul": torch.backends.cuda.matmul.allow_tf32,
            "cudnn": torch.backends.cudnn.allow_tf32,
        }
    res = {
        "median_ms": statistics.median(times),
        "min_ms": min(times),
        "max_ms": max(times),
        "repeats": len(times),
        "warmup": args.warmup,
        "peak_rss_mb": peak_kb / 1024.0,
        "rss_after_import_mb": rss_import,
        "rss_after_build_mb": rss_built,
        "times_ms": times,
        **info,
    }
    if stages:
        res["stages"] = median_stages(times, stages)
        res["stage_times_ms"] = stages
    print("RESULT " + json.dumps(res), flush=True)


# --------------------------------------------------------------------------------------------
# Parent: one subprocess per workload, table, JSON
# --------------------------------------------------------------------------------------------


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_child(name, args, repeats):
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--child",
        name,
        "--repeats",
        str(repeats),
        "--warmup",
        str(args.warmup),
        "--threads",
        str(args.threads),
        "--configs",
        args.configs,
        "--device",
        args.device,
    ] + (["--fallback-adamw"] if args.fallback_adamw else [])
    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[k] = str(args.threads)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            res = json.loads(line[len("RESULT "):])
            res["process_wall_s"] = wall
            return res
    tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-15:]
    return {"error": f"exit code {proc.returncode}", "stderr_tail": tail}


def print_table(results):
    head = f"{'workload':24s} {'median ms':>11s} {'min ms':>11s} {'max ms':>11s} {'reps':>5s} {'peak RSS MB':>12s}"
    print(head)
    print("-" * len(head))
    for name, r in results.items():
        if "error" in r:
            print(f"{name:24s} ERROR: {r['error']}")
            for line in r.get("stderr_tail", []):
                print("    " + line)
            continue
        print(
            f"{name:24s} {r['median_ms']:11.2f} {r['min_ms']:11.2f} {r['max_ms']:11.2f} "
            f"{r['repeats']:5d} {r['peak_rss_mb']:12.1f}"
        )
        for stage in r.get("stages", []):
            print(f"  {stage['name']:22s} {stage['median_ms']:11.2f}")


def main():
    ap = argparse.ArgumentParser(description="PyTorch side of the StyleForge benchmark")
    ap.add_argument("--workloads", default="all", help="comma-separated names (default: all): " + ",".join(WORKLOADS))
    ap.add_argument("--repeats", type=int, default=None, help="timed runs per workload (default 10; 3-5 for the slow sd15 ones)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed runs first (default 2)")
    ap.add_argument("--threads", type=int, default=2, help="torch intra- and inter-op threads (default 2)")
    ap.add_argument("--json", dest="json_out", default=None, help="write the results as JSON to this file")
    ap.add_argument("--configs", default=CONFIGS, help="model config folder (default: bench/configs)")
    ap.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    ap.add_argument(
        "--fallback-adamw",
        action="store_true",
        help="where bitsandbytes is missing, run the -8bit workloads with torch's AdamW (recorded in 'optimizer')",
    )
    ap.add_argument("--list", action="store_true", help="list the workloads and exit")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child is not None:
        child_main(args)
        return
    if args.list:
        for name, (kind, cfg, b, reps) in WORKLOADS.items():
            print(f"{name:24s} {kind:13s} {cfg:24s} batch {b}  default repeats {reps}")
        return

    names = list(WORKLOADS) if args.workloads in ("all", "") else [w.strip() for w in args.workloads.split(",") if w.strip()]
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        ap.error(f"unknown workloads {unknown}; known: {', '.join(WORKLOADS)}")

    import diffusers
    import torch

    peak = run_child("gemm-peak", args, 1).get("gflops")
    if peak is not None:
        print(f"f32 gemm peak (2048^3): {peak:.1f} GFLOP/s", file=sys.stderr, flush=True)
    results = {}
    for name in names:
        reps = args.repeats if args.repeats is not None else WORKLOADS[name][3]
        print(f"[{name}] running ({args.warmup} warmup + {reps} timed) ...", file=sys.stderr, flush=True)
        results[name] = run_child(name, args, reps)
        r = results[name]
        if "error" in r:
            print(f"[{name}] ERROR {r['error']}", file=sys.stderr, flush=True)
        else:
            print(
                f"[{name}] median {r['median_ms']:.2f} ms, peak RSS {r['peak_rss_mb']:.0f} MB "
                f"({r['process_wall_s']:.1f} s in all)",
                file=sys.stderr,
                flush=True,
            )

    out = {
        "framework": "pytorch",
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "threads": args.threads,
        "device": args.device,
        "cpu": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "python": sys.version.split()[0],
        "warmup": args.warmup,
        "latent_hw": list(LATENT_HW),
        "gemm_peak_gflops": peak,
        "workloads": results,
    }
    print_table(results)
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=2)
            f.write("\n")
        print(f"wrote {args.json_out}")
    if any("error" in r for r in results.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
