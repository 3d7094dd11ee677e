"""`bench_mlp.py --device cuda`: one MLP training step on the GPU, vgkern against PyTorch eager
CUDA and the bare cuBLAS GEMMs of the same step, fp32 with TF32 off on both sides.

  vgkern            vgkern.MLP(..., device="cuda").step(x, target): x and target copied in,
                    output and the whole GradReport copied out (one synchronising call)
  vgkern stats off  the same with net.stats = False
  torch eager       nn.Sequential(Linear, act) * L on the GPU, x and target already there;
                    tensor hooks for ||dL/dz_l||, torch._foreach_norm for the weight and bias
                    gradients (float64), all norms and the loss copied to the host in the step
  gemm roofline     the 3 GEMMs per layer (torch.mm on preallocated GPU tensors, i.e. cuBLAS)

Timing: interleaved repetitions, medians. torch and the GEMMs are timed with CUDA events on
torch's stream (recorded around the step, then synchronised); vgkern's call returns only when
its results are on the host, so it is timed by the wall clock (which also counts its copies in
and out, that torch does not pay). ratio = torch / vgkern; roofline = gemm / vgkern.
"""
from __future__ import annotations

import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vgkern.benchmark.timing import with_stats

# Targets from the CUDA issue: (W, B, L) -> minimum ratio against torch, minimum roofline share.
TARGETS = {(256, 1024, 50): {"torch": 4.0}, (1024, 1024, 10): {"torch": 1.0, "roofline": 0.80}}


@dataclass(frozen=True)
class GpuConfig:
    width: int
    batch: int
    layers: int
    activation: str

    @property
    def name(self):
        return f"{self.width}x{self.batch}x{self.layers}:{self.activation}"


DEFAULT_CONFIGS = (GpuConfig(256, 1024, 50, "tanh"), GpuConfig(1024, 1024, 10, "relu"))


def parse(text):
    if not text:
        return list(DEFAULT_CONFIGS)
    configs = []
    for item in text.split(","):
        shape, *act = item.strip().split(":")
        if "bn" in act:
            raise SystemExit("--device cuda: batch norm is not on the GPU yet")
        w, b, l = (int(v) for v in shape.lower().split("x"))
        configs.append(GpuConfig(w, b, l, act[0] if act else "tanh"))
    return configs


def make_vgkern(vgkern, cfg, x, target):
    net = vgkern.MLP([cfg.width] * (cfg.layers + 1), activation=cfg.activation, seed=0,
                     device="cuda")

    def step():
        rep = net.step(x, target, loss="mse")
        return rep.loss, rep.weight_grad_norm, rep.bias_grad_norm, rep.preact_grad_norm

    return net, step


def make_torch(torch, cfg, x, target, weights, biases):
    acts = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU, "sigmoid": torch.nn.Sigmoid}
    linears, modules = [], []
    for l in range(cfg.layers):
        lin = torch.nn.Linear(cfg.width, cfg.width, device="cuda")
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(weights[l]))
            lin.bias.copy_(torch.from_numpy(biases[l]))
        linears.append(lin)
        modules.append(lin)
        if l < cfg.layers - 1:
            modules.append(acts[cfg.activation]())
    model = torch.nn.Sequential(*modules)
    preact = [None] * cfg.layers

    def attach(l):
        def grad_hook(g):
            preact[l] = torch.linalg.vector_norm(g, dtype=torch.float64)

        return lambda module, inputs, z: z.register_hook(grad_hook)

    for l, lin in enumerate(linears):
        lin.register_forward_hook(attach(l))
    xt, tt = torch.from_numpy(x).cuda(), torch.from_numpy(target).cuda()

    def step():
        model.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(model(xt), tt, reduction="sum") * (0.5 / cfg.batch)
        loss.backward()
        wn = torch._foreach_norm([m.weight.grad for m in linears], 2, dtype=torch.float64)
        bn = torch._foreach_norm([m.bias.grad for m in linears], 2, dtype=torch.float64)
        host = torch.stack([torch.stack(wn), torch.stack(bn), torch.stack(preact)]).cpu()
        return loss.item(), host[0].numpy(), host[1].numpy(), host[2].numpy()

    return step


def make_gemms(torch, cfg, x, weights):
    W = [torch.from_numpy(w).cuda() for w in weights]
    hs = [torch.from_numpy(x).cuda()] + [torch.empty(cfg.batch, cfg.width, device="cuda")
                                         for _ in W]
    dhs = [torch.empty(cfg.batch, cfg.width, device="cuda") for _ in W]
    dhs.append(torch.randn(cfg.batch, cfg.width, device="cuda") / cfg.batch)
    dW = [torch.empty_like(w) for w in W]

    def step():
        for l in range(cfg.layers):
            torch.mm(hs[l], W[l].t(), out=hs[l + 1])
        for l in reversed(range(cfg.layers)):
            torch.mm(dhs[l + 1].t(), hs[l], out=dW[l])
            torch.mm(dhs[l + 1], W[l], out=dhs[l])

    return step


def timed(torch, name, step):
    """Seconds of one step: wall clock for vgkern (synchronous), CUDA events for the others."""
    if name.startswith("vgkern"):
        start = time.perf_counter()
        result = step()
        return time.perf_counter() - start, result
    torch.cuda.synchronize()
    begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    begin.record()
    result = step()
    end.record()
    end.synchronize()
    return begin.elapsed_time(end) / 1e3, result


def max_rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-30)))


def bench(torch, vgkern, cfg, reps, warmup):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((cfg.batch, cfg.width)).astype(np.float32)
    target = rng.standard_normal((cfg.batch, cfg.width)).astype(np.float32)
    net, step = make_vgkern(vgkern, cfg, x, target)
    vg = with_stats(net, step, True)
    weights, biases = [np.array(w) for w in net.weights], [np.array(b) for b in net.biases]
    steps = {"vgkern": vg, "vgkern_nostats": with_stats(net, step, False),
             "torch": make_torch(torch, cfg, x, target, weights, biases),
             "gemm": make_gemms(torch, cfg, x, weights)}
    ref = vg()
    got = steps["torch"]()
    check = max(max_rel(got[0], ref[0]), *(max_rel(g, r) for g, r in zip(got[1:], ref[1:])))
    times = {name: [] for name in steps}
    names = list(steps)
    for rep in range(warmup + reps):
        for name in names[rep % len(names):] + names[:rep % len(names)]:  # rotating order
            seconds, _ = timed(torch, name, steps[name])
            if rep >= warmup:
                times[name].append(seconds)
    med = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    flops = 6.0 * cfg.batch * cfg.width * cfg.width * cfg.layers
    return {"config": cfg.name, "median_ms": med, "check_torch_max_rel": check,
            "ratio_torch": med["torch"] / med["vgkern"],
            "roofline": med["gemm"] / med["vgkern"],
            "stats_cost": med["vgkern"] / med["vgkern_nostats"] - 1,
            "gflops_vgkern": flops / med["vgkern"] / 1e6,
            "targets": TARGETS.get((cfg.width, cfg.batch, cfg.layers), {})}


def main_cuda(args, vgkern):
    import torch

    if not vgkern.cuda_available() or vgkern.build_info().get("cuda_emulated"):
        raise SystemExit("--device cuda: needs a CUDA GPU and a vgkern built with CUDA")
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 GEMMs on both sides
    torch.backends.cudnn.allow_tf32 = False
    reps, warmup = (5, 2) if args.quick else (max(args.blocks or 20, 20),
                                               max(args.warmup_steps or 5, 5))
    print(f"vgkern MLP step on {torch.cuda.get_device_name()}: fp32 (TF32 off), {reps} reps "
          f"(+{warmup} warm-up), interleaved, medians; torch {torch.__version__}")
    results = []
    for cfg in parse(args.configs):
        res = bench(torch, vgkern, cfg, reps, warmup)
        results.append(res)
        m = res["median_ms"]
        print(f"{cfg.name:>22}: vgkern {m['vgkern']:.3f} ms (stats off {m['vgkern_nostats']:.3f}, "
              f"stats {100 * res['stats_cost']:+.1f} %), torch {m['torch']:.3f} ms, "
              f"gemm {m['gemm']:.3f} ms | x torch {res['ratio_torch']:.2f}, roofline "
              f"{100 * res['roofline']:.1f} %, {res['gflops_vgkern']:.0f} GFLOP/s, "
              f"check {res['check_torch_max_rel']:.1e}, targets {res['targets']}", flush=True)
    out = Path(args.json).with_name("results_mlp_cuda.json") if args.json else None
    if out:
        meta = {"argv": sys.argv[1:], "device": torch.cuda.get_device_name(),
                "versions": {"vgkern": vgkern.__version__, "torch": torch.__version__},
                "build_info": vgkern.build_info()}
        out.write_text(json.dumps({"meta": meta, "results": results}, indent=2, default=str))
        print(f"wrote {out}")
    return results
