"""Two versions of the grouped Conv4 block, timed against each other in one process.

Loads ``src/metalab/adapt/conv_block.py`` as it is at two git revisions (``work`` = the working
tree) and runs our MAML meta-step (the setting, episodes and model of
``maml_vs_learn2learn.py``) with one, then the other, alternating the order every round, so slow
and fast spells of a shared machine hit both alike. Only the block module differs between the two;
the rest of the engine is the working tree's. This is how each change to the block was judged:
a few percent is within the run-to-run spread of separate benchmark runs, not of this one.

    python benchmarks/meta/conv_block_ab.py HEAD~1 HEAD --setting so5 --rounds 10
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
BLOCK = "src/metalab/adapt/conv_block.py"


def load_block(revision: str, tag: str) -> ModuleType:
    """The block module at ``revision`` (``work``: the working tree) as a module of its own."""
    if revision == "work":
        source = (ROOT / BLOCK).read_text()
    else:
        try:
            source = subprocess.run(
                ["git", "-C", str(ROOT), "show", f"{revision}:{BLOCK}"], check=True, capture_output=True, text=True
            ).stdout
        except subprocess.CalledProcessError as error:
            raise SystemExit(f"cannot read {BLOCK} at revision {revision!r}: {error.stderr.strip()}") from None
    path = Path(tempfile.mkdtemp()) / f"conv_block_{tag}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(f"conv_block_{tag}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    import maml_vs_learn2learn as bench

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("revision_a")
    parser.add_argument("revision_b")
    parser.add_argument("--setting", default="so5", choices=sorted(bench.SETTINGS))
    parser.add_argument("--rounds", type=int, default=10, help="meta-steps per version (one per round)")
    parser.add_argument("--chunk-images", type=int, default=150)
    parser.add_argument("--support-chunk-images", type=int, default=40)
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")

    import torch

    import metalab.adapt.functional as functional
    from metalab.runtime import retain_freed_memory

    retain_freed_memory()  # as the benchmark and train.py do
    blocks = [load_block(r, str(i)).conv_bn_pool_relu for i, r in enumerate((args.revision_a, args.revision_b))]
    first_order, steps = bench.SETTINGS[args.setting]
    bench.CHUNK_IMAGES, bench.SUPPORT_CHUNK_IMAGES = args.chunk_images, args.support_chunk_images
    impl = bench.Ours(bench.make_model("cpu"), first_order, steps)
    batches = bench.episodes(args.rounds + 1, "cpu")
    seconds: list[list[float]] = [[], []]
    for version in (0, 1):  # warm-up of each
        functional.conv_bn_pool_relu = blocks[version]
        bench.meta_step(impl, batches[0])
    for k, batch in enumerate(batches[1:]):
        for version in (0, 1) if k % 2 == 0 else (1, 0):
            functional.conv_bn_pool_relu = blocks[version]
            start = time.perf_counter()
            bench.meta_step(impl, batch)
            seconds[version].append(time.perf_counter() - start)
    medians = [statistics.median(s) for s in seconds]
    print(
        f"MAML {args.setting}, chunk_images={args.chunk_images} (support {args.support_chunk_images}), "
        f"{torch.get_num_threads()} threads, median of {args.rounds} alternating meta-steps each"
    )
    for revision, median in zip((args.revision_a, args.revision_b), medians):
        print(f"  {revision}: {median:.3f} s per meta-step")
    print(f"  {args.revision_b} / {args.revision_a}: {medians[1] / medians[0]:.3f}")
    from metalab.report.records import append_record

    append_record(
        "benchmarks/meta/records/conv_block_ab.jsonl",
        {
            "revision_a": args.revision_a,
            "revision_b": args.revision_b,
            "seconds_a": medians[0],
            "seconds_b": medians[1],
            "b_over_a": medians[1] / medians[0],
        },
        settings={
            "setting": args.setting,
            "rounds": args.rounds,
            "chunk_images": args.chunk_images,
            "support_chunk_images": args.support_chunk_images,
        },
    )


if __name__ == "__main__":
    main()
