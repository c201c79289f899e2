"""Learned consensus on simulated experts with known accuracies on labelled questions (issue 35.3).

Each question has K = 3 answers, the truth uniform; an expert of accuracy p answers right with probability p,
else one of the wrong answers uniformly. Questions come one at a time: every method decides, then learns the
truth (the service's round -> outcome cycle), so the weights are learned online from nothing.

Scenarios (7 experts each):
  independent    accuracies 0.75, 0.70, 0.65, 0.65, 0.60, 0.60, 0.55, all independent (alike: majority is
                 close to the best possible vote here).
  heterogeneous  accuracies 0.85, 0.60, 0.55, 0.50, 0.45, 0.40, 0.40, independent (one strong expert, the
                 rest near chance, 1/3).
  herd           three independent experts (0.75, 0.70, 0.65) and four who all repeat one shared source of
                 accuracy 0.55 (one correlated bloc: a majority vote follows it).

Methods (metalab.consensus.decide): majority vote; weighted majority (Littlestone & Warmuth 1994) with
beta 0.5 and 0.9; the learned logistic vote (weights by projected online gradient descent on the log-loss,
step 1/sqrt(t+1), Zinkevich 2003); accuracy-weighted vote (log-odds of each expert's Beta(1, 1) posterior
accuracy, Nitzan & Paroush 1982); and the best single expert in hindsight (most right answers over the same
questions).
Reported per scenario and method: accuracy on the second half of the questions ("once weights are learned")
and over all, mean and 95% t-interval over seeds; paired differences (same questions) between methods;
and for weighted majority its mistakes against the best expert's (regret) beside the algorithm's bound
(ln N + m ln(1/beta)) / ln(2/(1+beta)) - m, on every seed.
A last check runs 100 questions per learned method (weighted majority, logistic) through ExpertService on a
SQLite store and compares its decisions with the core's.

Usage: python experiments/services/consensus_sim.py [--seeds 50] [--questions 2000]
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile

import numpy as np
from scipy import stats

from metalab import consensus as core
from metalab.report.records import append_record

K = 3
SCENARIOS = {
    "independent": ([0.75, 0.70, 0.65, 0.65, 0.60, 0.60, 0.55], 0),
    "heterogeneous": ([0.85, 0.60, 0.55, 0.50, 0.45, 0.40, 0.40], 0),
    "herd": ([0.75, 0.70, 0.65], 4),
}  # (independent accuracies, herd size); the herd's source: 0.55
HERD_ACCURACY = 0.55
METHODS = {
    "majority": ("majority", None),
    "weighted_majority_b0.5": ("weighted", 0.5),
    "weighted_majority_b0.9": ("weighted", 0.9),
    "learned_logistic": ("learned", None),
    "accuracy_weighted": ("accuracy", None),
}


def answers_of(rng: np.random.Generator, truth: int, accuracies: list[float], herd: int) -> list[int]:
    def one(p: float) -> int:
        return truth if rng.random() < p else int((truth + rng.integers(1, K)) % K)

    said = [one(p) for p in accuracies]
    shared = one(HERD_ACCURACY)
    return said + [shared] * herd


def run(seed: int, scenario: str, questions: int) -> dict:
    """Per method: right answers per question (0/1); per expert: right answers; WM mistakes."""
    accuracies, herd = SCENARIOS[scenario]
    rng = np.random.default_rng(seed)
    names = [f"e{i}" for i in range(len(accuracies) + herd)]
    weights = {m: {n: 1.0 for n in names} for m in METHODS}
    records = {n: (0, 0) for n in names}
    right = {m: np.zeros(questions, dtype=bool) for m in METHODS}
    expert_right = np.zeros((len(names), questions), dtype=bool)
    for q in range(questions):
        truth = int(rng.integers(K))
        said = answers_of(rng, truth, accuracies, herd)
        proposals = [core.Proposal(n, str(a)) for n, a in zip(names, said)]
        for method, (rule, beta) in METHODS.items():
            decision = core.decide(proposals, method=rule, weights=weights[method], records=records, answers=K)
            right[method][q] = decision.answer == str(truth)
            if beta is not None:
                weights[method] = core.weighted_majority_update(weights[method], decision.positions, str(truth), beta)
            elif rule == "learned":
                weights[method] = core.logistic_vote_update(
                    weights[method], decision.positions, str(truth), K, 1.0 / math.sqrt(q + 1)
                )
        expert_right[:, q] = np.array(said) == truth
        records = {n: (c + int(a == truth), t + 1) for (n, (c, t)), a in zip(records.items(), said)}
    return {"right": right, "expert_right": expert_right}


def mean_ci(values: list[float]) -> tuple[float, float, float]:
    values = np.asarray(values, dtype=float)
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values)) if len(values) > 1 else 0
    return float(values.mean()), float(values.mean() - half), float(values.mean() + half)


def summarise(scenario: str, runs: list[dict], questions: int) -> list[dict]:
    half = slice(questions // 2, questions)
    rows = []
    per_method = {
        m: ([r["right"][m][half].mean() for r in runs], [r["right"][m].mean() for r in runs]) for m in METHODS
    }
    best_second = [r["expert_right"][:, half].sum(axis=1).max() / (questions - questions // 2) for r in runs]
    best_all = [r["expert_right"].sum(axis=1).max() / questions for r in runs]
    per_method["best_single_expert_in_hindsight"] = (best_second, best_all)
    for method, (second, overall) in per_method.items():
        m2, lo2, hi2 = mean_ci(second)
        m, lo, hi = mean_ci(overall)
        rows.append(
            {
                "table": "accuracy",
                "scenario": scenario,
                "method": method,
                "seeds": len(runs),
                "questions": questions,
                "acc_second_half": m2,
                "ci_low": lo2,
                "ci_high": hi2,
                "acc_all": m,
                "acc_all_ci_low": lo,
                "acc_all_ci_high": hi,
            }
        )
    for better, worse in (
        ("learned_logistic", "majority"),
        ("learned_logistic", "best_single_expert_in_hindsight"),
        ("weighted_majority_b0.5", "best_single_expert_in_hindsight"),
        ("weighted_majority_b0.5", "majority"),
    ):
        # the methods answer the same questions, so the per-seed difference has a much tighter interval
        d, lo, hi = mean_ci([a - b for a, b in zip(per_method[better][0], per_method[worse][0])])
        rows.append(
            {
                "table": "paired",
                "scenario": scenario,
                "comparison": f"{better} - {worse}",
                "seeds": len(runs),
                "diff_second_half": d,
                "ci_low": lo,
                "ci_high": hi,
            }
        )
    n = runs[0]["expert_right"].shape[0]
    for method, (_, beta) in METHODS.items():
        if beta is None:
            continue
        regrets, bounds, within = [], [], 0
        for r in runs:
            made = int((~r["right"][method]).sum())
            best = int(questions - r["expert_right"].sum(axis=1).max())
            bound = core.weighted_majority_bound(n, best, beta)
            regrets.append(made - best)
            bounds.append(bound - best)
            within += made <= bound
        rows.append(
            {
                "table": "regret",
                "scenario": scenario,
                "method": method,
                "seeds": len(runs),
                "questions": questions,
                "regret_mean": mean_ci(regrets)[0],
                "regret_max": max(regrets),
                "bound_regret_mean": mean_ci(bounds)[0],
                "bound_regret_min": min(bounds),
                "share_within_bound": within / len(runs),
            }
        )
    return rows


def service_matches_core(method: str, questions: int = 100) -> bool:
    """The same questions through ExpertService (SQLite): the decisions equal the core's, weights included."""
    from metalab.services.experts import ExpertService
    from metalab.services.store import create_store_engine, migrate, session_factory
    from metalab.services.store.models import Workspace

    engine = create_store_engine(f"sqlite:///{tempfile.mkdtemp(prefix='consensus-')}/store.db")
    migrate(engine)
    sessions = session_factory(engine)
    accuracies, herd = SCENARIOS["herd"]
    names = [f"e{i}" for i in range(len(accuracies) + herd)]
    with sessions() as session, session.begin():
        session.add(Workspace(name="sim"))
        session.flush()
        service = ExpertService(session, "sim")
        for n in names:
            service.register(n, {"qa": 3})
    rng, weights, same = np.random.default_rng(0), {n: 1.0 for n in names}, True
    for q in range(questions):
        truth = int(rng.integers(K))
        proposals = [core.Proposal(n, str(a)) for n, a in zip(names, answers_of(rng, truth, accuracies, herd))]
        expected = core.decide(proposals, method=method, weights=weights)
        with sessions() as session, session.begin():
            service = ExpertService(session, "sim")
            row, _ = service.run_round("q", proposals, [], method, beta=0.5, answers=K)
            service.resolve(row.id, str(truth))
            same &= (row.decision, row.confidence) == (expected.answer, expected.confidence)
        if method == "weighted":
            weights = core.weighted_majority_update(weights, expected.positions, str(truth), 0.5)
        else:
            weights = core.logistic_vote_update(weights, expected.positions, str(truth), K, 1.0 / math.sqrt(q + 1))
    engine.dispose()
    return bool(same)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--questions", type=int, default=2000)
    args = parser.parse_args()
    rows = []
    for scenario in SCENARIOS:
        runs = [run(seed, scenario, args.questions) for seed in range(args.seeds)]
        rows += summarise(scenario, runs, args.questions)
    matches = {m: service_matches_core(m) for m in ("weighted", "learned")}
    load = "/".join(f"{x:.1f}" for x in os.getloadavg())
    for row in rows:
        row["load"] = load
        print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()})
    print(f"service decisions equal the core's on 100 questions per method: {matches}")
    rows += [
        {"table": "service", "method": m, "service_matches_core": ok, "questions": 100, "load": load}
        for m, ok in matches.items()
    ]
    for table in ("accuracy", "paired", "regret", "service"):  # one record each, so a results table can select it
        append_record(
            "experiments/services/records/consensus.jsonl",
            [r for r in rows if r["table"] == table],
            benchmark=f"consensus_{table}",
            settings={"seeds": args.seeds, "questions": args.questions, "answers": K},
        )


if __name__ == "__main__":
    main()
