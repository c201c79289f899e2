"""The NAS table over independent searches: per method, mean test accuracy and a 95% Student-t interval
over search seeds (one search and one retraining per seed), kept apart by budget."""

import importlib.util
from pathlib import Path

import pytest
import scipy.stats

PIPELINE = Path(__file__).resolve().parents[2] / "experiments" / "nas" / "pipeline.py"


def pipeline():
    spec = importlib.util.spec_from_file_location("nas_pipeline", PIPELINE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def records(method: str, accs: list[float], budget: str = "small") -> tuple[list[dict], list[dict]]:
    rows, settings = [], []
    for seed, acc in enumerate(accs):
        cell = f"|nor_conv_3x3~0|+|none~0|skip_connect~1|+|skip_connect~0|none~1|avg_pool_3x3~{seed % 3}|"
        rows += [{"genotype": cell, "search_cpu_minutes": 1.0 + seed}, {"genotype": cell, "test_acc": acc}]
        settings += [
            {"budget": budget, "method": method, "search_seed": seed, "kind": "search"},
            {"budget": budget, "method": method, "search_seed": seed, "kind": "retrain", "retrain_seed": seed},
        ]
    return rows, settings


def test_mean_and_t_interval_over_independent_searches_match_scipy():
    accs = [41.2, 44.9, 43.1, 40.4]
    rows, settings = records("evolution", accs)
    other_rows, other_settings = records("evolution", [10.0, 90.0, 50.0], budget="readme")  # another budget
    (row,) = pipeline().independent_table(rows + other_rows, settings + other_settings, "small")
    low, high = scipy.stats.t.interval(0.95, len(accs) - 1, loc=scipy.stats.tmean(accs), scale=scipy.stats.sem(accs))
    assert row["method"] == "evolution" and row["searches"] == 4 and row["search_seeds"] == [0, 1, 2, 3]
    assert row["test_acc_mean"] == pytest.approx((low + high) / 2, abs=0.005)
    assert row["test_acc_ci95"] == pytest.approx((high - low) / 2, abs=0.01)
    assert row["distinct_cells"] == 3 and row["search_cpu_minutes_mean"] == 2.5


def test_a_rerun_replaces_its_older_record_and_one_replicate_has_no_interval():
    rows, settings = records("random", [30.0])
    rows.append({"genotype": rows[1]["genotype"], "test_acc": 35.0})
    settings.append(dict(settings[1]))
    (row,) = pipeline().independent_table(rows, settings, "small")
    assert row["test_acc_values"] == [35.0] and row["test_acc_ci95"] is None
