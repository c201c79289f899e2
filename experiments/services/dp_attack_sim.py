"""Transfer insights: an empirical privacy check of the OpenDP release, and the budget refusing a query.

Attack (a membership test in the style of Jagielski, Ullman & Oprea 2020, "Auditing differentially private
machine learning"): ten workspaces share a metric in [0, 64]; neighbouring data sets are all ten (D) and
the nine without the workspace that moves the release most (D', its value 64). The service's own release
(``metalab.services.transfer.private_mean``, OpenDP) is drawn many times on each; the attacker sees the
noisy sum and count and uses the Neyman-Pearson statistic for that shift. A threshold chosen on one half
of the draws is scored on the other half, and Clopper-Pearson 95% bounds turn its true- and false-positive
rates into a lower bound on the epsilon actually achieved: ln((TPR_low - delta) / FPR_high). A correct
release must give a lower bound <= the claimed epsilon. The same attack on a release calibrated for
epsilon = 4 but audited against the claim of 1 must break the claim (the audit has power).

Budget: five workspaces publish with a budget of 3.0; an insight costs epsilon = 1.0 to each contributor,
so the fourth query is refused (403) and charges nothing.

Usage: python experiments/services/dp_attack_sim.py [--draws 20000]
"""

from __future__ import annotations

import argparse
import tempfile

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from _record import HERE  # noqa: E402
from scipy import stats  # noqa: E402

from metalab.report.records import append_record  # noqa: E402
from metalab.services.errors import ServiceError  # noqa: E402
from metalab.services.store import create_store_engine, migrate, session_factory  # noqa: E402
from metalab.services.store.models import Workspace  # noqa: E402
from metalab.services.transfer import TransferConfig, TransferService, private_mean  # noqa: E402

LOWER, UPPER, DELTA = 0.0, 64.0, 1e-6
WITH = [8.0, 16.0, 16.0, 24.0, 32.0, 32.0, 48.0, 12.0, 20.0, 64.0]  # the last one is the target workspace
WITHOUT = WITH[:-1]


def statistic(releases, sum_scale, count_scale) -> np.ndarray:
    """Log-likelihood-ratio direction for a shift of (UPPER, 1) in (sum, count) under independent Gaussians."""
    return np.array([r.noisy_sum * UPPER / sum_scale**2 + r.noisy_count / count_scale**2 for r in releases])


def epsilon_lower_bound(present: np.ndarray, absent: np.ndarray, rng: np.random.Generator) -> dict[str, float]:
    present, absent = rng.permutation(present), rng.permutation(absent)
    half = len(present) // 2
    choose_p, score_p, choose_a, score_a = present[:half], present[half:], absent[:half], absent[half:]
    best, best_threshold = -np.inf, None
    for threshold in np.quantile(choose_a, np.linspace(0.5, 0.9995, 400)):
        tpr, fpr = np.mean(choose_p > threshold), max(np.mean(choose_a > threshold), 1 / len(choose_a))
        if tpr > DELTA and np.log((tpr - DELTA) / fpr) > best:
            best, best_threshold = np.log((tpr - DELTA) / fpr), threshold
    hits, false_hits, n = int(np.sum(score_p > best_threshold)), int(np.sum(score_a > best_threshold)), len(score_p)
    tpr_low = stats.binomtest(hits, n).proportion_ci(0.95, method="exact").low
    fpr_high = stats.binomtest(false_hits, n).proportion_ci(0.95, method="exact").high
    bound = float(np.log(max(tpr_low - DELTA, 1e-300) / fpr_high)) if tpr_low > DELTA else 0.0
    return {"threshold": float(best_threshold), "tpr": hits / n, "fpr": false_hits / n, "epsilon_lower_bound": bound}


def audit(epsilon: float, draws: int, seed: int) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    present = [private_mean(WITH, LOWER, UPPER, epsilon, DELTA) for _ in range(draws)]
    absent = [private_mean(WITHOUT, LOWER, UPPER, epsilon, DELTA) for _ in range(draws)]
    a, b = (
        statistic(present, present[0].sum_scale, present[0].count_scale),
        statistic(absent, present[0].sum_scale, present[0].count_scale),
    )
    return epsilon_lower_bound(a, b, np.random.default_rng(seed)), a, b


def budget_demo() -> list[dict[str, object]]:
    engine = create_store_engine(f"sqlite:///{tempfile.mkdtemp(prefix='dp-budget-')}/store.db")
    migrate(engine)
    sessions = session_factory(engine)
    names = [f"team{i}" for i in range(5)]
    with sessions() as session, session.begin():
        session.add_all(Workspace(name=n) for n in names)
    with sessions() as session:
        for i, name in enumerate(names):
            TransferService(session, name).publish(
                {"records": 1e6, "gpus": 1.0 + 0.1 * i}, {"batch": 32.0 + 8 * i}, 3.0
            )
        session.commit()
    answers = []
    for query in range(1, 5):
        with sessions() as session:
            service = TransferService(session, "team0", TransferConfig(min_workspaces=5))
            try:
                release, _ = service.insight("batch", LOWER, UPPER, 1.0)
                session.commit()
                answers.append(
                    {
                        "query": query,
                        "status": 200,
                        "mean": release.mean,
                        "spent_epsilon_team3": TransferService(session, "team3").budget()["spent_epsilon"],
                    }
                )
            except ServiceError as error:
                session.rollback()
                answers.append(
                    {
                        "query": query,
                        "status": error.status_code,
                        "detail": str(error),
                        "spent_epsilon_team3": TransferService(session, "team3").budget()["spent_epsilon"],
                    }
                )
    return answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--draws", type=int, default=20000)
    args = parser.parse_args()
    honest, a, b = audit(1.0, args.draws, 0)
    loose, la, lb = audit(4.0, args.draws, 1)
    answers = budget_demo()
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    bins = np.linspace(min(a.min(), b.min()), max(a.max(), b.max()), 80)
    left.hist(b, bins, alpha=0.5, density=True, label="without the workspace (D')")
    left.hist(a, bins, alpha=0.5, density=True, label="with it (D)")
    left.axvline(honest["threshold"], color="k", ls="--", label="attack threshold")
    left.set(xlabel="attack statistic", title=f"epsilon = 1: lower bound {honest['epsilon_lower_bound']:.2f}")
    left.legend(fontsize=8)
    fpr = np.linspace(0, 1, 200)
    for statistic_present, statistic_absent, label in [(a, b, "release at eps 1"), (la, lb, "release at eps 4")]:
        thresholds = np.quantile(statistic_absent, np.linspace(0, 1, 400))
        right.plot(
            [np.mean(statistic_absent > t) for t in thresholds],
            [np.mean(statistic_present > t) for t in thresholds],
            label=label,
        )
    right.plot(fpr, np.minimum(1, np.exp(1.0) * fpr + DELTA), "k--", label="limit of (1, 1e-6)-DP")
    right.set(
        xlabel="false positive rate",
        ylabel="true positive rate",
        xscale="log",
        xlim=(1e-4, 1),
        title=f"{args.draws} releases per data set",
    )
    right.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(HERE / "dp_attack.png", dpi=110)
    rows = [
        {
            "check": "attack on release at eps=1 (claim 1)",
            "claimed_epsilon": 1.0,
            **honest,
            "within_claim": honest["epsilon_lower_bound"] <= 1.0,
        },
        {
            "check": "attack on release at eps=4 (claim 1: must break)",
            "claimed_epsilon": 1.0,
            **loose,
            "within_claim": loose["epsilon_lower_bound"] <= 1.0,
        },
    ]
    rows += [
        {
            "check": f"budget 3.0, query {x['query']} at eps 1",
            "status": x["status"],
            "spent_epsilon_team3": x["spent_epsilon_team3"],
        }
        for x in answers
    ]
    append_record(
        "experiments/services/records/dp_attack.jsonl",
        rows,
        settings={
            "draws": args.draws,
            "delta": DELTA,
            "bounds": [LOWER, UPPER],
            "workspaces": len(WITH),
            "figure": "dp_attack.png",
        },
        notes="; ".join(str(x.get("detail", "")) for x in answers if x["status"] != 200),
    )


if __name__ == "__main__":
    main()
