"""What ``metalab report`` prints about a run as it ends: its headline score and how long it took.

A study's runs write their own output to ``console.log``; the study's terminal shows one line per run
start and end, so that a user watching a long study sees results arrive without opening files.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def headline(metrics: dict[str, Any], limit: int = 2) -> str:
    """The run's main test scores, e.g. ``test/5w1s/acc 45.20 +- 1.31``: accuracies and MSEs first (with
    their 95% CI when the run logged one), else the first other test scores; ``no test score`` if none."""
    tests = sorted(k for k in metrics if k.startswith("test/") and not k.endswith("_ci95"))
    main = [k for k in tests if k.endswith(("/acc", "/mse"))] or tests
    shown = []
    for key in main[:limit]:
        value = metrics[key]
        if not isinstance(value, (int, float)):
            continue
        ci = metrics.get(f"{key}_ci95")
        spread = f" +- {ci:.2f}" if isinstance(ci, (int, float)) and math.isfinite(ci) else ""
        shown.append(f"{key} {value:.4g}{spread}")
    more = len(main) - limit
    return ", ".join(shown) + (f" (+{more} more)" if more > 0 else "") if shown else "no test score"


def run_headline(run_dir: Path) -> str:
    """:func:`headline` of the ``metrics.json`` in ``run_dir`` (``no metrics.json`` if it is missing)."""
    try:
        record = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return "no metrics.json"
    return headline(record.get("metrics") or {})


def duration(seconds: float) -> str:
    """``1h02m``, ``3m05s``, ``12.3s``: readable at a glance in a log line."""
    if seconds >= 3600:
        return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"
    if seconds >= 60:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{seconds:.1f}s"
