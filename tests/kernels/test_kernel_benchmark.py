"""The benchmark script runs end to end (tiny sizes) and its methods agree with each other."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_benchmark_quick(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks/kernels/run.py"), "--quick", "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    rows = result["fisher_identity"]
    assert len(rows) == 5 and all(r["rel_err_vs_identity"] < 1e-4 for r in rows)
    if "gpu" not in result:
        assert "need a GPU" in proc.stdout
        assert len(result["cpu_references"]) == 6
