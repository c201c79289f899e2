"""Our batched MAML meta-step against learn2learn's MAML wrapper, side by side in one run.

Same network (``--network conv4``: the pooled Conv4, 64 filters, batch norm, 5-way head;
``--network omniglot_cnn``: learn2learn's own ``OmniglotCNN``, Finn et al. 2017's strided Omniglot
network, which learn2learn runs as is and we run as ``model=conv4_strided`` holding its weights), same
Omniglot episodes (5-way 1-shot, 15 queries
per class, meta-batch 32), same hyper-parameters (inner lr 0.4, Adam 1e-3), for first and second
order with 1 and 5 inner steps. For each setting the table gives:

- meta-steps per second (median over alternating rounds, so machine noise hits both alike);
- peak memory of the meta-step: CUDA ``max_memory_allocated`` on a GPU; on the CPU the growth of
  the process's peak resident set during the steps, each (implementation, setting) measured in a
  fresh subprocess so earlier runs do not hide it; on the CPU also the peak of the bytes held by live
  tensors during one more step (:class:`LiveTensorBytes`), which leaves out what the resident set
  adds: workspace inside the kernels (e.g. a convolution's unfolded input) and the allocator's slack;
- the largest difference between the two meta-gradients, relative to the largest gradient entry,
  from the same initialisation and episodes (float32).

    python benchmarks/meta/maml_vs_learn2learn.py                 # the full table
    python benchmarks/meta/maml_vs_learn2learn.py --steps 5 --rounds 2 --settings fo1,so1
    python benchmarks/meta/maml_vs_learn2learn.py --allocator default   # glibc's malloc as is
    python benchmarks/meta/maml_vs_learn2learn.py --profile so5 --chunk-images 150 --support-chunk-images 40
    python benchmarks/meta/maml_vs_learn2learn.py --network omniglot_cnn --peer-layout channels_last

learn2learn sums (averages) the task losses and back-propagates once per meta-step; ``--peer-layout``
chooses its memory layout (ours always runs channels-last), so each side can be timed in its fastest.
Each run appends its table to ``benchmarks/meta/records/maml_vs_learn2learn.jsonl`` (``--note``: what else ran).

Runs unchanged on a GPU (``--device cuda``), where learn2learn's per-task loop rather than
arithmetic is the bottleneck.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import weakref

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

SETTINGS = {"fo1": (True, 1), "so1": (False, 1), "fo5": (True, 5), "so5": (False, 5)}
WAY, SHOT, TASKS, INNER_LR, META_LR = 5, 1, 32, 0.4, 1e-3
QUERY = int(os.environ.get("METALAB_BENCH_QUERY", "15"))  # queries per class; set by --query, inherited likewise
CHUNK_IMAGES = int(os.environ.get("METALAB_CHUNK_IMAGES", "0"))  # set by --chunk-images (subprocesses inherit it)
_SUPPORT = os.environ.get("METALAB_SUPPORT_CHUNK_IMAGES", "")  # set by --support-chunk-images, likewise
SUPPORT_CHUNK_IMAGES = int(_SUPPORT) if _SUPPORT else None
# "1": glibc keeps freed memory (what train.py does, retain_freed_memory: true) for both sides of the
# process alike; "0": glibc's default. Set by --allocator, inherited by the memory subprocesses.
RETAIN_FREED = os.environ.get("METALAB_RETAIN_FREED", "1") == "1"
# "32" or "bf16" (autocast) per implementation; set by --precision / --peer-precision, inherited likewise
PRECISION = {
    "metalab": os.environ.get("METALAB_PRECISION", "32"),
    "learn2learn": os.environ.get("METALAB_PEER_PRECISION", "32"),
}
NETWORK = os.environ.get("METALAB_BENCH_NETWORK", "conv4")  # set by --network, inherited likewise
PEER_LAYOUT = os.environ.get("METALAB_PEER_LAYOUT", "nchw")  # set by --peer-layout, inherited likewise
NETWORKS = ("conv4", "omniglot_cnn")
# "wall" (perf_counter) or "cpu" (this process's CPU time: on a machine shared with other jobs, what the
# steps cost rather than how long they waited for a core); set by --clock
CLOCK = {"wall": time.perf_counter, "cpu": time.process_time}
CLOCK_NAME = "wall"


def episodes(n: int, device: str) -> list[dict[str, torch.Tensor]]:
    from metalab.data.fewshot import FewShotDataModule
    from metalab.data.omniglot import load_omniglot_splits

    spec = {"way": WAY, "shot": SHOT, "query": QUERY}
    dm = FewShotDataModule(
        pools=load_omniglot_splits, train=spec, val=spec, test=["5w1s"], train_episodes=n, tasks_per_batch=TASKS
    )
    dm.setup("fit")
    return [{k: v.to(device) for k, v in b.items()} for b in dm.train_dataloader()]


def make_model(device: str, name: str = "metalab") -> torch.nn.Module:
    """The benchmark's network for implementation ``name``, with the same weights on both sides."""
    from metalab.models.conv4 import Conv4, strided_conv4_like

    torch.manual_seed(0)
    if NETWORK == "conv4":
        return Conv4(out_features=WAY).to(device)
    import learn2learn as l2l

    theirs = l2l.vision.models.OmniglotCNN(output_size=WAY)
    return (theirs if name == "learn2learn" else strided_conv4_like(theirs)).to(device)


class Ours:
    name = "metalab"

    def __init__(self, model, first_order, steps):
        from metalab.learners.meta.maml import MAML

        self.learner = MAML(
            model,
            optimizer=torch.optim.Adam,
            inner_steps=steps,
            inner_lr=INNER_LR,
            first_order=first_order,
            chunk_images=CHUNK_IMAGES,
            support_chunk_images=SUPPORT_CHUNK_IMAGES,
        )
        self.learner.backbone.to(memory_format=torch.channels_last)
        self.opt = torch.optim.Adam(model.parameters(), lr=META_LR)

    def loss(self, batch):
        return self.learner.training_loss(batch)[0]


class Learn2Learn:
    name = "learn2learn"

    def __init__(self, model, first_order, steps):
        import learn2learn as l2l

        if PEER_LAYOUT == "channels_last":  # weights channels-last: the convolutions then run channels-last
            model.to(memory_format=torch.channels_last)
        self.maml = l2l.algorithms.MAML(model, lr=INNER_LR, first_order=first_order)
        self.steps = steps
        self.opt = torch.optim.Adam(model.parameters(), lr=META_LR)

    def loss(self, batch):
        losses = []
        for t in range(batch["support"].shape[0]):
            learner = self.maml.clone()
            for _ in range(self.steps):
                learner.adapt(F.cross_entropy(learner(batch["support"][t]), batch["support_labels"][t]))
            losses.append(F.cross_entropy(learner(batch["query"][t]), batch["query_labels"][t]))
        return torch.stack(losses).mean()


IMPLS = {"metalab": Ours, "learn2learn": Learn2Learn}


def autocast(name: str, device: str):
    """bf16 autocast for ``name`` if asked (what ``trainer.precision=bf16-mixed`` does in training)."""
    return torch.autocast(device, dtype=torch.bfloat16, enabled=PRECISION[name] == "bf16")


def meta_step(impl, batch) -> None:
    impl.opt.zero_grad(set_to_none=True)
    with autocast(impl.name, batch["support"].device.type):
        loss = impl.loss(batch)
    loss.backward()
    impl.opt.step()


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_steps(name: str, setting: str, batches, device: str) -> float:
    first_order, steps = SETTINGS[setting]
    impl = IMPLS[name](make_model(device, name), first_order, steps)
    meta_step(impl, batches[0])  # warm-up
    sync(device)
    clock = CLOCK[CLOCK_NAME]
    start = clock()
    for b in batches[1:]:
        meta_step(impl, b)
    sync(device)
    return (len(batches) - 1) / (clock() - start)


def memory_worker(name: str, setting: str, steps: int, device: str) -> None:
    """Runs in a subprocess: prints the peak memory growth (MB) of ``steps`` meta-steps as JSON.

    The episodes are random images of the benchmark's shapes, so loading Omniglot does not set the peak.
    """
    g = torch.Generator().manual_seed(0)
    batches = [
        {
            "support": torch.rand(TASKS, WAY * SHOT, 1, 28, 28, generator=g),
            "support_labels": torch.arange(WAY).repeat_interleave(SHOT).expand(TASKS, -1).clone(),
            "query": torch.rand(TASKS, WAY * QUERY, 1, 28, 28, generator=g),
            "query_labels": torch.arange(WAY).repeat_interleave(QUERY).expand(TASKS, -1).clone(),
        }
        for _ in range(steps)
    ]  # random images of the episodes' shapes: memory depends on shapes only
    batches = [{k: v.to(device) for k, v in b.items()} for b in batches]
    first_order, inner = SETTINGS[setting]
    impl = IMPLS[name](make_model(device, name), first_order, inner)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _peak_rss_kb()
    for b in batches:
        meta_step(impl, b)
    if device == "cuda":
        print(json.dumps({"peak_mb": (torch.cuda.max_memory_allocated() - base) / 2**20}))
        return
    peak = (_peak_rss_kb() - base) / 1024
    with LiveTensorBytes() as live:
        meta_step(impl, batches[0])
    print(json.dumps({"peak_mb": peak, "live_peak_mb": live.peak / 2**20}))


class LiveTensorBytes(TorchDispatchMode):
    """Peak bytes of the tensor storages created while the mode is on and still referenced by a tensor
    (each storage counted once, however many views share it; freed when its last tensor is). Sees what
    the operators return, autograd's saved tensors included, not their internal scratch buffers."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: dict[int, int] = {}
        self.nbytes: dict[int, int] = {}
        self.current = self.peak = 0

    def _release(self, key: int) -> None:
        self.refs[key] -= 1
        if self.refs[key] == 0:
            del self.refs[key]
            self.current -= self.nbytes.pop(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor) or t.device.type == "meta":
                continue
            storage = t.untyped_storage()
            key = storage.data_ptr()
            if not key:
                continue
            if key not in self.refs:
                self.refs[key], self.nbytes[key] = 0, storage.nbytes()
                self.current += storage.nbytes()
                self.peak = max(self.peak, self.current)
            self.refs[key] += 1
            weakref.finalize(t, self._release, key)
        return out


def _peak_rss_kb() -> int:
    """This process's peak resident set in kB: VmHWM, which (unlike ru_maxrss) is not inherited
    from the parent across fork + exec and so measures this worker alone."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def peak_memory(name: str, setting: str, device: str) -> dict[str, float]:
    """``{"peak_mb": ..., "live_peak_mb": ...}`` (the latter on the CPU only) of a fresh subprocess."""
    out = subprocess.run(
        [sys.executable, __file__, "--memory-worker", name, setting, "--device", device],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def gradient_difference(setting: str, batch, device: str) -> float:
    first_order, steps = SETTINGS[setting]
    grads = {}
    for name, cls in IMPLS.items():
        model = make_model(device, name)
        impl = cls(model, first_order, steps)
        with autocast(name, device):  # each at its benchmarked precision: bf16 error shows here
            loss = impl.loss(batch)
        loss.backward()
        grads[name] = [p.grad.detach().clone() for p in _canonical_order(model)]
    scale = max(g.abs().max().item() for g in grads["learn2learn"])
    return max((a - b).abs().max().item() for a, b in zip(grads["metalab"], grads["learn2learn"])) / scale


def _canonical_order(model: torch.nn.Module) -> list[torch.Tensor]:
    """Parameters in one order for both sides: learn2learn's OmniglotCNN registers each block's batch
    norm before its convolution, our Conv4 the convolution first."""
    params = dict(model.named_parameters())
    if "classifier.weight" not in params:
        return list(params.values())
    blocks = sorted({int(n.split(".")[1]) for n in params if n.startswith("base.")})
    return [
        params[f"base.{i}.{layer}.{kind}"]
        for i in blocks
        for layer in ("conv", "normalize")
        for kind in ("weight", "bias")
    ] + [params["classifier.weight"], params["classifier.bias"]]


def profile(name: str, setting: str, batches, device: str, top: int) -> None:
    """Where one meta-step's time goes: wall time of every ATen op, summed by op and first input's shape.

    Timed around each op in a ``TorchDispatchMode`` after a warm-up step (the Python timing adds a few
    microseconds per op; ``torch.profiler`` was found to inflate memory-bound ops several-fold here).
    """
    from collections import defaultdict

    from torch.utils._python_dispatch import TorchDispatchMode

    totals: dict[tuple[str, tuple], list[float]] = defaultdict(lambda: [0, 0.0])

    class OpTimer(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            start = time.perf_counter()
            out = func(*args, **(kwargs or {}))
            sync(device)
            first = args[0] if args else None
            key = (
                str(func.overloadpacket).removeprefix("aten."),
                tuple(first.shape) if isinstance(first, torch.Tensor) else (),
            )
            totals[key][0] += 1
            totals[key][1] += time.perf_counter() - start
            return out

    first_order, steps = SETTINGS[setting]
    impl = IMPLS[name](make_model(device, name), first_order, steps)
    meta_step(impl, batches[0])
    sync(device)
    start = time.perf_counter()
    meta_step(impl, batches[1])
    sync(device)
    plain = time.perf_counter() - start
    with OpTimer():
        meta_step(impl, batches[2 % len(batches)])
    timed = sum(t for _, t in totals.values())
    conv = sum(t for (op, _), (_, t) in totals.items() if op.startswith("convolution"))
    calls = sum(c for c, _ in totals.values())
    print(
        f"\n{name} {setting}: meta-step {plain:.3f} s untimed; {timed:.3f} s inside {calls} "
        f"ops, of which convolutions (forward and backward) {conv:.3f} s ({conv / timed:.0%})"
    )
    print("| op | first input shape | calls | ms | share |\n|---|---|---|---|---|")
    for (op, shape), (calls, t) in sorted(totals.items(), key=lambda kv: -kv[1][1])[:top]:
        print(f"| {op} | {list(shape)} | {calls} | {t * 1e3:.1f} | {t / timed:.1%} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8, help="timed meta-steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--settings", default="fo1,so1,fo5,so5")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--query", type=int, default=None, help="queries per class (default 15, as the issue asks)")
    parser.add_argument(
        "--chunk-images",
        type=int,
        default=None,
        help="metalab: images per grouped convolution call (0: the whole meta-batch)",
    )
    parser.add_argument(
        "--support-chunk-images",
        type=int,
        default=None,
        help="metalab: the same for the inner loop's support sets (default: --chunk-images)",
    )
    parser.add_argument("--precision", choices=["32", "bf16"], default=None, help="metalab: fp32 or bf16 autocast")
    parser.add_argument(
        "--peer-precision", choices=["32", "bf16"], default=None, help="learn2learn: fp32 or bf16 autocast"
    )
    parser.add_argument(
        "--allocator",
        choices=["retain", "default"],
        default=None,
        help="retain (default, as train.py): glibc keeps freed memory for reuse; default: glibc as is",
    )
    parser.add_argument(
        "--profile",
        metavar="SETTING",
        default=None,
        help="instead of the table: per-op wall time of one meta-step of each implementation",
    )
    parser.add_argument("--top", type=int, default=25, help="--profile: rows per implementation")
    parser.add_argument(
        "--network",
        choices=NETWORKS,
        default=None,
        help="conv4 (pooled, default) or omniglot_cnn (learn2learn's OmniglotCNN on both sides)",
    )
    parser.add_argument(
        "--peer-layout",
        choices=["nchw", "channels_last"],
        default=None,
        help="learn2learn's memory layout (default nchw)",
    )
    parser.add_argument(
        "--clock",
        choices=list(CLOCK),
        default="wall",
        help="time meta-steps by wall clock (default) or by this process's CPU time (shared machine)",
    )
    parser.add_argument("--note", default="", help="the record's notes: what else ran on the machine, pinning, etc.")
    parser.add_argument("--memory-worker", nargs=2, metavar=("IMPL", "SETTING"))
    args = parser.parse_args()
    global CHUNK_IMAGES, SUPPORT_CHUNK_IMAGES, QUERY, RETAIN_FREED, NETWORK, PEER_LAYOUT, CLOCK_NAME
    CLOCK_NAME = args.clock
    if args.network is not None:
        NETWORK = args.network
        os.environ["METALAB_BENCH_NETWORK"] = NETWORK
    if args.peer_layout is not None:
        PEER_LAYOUT = args.peer_layout
        os.environ["METALAB_PEER_LAYOUT"] = PEER_LAYOUT
    if args.allocator is not None:
        RETAIN_FREED = args.allocator == "retain"
        os.environ["METALAB_RETAIN_FREED"] = "1" if RETAIN_FREED else "0"
    if RETAIN_FREED:
        from metalab.runtime import retain_freed_memory

        RETAIN_FREED = retain_freed_memory()  # process-wide: learn2learn's side gets it too
    if args.query is not None:
        QUERY = args.query
        os.environ["METALAB_BENCH_QUERY"] = str(args.query)
    if args.chunk_images is not None:
        CHUNK_IMAGES = args.chunk_images
        os.environ["METALAB_CHUNK_IMAGES"] = str(args.chunk_images)
    if args.support_chunk_images is not None:
        SUPPORT_CHUNK_IMAGES = args.support_chunk_images
        os.environ["METALAB_SUPPORT_CHUNK_IMAGES"] = str(args.support_chunk_images)
    for flag, name, var in (
        (args.precision, "metalab", "METALAB_PRECISION"),
        (args.peer_precision, "learn2learn", "METALAB_PEER_PRECISION"),
    ):
        if flag is not None:
            PRECISION[name] = flag
            os.environ[var] = flag
    if args.memory_worker:
        memory_worker(*args.memory_worker, steps=3, device=args.device)
        return
    unknown = [x for x in args.settings.split(",") if x not in SETTINGS]
    if unknown:
        parser.error(f"--settings {','.join(unknown)}: not a setting; choose from {', '.join(SETTINGS)}")
    if args.profile:
        if args.profile not in SETTINGS:
            parser.error(f"--profile {args.profile!r}: choose one of {', '.join(SETTINGS)}")
        batches = episodes(3, args.device)
        for name in IMPLS:
            profile(name, args.profile, batches, args.device, args.top)
        return
    batches = episodes(args.steps + 1, args.device)
    rows = []
    for setting in args.settings.split(","):
        speed = {name: [] for name in IMPLS}
        for _ in range(args.rounds):
            for name in IMPLS:
                speed[name].append(time_steps(name, setting, batches, args.device))
        med = {name: statistics.median(v) for name, v in speed.items()}
        measured = {name: peak_memory(name, setting, args.device) for name in IMPLS}
        mem = {name: m["peak_mb"] for name, m in measured.items()}
        live = {name: m.get("live_peak_mb") for name, m in measured.items()}
        diff = gradient_difference(setting, batches[0], args.device)
        rows.append((setting, med, mem, live, diff))
        print(f"{setting}: {med} {mem} {live} {diff:.1e}", file=sys.stderr)
    print(
        f"\nMAML meta-step, {NETWORK} (learn2learn {PEER_LAYOUT}), Omniglot {WAY}-way {SHOT}-shot "
        f"{QUERY} queries/class, meta-batch {TASKS}, "
        f"{args.device}, {torch.get_num_threads()} threads, metalab chunk_images={CHUNK_IMAGES} "
        f"(support {CHUNK_IMAGES if SUPPORT_CHUNK_IMAGES is None else SUPPORT_CHUNK_IMAGES}), "
        f"precision metalab {PRECISION['metalab']} / learn2learn {PRECISION['learn2learn']}, "
        f"allocator {'retain' if RETAIN_FREED else 'glibc default'}, "
        f"median of {args.rounds} rounds x {args.steps} steps, {CLOCK_NAME} clock"
    )
    print(
        "| order | inner steps | learn2learn steps/s | metalab steps/s | speed-up | learn2learn peak MB | "
        "metalab peak MB | memory ratio | max rel. grad. diff |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for setting, med, mem, _, diff in rows:
        first_order, steps = SETTINGS[setting]
        peer, o = med["learn2learn"], med["metalab"]
        ml, mo = mem["learn2learn"], mem["metalab"]
        print(
            f"| {'first' if first_order else 'second'} | {steps} | {peer:.2f} | {o:.2f} | {o / peer:.2f}x | "
            f"{ml:.0f} | {mo:.0f} | {mo / max(ml, 1e-9):.2f} | {diff:.1e} |"
        )
    from metalab.report.records import append_record  # one JSON line per run: the tables in results.md

    append_record(
        "benchmarks/meta/records/maml_vs_learn2learn.jsonl",
        [
            {
                "network": NETWORK,
                "order": "first" if SETTINGS[s][0] else "second",
                "inner_steps": SETTINGS[s][1],
                "learn2learn_steps_per_s": med["learn2learn"],
                "metalab_steps_per_s": med["metalab"],
                "speedup": med["metalab"] / med["learn2learn"],
                "learn2learn_peak_mb": mem["learn2learn"],
                "metalab_peak_mb": mem["metalab"],
                "memory_ratio": mem["metalab"] / max(mem["learn2learn"], 1e-9),
                "max_rel_grad_diff": diff,
                **_live_figures(live),
            }
            for s, med, mem, live, diff in rows
        ],
        settings={
            "device": args.device,
            "steps": args.steps,
            "rounds": args.rounds,
            "chunk_images": CHUNK_IMAGES,
            "support_chunk_images": SUPPORT_CHUNK_IMAGES,
            "precision": dict(PRECISION),
            "network": NETWORK,
            "peer_layout": PEER_LAYOUT,
            "query": QUERY,
            "clock": CLOCK_NAME,
        },
        notes=args.note or None,
    )


def _live_figures(live: dict[str, float | None]) -> dict[str, float]:
    if live["metalab"] is None or live["learn2learn"] is None:
        return {}
    return {
        "learn2learn_live_peak_mb": live["learn2learn"],
        "metalab_live_peak_mb": live["metalab"],
        "live_memory_ratio": live["metalab"] / max(live["learn2learn"], 1e-9),
    }


if __name__ == "__main__":
    main()
