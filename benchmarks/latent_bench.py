"""Forward-pass GFLOP/s of the glyph networks against the CPU's fp32 peak, and latent sampling throughput
(issue 18). FLOPs by torch.utils.flop_counter (minidiff.dit.forward_flops); time = median of repeats.

    OMP_NUM_THREADS=1 python benchmarks/latent_bench.py --threads 1 --peak-gflops 78.2

``--peak-gflops``: the machine's fp32 peak for the threads used = cores x clock (GHz) x FLOPs per cycle per
core (AVX2 with two 256-bit FMA units: 2 x 8 lanes x 2 = 32), e.g. 1 x 2.445 x 32 = 78.2 for one thread.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch


def _median_time(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main(argv=None) -> int:
    from minidiff import samplers, vae as V
    from minidiff.dit import forward_flops
    from minidiff.train import load_weights
    from minidiff.unet import UNetConfig, as_eps_model, build_model

    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--peak-gflops", type=float, required=True)
    p.add_argument("--nfe", type=int, default=50)
    p.add_argument("--n-samples", type=int, default=64)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    nets = {"latent U-Net": load_weights(V.LATENT_UNET_PATH)[0], "latent DiT": load_weights(V.LATENT_DIT_PATH)[0],
            "pixel U-Net 32x32": build_model(UNetConfig(image_size=32, base_channels=32, channel_mults=(1, 2, 2),
                                                         num_res_blocks=1)).eval()}
    rows = {}
    for name, net in nets.items():
        c = net.config
        x = torch.randn(args.batch, c.in_channels, c.image_size, c.image_size)
        t = torch.full((args.batch,), 500)
        flops = forward_flops(net, x, t)
        with torch.inference_mode():
            secs = _median_time(lambda: net(x, t), args.repeats)
        gflops = flops / secs / 1e9
        rows[name] = {"MFLOP_per_image": round(flops / args.batch / 1e6, 2), "GFLOP_per_s": round(gflops, 2),
                      "fraction_of_peak": round(gflops / args.peak_gflops, 3)}
    codec = V.load_codec()
    for name in ("latent U-Net", "latent DiT"):
        net = nets[name]
        sched = load_weights(V.LATENT_UNET_PATH if name == "latent U-Net" else V.LATENT_DIT_PATH)[1]
        z_T = torch.randn((args.n_samples, *codec.latent_shape), generator=torch.Generator().manual_seed(0))

        def run():
            with torch.inference_mode():
                return codec.decode(samplers.final(samplers.ddim(as_eps_model(net, sched), z_T, sched, args.nfe)))

        rows[name]["images_per_s_at_nfe"] = round(args.n_samples / _median_time(run, 1), 2)
    print(json.dumps({"threads": args.threads, "batch": args.batch, "peak_gflops": args.peak_gflops, "nfe": args.nfe,
                      "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
