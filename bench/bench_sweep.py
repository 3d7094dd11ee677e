"""Sweep throughput: vgkern.sweep vs a PyTorch loop vs torch.func (stack_module_state + vmap).

The grid (960 configurations, one training step each, width 64, batch 128, float32, MSE on
Gaussian data):
    depth      2, 4, 8, 16, 32, 64, 128, 256
    activation sigmoid, tanh, relu, elu
    init       xavier_normal, he_normal, scaled_normal (sigma_w = 1.5, sigma_b = 0)
    batch norm off, on
    seed       0..4

Every implementation does, per configuration: build the network and draw its initial weights,
draw the batch (numpy default_rng([seed, 0]), as vgkern.sweep does), one forward + loss +
backward, and the same per-layer statistics as a vgkern GradReport: ||dW||, ||db|| (gamma/beta
with BN), ||dL/dz_l|| (pre-activation, before BN), ||dL/dh_l|| (layer output), mean and std of
z_l, saturated / zero / dead fractions of the activation -- collected into host arrays.

    vgkern        vgkern.sweep(grid, workers=cores): a thread per core, BLAS 1 thread each
    vgkern+file   the same with out=<tmp>.parquet (journal + atomic rebuilds)
    torch loop    for each configuration: nn.Sequential(Linear, [BatchNorm1d], act)*L, forward
                  hooks on Linear (z stats + a tensor hook for ||dL/dz||) and on the activations
                  (h stats + tensor hook for ||dL/dh||), torch._foreach_norm over the parameter
                  gradients; torch threads: the faster of 1 and all cores (measured first)
    vmap depth    torch.func: per depth, the 120 models (act x init x BN x seed) stacked with
                  stack_module_state and run by one vmap(grad(...)); the activation and BN are
                  per-model data (all four activations are computed and mixed with a one-hot)
    vmap arch     the same grouped by (depth, activation, BN): 15 models per vmap, no mixing

Statistics in the torch baselines are float32 (vgkern's are float64): that only helps torch.
Before timing, each torch implementation is run with vgkern's initial weights on a few
configurations and its norms are compared with vgkern's (column "check": max relative
difference).

Timing: --rounds rounds, the implementations interleaved in a rotating order inside each round
(the torch.func rows only in the first --vmap-rounds, as they take minutes); medians of wall
time (the throughput targets) and of process CPU time (what each implementation costs, whatever
the other load on the machine) and their ratios are reported (the machine may be shared: never compare absolute times of
different runs). Results also go to JSON (--json, default bench/results_sweep.json).

    python bench/bench_sweep.py                     # full grid, 3 rounds (~several minutes)
    python bench/bench_sweep.py --quick             # depths up to 32, 2 seeds, 1 round
    python bench/bench_sweep.py --impls vgkern,torch_loop --rounds 5
"""
import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time

import numpy as np

DEPTHS = (2, 4, 8, 16, 32, 64, 128, 256)
ACTIVATIONS = ("sigmoid", "tanh", "relu", "elu")
INITS = (("xavier_normal", None), ("he_normal", None), ("scaled_normal", 1.5))
WIDTH, BATCH = 64, 128
IMPLS = ("vgkern", "vgkern_file", "torch_loop", "vmap_depth", "vmap_arch")
LABELS = {"vgkern": "vgkern", "vgkern_file": "vgkern + parquet", "torch_loop": "torch loop",
          "vmap_depth": "torch.func vmap (by depth)", "vmap_arch": "torch.func vmap (by arch)"}
TARGETS = {"torch_loop": 5.0, "vmap_depth": 2.0, "vmap_arch": 2.0}
SAT_THRESHOLD = {"sigmoid": 0.0025, "tanh": 0.01, "elu": 0.01}


def grid(depths, seeds):
    g = []
    for init, sigma_w in INITS:
        d = dict(depth=list(depths), activation=list(ACTIVATIONS), init=init,
                 batch_norm=[False, True], seed=list(seeds), width=WIDTH, batch=BATCH)
        if sigma_w is not None:
            d.update(sigma_w=sigma_w, sigma_b=0.0)
        g.append(d)
    return g


def data(seed):
    rng = np.random.default_rng([seed, 0])
    x = rng.standard_normal((BATCH, WIDTH)).astype(np.float32)
    t = rng.standard_normal((BATCH, WIDTH)).astype(np.float32)
    return x, t


# --------------------------------------------------------------------------------------------
# PyTorch loop
# --------------------------------------------------------------------------------------------

def _torch_init(torch, lin, c, generator):
    w = lin.weight
    with torch.no_grad():
        if c["init"] == "xavier_normal":
            torch.nn.init.xavier_normal_(w, generator=generator)
        elif c["init"] == "he_normal":
            torch.nn.init.kaiming_normal_(w, nonlinearity="relu", generator=generator)
        else:
            w.normal_(0.0, c["sigma_w"] / math.sqrt(w.shape[1]), generator=generator)
        if lin.bias is not None:
            if c["init"] == "scaled_normal" and c["sigma_b"]:
                lin.bias.normal_(0.0, c["sigma_b"], generator=generator)
            else:
                lin.bias.zero_()


def torch_loop_step(torch, c, weights=None):
    """One configuration, the PyTorch way. weights: vgkern's (W, b) lists to start from."""
    nn = torch.nn
    L, act = c["depth"], c["activation"]
    bn = c["batch_norm"]
    generator = torch.Generator().manual_seed(c["seed"])
    modules, linears, acts = [], [], []
    for l in range(L):
        hidden = l < L - 1
        lin = nn.Linear(WIDTH, WIDTH, bias=not (bn and hidden))
        if weights is None:
            _torch_init(torch, lin, c, generator)
        else:
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(weights[0][l]))
                if lin.bias is not None:
                    lin.bias.copy_(torch.from_numpy(weights[1][l]))
        modules.append(lin)
        linears.append(lin)
        if hidden:
            if bn:
                modules.append(nn.BatchNorm1d(WIDTH))
            a = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU}[act]()
            modules.append(a)
            acts.append(a)
    model = nn.Sequential(*modules)
    z_mean, z_std, dz, dh = [None] * L, [None] * L, [None] * L, [None] * L
    sat, zero, dead = [None] * L, [None] * L, [None] * L

    def lin_hook(l):
        def grad_hook(g):
            dz[l] = torch.linalg.vector_norm(g)

        def hook(module, inputs, z):
            z_std[l], z_mean[l] = torch.std_mean(z.detach(), correction=0)
            z.register_hook(grad_hook)
        return hook

    def act_hook(l):
        def grad_hook(g):
            dh[l] = torch.linalg.vector_norm(g)

        def hook(module, inputs, out):
            y, h = inputs[0].detach(), out.detach()
            if act == "sigmoid":
                sat[l] = (h * (1 - h) < SAT_THRESHOLD[act]).float().mean()
            elif act == "tanh":
                sat[l] = (1 - h * h < SAT_THRESHOLD[act]).float().mean()
            elif act == "elu":
                sat[l] = ((y < 0) & (h + 1 < SAT_THRESHOLD[act])).float().mean()
            is_zero = h == 0
            zero[l] = is_zero.float().mean()
            dead[l] = is_zero.all(0).float().mean()
            out.register_hook(grad_hook)
        return hook

    for l, lin in enumerate(linears):
        lin.register_forward_hook(lin_hook(l))
    for l, a in enumerate(acts):
        a.register_forward_hook(act_hook(l))
    x, t = data(c["seed"])
    xt, tt = torch.from_numpy(x), torch.from_numpy(t)
    out = model(xt)
    out.register_hook(lambda g: dh.__setitem__(L - 1, torch.linalg.vector_norm(g)))
    loss = 0.5 * ((out - tt) ** 2).sum() / BATCH
    loss.backward()
    wn = torch._foreach_norm([m.weight.grad for m in linears])
    biases = [m.bias.grad for m in linears if m.bias is not None]
    bnorm = torch._foreach_norm(biases)
    bn_mods = [m for m in modules if isinstance(m, nn.BatchNorm1d)]
    if bn_mods:
        torch._foreach_norm([m.weight.grad for m in bn_mods])
        torch._foreach_norm([m.bias.grad for m in bn_mods])
    zf = torch.zeros(())
    stats = torch.stack([torch.stack(wn).detach(), torch.stack(dz), torch.stack(dh),
                         torch.stack(z_mean), torch.stack(z_std),
                         torch.stack([s if s is not None else zf for s in sat]),
                         torch.stack([s if s is not None else zf for s in zero]),
                         torch.stack([s if s is not None else zf for s in dead])])
    return dict(loss=loss.item(), weight=stats[0].double().numpy(), preact=stats[1].double().numpy(),
                act=stats[2].double().numpy(), mean=stats[3].double().numpy(),
                std=stats[4].double().numpy(), sat=stats[5].double().numpy(),
                bias=torch.stack(bnorm).double().numpy())


def run_torch_loop(torch, configs):
    return [torch_loop_step(torch, c) for c in configs]


# --------------------------------------------------------------------------------------------
# torch.func: stack_module_state + vmap
# --------------------------------------------------------------------------------------------

def _uniform_model(torch, c, L, weights=None):
    """Linear(bias) + BatchNorm1d (affine, no running stats) per hidden layer, Linear last: the
    same parameter structure for every model of a group, so that they can be stacked."""
    nn = torch.nn
    generator = torch.Generator().manual_seed(c["seed"])
    mods = []
    for l in range(L):
        lin = nn.Linear(WIDTH, WIDTH)
        if weights is None:
            _torch_init(torch, lin, c, generator)
        else:
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(weights[0][l]))
                b = weights[1][l]
                lin.bias.copy_(torch.from_numpy(b) if b.size else torch.zeros(WIDTH))
        mods.append(lin)
        if l < L - 1:
            mods.append(nn.BatchNorm1d(WIDTH, track_running_stats=False))
    return nn.Sequential(*mods)


def make_vmap_step(torch, L, mixed_act, mixed_bn, act=None, bn=None):
    """A function of (params, onehot, bnflag, x, t) for one model; vmapped by the caller.
    mixed_*: the activation / batch norm is per-model data (one-hot / flag) instead of fixed."""
    F = torch.nn.functional
    from torch.func import grad

    names = ("sigmoid", "tanh", "relu", "elu")

    def activation(y, onehot):
        if not mixed_act:
            return {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": F.relu,
                    "elu": F.elu}[act](y)
        return (onehot[0] * torch.sigmoid(y) + onehot[1] * torch.tanh(y)
                + onehot[2] * F.relu(y) + onehot[3] * F.elu(y))

    def saturated(y, h, onehot):
        parts = {"sigmoid": lambda: (h * (1 - h) < SAT_THRESHOLD["sigmoid"]).float().mean(),
                 "tanh": lambda: (1 - h * h < SAT_THRESHOLD["tanh"]).float().mean(),
                 "relu": lambda: torch.zeros(()),
                 "elu": lambda: ((y < 0) & (h + 1 < SAT_THRESHOLD["elu"])).float().mean()}
        if not mixed_act:
            return parts[act]()
        return sum(onehot[i] * parts[n]() for i, n in enumerate(names))

    def loss_fn(params, probes_z, probes_h, onehot, bnflag, x, t):
        h = x
        stats = []
        for l in range(L):
            w, b = params[f"{2 * l}.weight"], params[f"{2 * l}.bias"]
            hidden = l < L - 1
            use_bias = (1 - bnflag) if (mixed_bn and hidden) else (0.0 if (bn and hidden) else 1.0)
            z = h @ w.T + use_bias * b + probes_z[l]
            z_std, z_mean = torch.std_mean(z.detach(), correction=0)  # statistics: no graph
            if hidden:
                g, beta = params[f"{2 * l + 1}.weight"], params[f"{2 * l + 1}.bias"]
                if mixed_bn:
                    y = bnflag * F.batch_norm(z, None, None, g, beta, training=True) + (1 - bnflag) * z
                elif bn:
                    y = F.batch_norm(z, None, None, g, beta, training=True)
                else:
                    y = z
                h = activation(y, onehot)
                is_zero = h == 0
                stats.append(torch.stack([z_mean, z_std, saturated(y.detach(), h.detach(), onehot),
                                          is_zero.float().mean(), is_zero.all(0).float().mean()]))
                h = h + probes_h[l]
            else:
                zd = z.detach()
                stats.append(torch.stack([z_mean, z_std, torch.zeros(()), (zd == 0).float().mean(),
                                          (zd == 0).all(0).float().mean()]))
                h = z + probes_h[l]
        loss = 0.5 * ((h - t) ** 2).sum() / x.shape[0]
        return loss, (loss.detach(), torch.stack(stats))

    grad_fn = grad(loss_fn, argnums=(0, 1, 2), has_aux=True)

    def step(params, onehot, bnflag, x, t):
        zeros = [torch.zeros(x.shape[0], WIDTH) for _ in range(L)]
        (gp, gz, gh), (loss, stats) = grad_fn(params, zeros, zeros, onehot, bnflag, x, t)
        wn = torch.stack([torch.linalg.vector_norm(gp[f"{2 * l}.weight"]) for l in range(L)])
        bnorm = torch.stack([torch.linalg.vector_norm(gp[f"{2 * l}.bias"]) for l in range(L)])
        gn = torch.stack([torch.linalg.vector_norm(gp[f"{2 * l + 1}.weight"]) for l in range(L - 1)]) \
            if L > 1 else torch.zeros(0)
        betan = torch.stack([torch.linalg.vector_norm(gp[f"{2 * l + 1}.bias"]) for l in range(L - 1)]) \
            if L > 1 else torch.zeros(0)
        dz = torch.stack([torch.linalg.vector_norm(g) for g in gz])
        dh = torch.stack([torch.linalg.vector_norm(g) for g in gh])
        return loss, wn, bnorm, gn, betan, dz, dh, stats

    return step


VMAP_MEMORY_BYTES = 2 << 30  # autograd memory of one vmap call; larger groups are chunked


def run_vmap(torch, configs, group_by, weights=None):
    """group_by "depth": one vmap per depth (activation and BN mixed per model);
    "arch": one vmap per (depth, activation, BN). A group whose saved activations would exceed
    VMAP_MEMORY_BYTES is split into chunks (the whole depth-256 group needs ~30 GiB)."""
    from torch.func import stack_module_state, vmap

    keyf = (lambda c: (c["depth"],)) if group_by == "depth" else \
        (lambda c: (c["depth"], c["activation"], c["batch_norm"]))
    groups = {}
    for i, c in enumerate(configs):
        groups.setdefault(keyf(c), []).append(i)
    chunks = []
    for key, idx in groups.items():
        per_model = key[0] * BATCH * WIDTH * 4 * (32 if group_by == "depth" else 12)
        size = max(1, VMAP_MEMORY_BYTES // per_model)
        chunks += [idx[i:i + size] for i in range(0, len(idx), size)]
    results = [None] * len(configs)
    for idx in chunks:
        cs = [configs[i] for i in idx]
        L = cs[0]["depth"]
        models = [_uniform_model(torch, c, L, None if weights is None else weights[i])
                  for c, i in zip(cs, idx)]
        params, _ = stack_module_state(models)
        params = {k: v.detach() for k, v in params.items()}
        xs, ts = zip(*(data(c["seed"]) for c in cs))
        x = torch.from_numpy(np.stack(xs))
        t = torch.from_numpy(np.stack(ts))
        onehot = torch.tensor([[float(c["activation"] == a) for a in ACTIVATIONS] for c in cs])
        bnflag = torch.tensor([float(c["batch_norm"]) for c in cs])
        if group_by == "depth":
            step = make_vmap_step(torch, L, True, True)
        else:
            step = make_vmap_step(torch, L, False, False, act=cs[0]["activation"],
                                  bn=cs[0]["batch_norm"])
        loss, wn, bnorm, gn, betan, dz, dh, stats = vmap(step)(params, onehot, bnflag, x, t)
        host = [a.double().numpy() for a in (loss, wn, bnorm, dz, dh, stats)]
        for j, i in enumerate(idx):
            results[i] = dict(loss=float(host[0][j]), weight=host[1][j], bias=host[2][j],
                              preact=host[3][j], act=host[4][j], mean=host[5][j][:, 0],
                              std=host[5][j][:, 1], sat=host[5][j][:, 2])
    return results


# --------------------------------------------------------------------------------------------
# Checks and timing
# --------------------------------------------------------------------------------------------

def check(torch, vgkern):
    """Torch baselines started from vgkern's weights vs vgkern's report: max relative diff."""
    import vgkern.sweeps as S
    configs = vgkern.sweep_configs(depth=[3, 8], activation=list(ACTIVATIONS),
                                   batch_norm=[False, True], width=WIDTH, batch=BATCH, seed=1,
                                   init="scaled_normal", sigma_w=1.5, sigma_b=0.1)
    weights, reps = [], []
    for c in configs:
        net = vgkern.MLP([WIDTH] * (c["depth"] + 1), activation=c["activation"],
                         init=c["init"], sigma_w=c["sigma_w"], sigma_b=c["sigma_b"],
                         batch_norm=c["batch_norm"], seed=c["seed"])
        weights.append(([w.copy() for w in net.weights], [b.copy() for b in net.biases]))
        arr = S.run_config(c)
        col = {n: arr[:, j] for j, n in enumerate(S.STAT_COLUMNS)}
        reps.append(col)

    def rel(a, b):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-30)))

    def compare(results):
        worst = 0.0
        for res, col in zip(results, reps):
            worst = max(worst, rel(res["loss"], col["loss"][0]),
                        rel(res["weight"], col["weight_grad_norm"]),
                        rel(res["preact"], col["preact_grad_norm"]),
                        rel(res["act"], col["act_grad_norm"]),
                        rel(res["std"], col["preact_std"]),
                        float(np.max(np.abs(res["sat"][:-1] - col["saturated_fraction"][:-1]))))
        return worst

    loop = [torch_loop_step(torch, c, w) for c, w in zip(configs, weights)]
    return {"torch_loop": compare(loop),
            "vmap_depth": compare(run_vmap(torch, configs, "depth", weights)),
            "vmap_arch": compare(run_vmap(torch, configs, "arch", weights))}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--vmap-rounds", type=int, default=1,
                   help="rounds that include the torch.func rows (default 1: they take minutes)")
    p.add_argument("--quick", action="store_true", help="depths <= 32, seeds 0..1, 1 round")
    p.add_argument("--impls", default=",".join(IMPLS), help="subset of " + ",".join(IMPLS))
    p.add_argument("--workers", type=int, default=None, help="vgkern worker threads "
                   "(default: the cores)")
    p.add_argument("--torch-threads", type=int, default=None,
                   help="torch intra-op threads (default: the faster of 1 and all cores)")
    p.add_argument("--json", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  "results_sweep.json"))
    args = p.parse_args(argv)
    impls = [i for i in args.impls.split(",") if i]
    unknown = set(impls) - set(IMPLS)
    if unknown:
        p.error(f"--impls: unknown {sorted(unknown)}")
    depths, seeds, rounds = DEPTHS, range(5), args.rounds
    if args.quick:
        depths, seeds, rounds = tuple(d for d in DEPTHS if d <= 32), range(2), 1

    import vgkern
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    workers = args.workers or cores
    g = grid(depths, seeds)
    configs = vgkern.sweep_configs(g)
    n = len(configs)
    print(f"vgkern sweep benchmark: {n} configurations (depths {list(depths)}, "
          f"{len(ACTIVATIONS)} activations, {len(INITS)} inits, BN off/on, {len(seeds)} seeds; "
          f"width {WIDTH}, batch {BATCH}, 1 step, float32); {cores} cores", flush=True)
    print(f"versions: vgkern {vgkern.__version__}, torch {torch.__version__}, numpy "
          f"{np.__version__}, python {platform.python_version()}", flush=True)

    checks = check(torch, vgkern)
    print("check (torch from vgkern's weights vs vgkern, max rel diff): "
          + ", ".join(f"{k} {v:.1e}" for k, v in checks.items()), flush=True)

    # torch threads: the faster of 1 and all cores on a sample of the grid
    sample = [c for c in configs if c["seed"] == 0 and c["depth"] in (8, 64)]
    if args.torch_threads:
        torch_threads, probe = args.torch_threads, {}
    else:
        probe = {}
        for th in sorted({1, cores}):
            torch.set_num_threads(th)
            run_torch_loop(torch, sample[:4])
            t0 = time.perf_counter()
            run_torch_loop(torch, sample)
            probe[th] = time.perf_counter() - t0
        torch_threads = min(probe, key=probe.get)
    torch.set_num_threads(torch_threads)
    print(f"torch threads: {torch_threads}" + (" (sample: " + ", ".join(
        f"{k} thread(s) {v:.2f} s" for k, v in probe.items()) + ")" if probe else ""), flush=True)

    tmpdir = tempfile.mkdtemp(prefix="vgkern-bench-")

    def run(impl, r):
        if impl == "vgkern":
            vgkern.sweep(g, workers=workers, progress=False)
        elif impl == "vgkern_file":
            vgkern.sweep(g, workers=workers, progress=False,
                         out=os.path.join(tmpdir, f"r{r}.parquet"), resume=False)
        elif impl == "torch_loop":
            run_torch_loop(torch, configs)
        elif impl == "vmap_depth":
            run_vmap(torch, configs, "depth")
        elif impl == "vmap_arch":
            run_vmap(torch, configs, "arch")

    # warm-up: imports, first-call costs
    small = [c for c in configs if c["depth"] <= 4 and c["seed"] == 0]
    vgkern.sweep(g[0] | {"depth": [2], "seed": [0]}, workers=workers, progress=False)
    run_torch_loop(torch, small[:4])
    run_vmap(torch, small, "depth")
    run_vmap(torch, small, "arch")

    times = {i: [] for i in impls}
    cpu = {i: [] for i in impls}
    for r in range(rounds):
        order = impls[r % len(impls):] + impls[:r % len(impls)]
        for impl in order:
            if impl.startswith("vmap") and r >= args.vmap_rounds:
                continue
            c0, t0 = time.process_time(), time.perf_counter()
            run(impl, r)
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            times[impl].append(dt)
            cpu[impl].append(dc)
            print(f"  round {r + 1}/{rounds}: {LABELS[impl]:<28} {dt:8.2f} s wall {dc:8.2f} s cpu",
                  flush=True)

    med = {i: statistics.median(v) for i, v in times.items()}
    med_cpu = {i: statistics.median(v) for i, v in cpu.items()}
    base, base_cpu = med.get("vgkern"), med_cpu.get("vgkern")
    print()
    print(f"{'implementation':<28} {'wall s':>7} {'min':>7} {'max':>7} {'configs/s':>10} "
          f"{'speedup':>8} {'cpu s':>7} {'cpu ratio':>9}  target (wall)")
    rows = []
    for impl in impls:
        speed = med[impl] / base if base else float("nan")
        cpu_ratio = med_cpu[impl] / base_cpu if base_cpu else float("nan")
        target = TARGETS.get(impl)
        ok = "" if target is None else (f">= {target:g}x " + ("ok" if speed >= target else "MISS"))
        print(f"{LABELS[impl]:<28} {med[impl]:7.2f} {min(times[impl]):7.2f} "
              f"{max(times[impl]):7.2f} {n / med[impl]:10.1f} "
              f"{(f'{speed:.2f}x' if impl != 'vgkern' else '-'):>8} {med_cpu[impl]:7.2f} "
              f"{(f'{cpu_ratio:.2f}x' if impl != 'vgkern' else '-'):>9}  {ok}")
        rows.append(dict(impl=impl, label=LABELS[impl], times_s=times[impl], median_s=med[impl],
                         cpu_s=cpu[impl], median_cpu_s=med_cpu[impl],
                         configs_per_s=n / med[impl], vgkern_speedup=speed,
                         vgkern_cpu_speedup=cpu_ratio, target=target))
    record = dict(argv=sys.argv[1:] if argv is None else list(argv), configurations=n,
                  depths=list(depths), seeds=len(seeds), width=WIDTH, batch=BATCH,
                  rounds=rounds, cores=cores, vgkern_workers=workers, torch_threads=torch_threads,
                  torch_thread_probe_s=probe, checks=checks, results=rows,
                  versions=dict(vgkern=vgkern.__version__, torch=torch.__version__,
                                numpy=np.__version__, python=platform.python_version()),
                  time=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    with open(args.json, "w") as f:
        json.dump(record, f, indent=2)
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
