"""Strategy pool on simulated job environments with a known optimum and a known Pareto front.

Every generation goes through the service (``StrategyPoolService.evolve`` on a SQLite store, i.e. the core
genetic algorithm with its state kept in the store); the simulator plays the jobs:

- one objective: a job's speed (records/s) peaks at batch 256, parallelism 12, zstd, checkpoint every
  300 s and falls as a Gaussian of the normalised distance from there, with 5% multiplicative noise per
  run. Plotted: normalised distance of the profile's default strategy to the optimum per generation.
- two objectives (time per record and error rate, both minimised): a ZDT1-shaped trade-off in the batch
  size with the other genes adding a penalty g >= 1 that vanishes only at the optimum above, so the true
  Pareto front is known (error = 1 - sqrt(time) at g = 1). Plotted: hypervolume of the surviving
  population's first front per generation (the core's ``hypervolume_2d``) against the true front's.

Usage: python experiments/services/strategy_pool_sim.py [--seeds 10] [--generations 25]
"""

from __future__ import annotations

import argparse
import tempfile

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from _record import HERE  # noqa: E402

from metalab.report.records import append_record  # noqa: E402
from metalab.search.pareto import hypervolume_2d  # noqa: E402
from metalab.services.store import create_store_engine, migrate, session_factory  # noqa: E402
from metalab.services.store.models import Workspace  # noqa: E402
from metalab.services.strategies import Objective, ProfileSpec, StrategyPoolService, genetic_algorithm  # noqa: E402

GENES = {
    "batch_size": {"type": "int", "low": 8, "high": 1024},
    "parallelism": {"type": "int", "low": 1, "high": 32},
    "compression": {"type": "categorical", "choices": ["none", "lz4", "zstd"]},
    "checkpoint_interval_s": {"type": "float", "low": 10.0, "high": 3600.0, "log": True},
}
LOW = np.array([8, 1, 0, np.log(10.0)])
HIGH = np.array([1024, 32, 2, np.log(3600.0)])
OPTIMUM = np.array([256, 12, 2, np.log(300.0)])
REFERENCE = (1.1, 11.0)  # hypervolume reference point (time, error), minimised


def normalised(genome: np.ndarray) -> np.ndarray:
    return (np.asarray(genome, dtype=np.float64) - LOW) / (HIGH - LOW)


def distance_to_optimum(genome: np.ndarray) -> float:
    """Euclidean distance in the unit cube of normalised genes (the categorical gene counts 1 when wrong)."""
    u, star = normalised(genome), normalised(OPTIMUM)
    gap = u - star
    gap[2] = float(round(genome[2]) != OPTIMUM[2])
    return float(np.sqrt((gap**2).sum()))


def speed(genome: np.ndarray, rng: np.random.Generator) -> float:
    return float(1000.0 * np.exp(-(distance_to_optimum(genome) ** 2) / (2 * 0.3**2)) * rng.lognormal(0.0, 0.05))


def time_and_error(genome: np.ndarray) -> tuple[float, float]:
    """ZDT1 shape: time = batch position, error = g (1 - sqrt(time / g)); g = 1 only at the other genes' optimum."""
    u, star = normalised(genome), normalised(OPTIMUM)
    rest = np.array([u[1] - star[1], float(round(genome[2]) != OPTIMUM[2]), u[3] - star[3]])
    g = 1.0 + 9.0 * float(np.mean(np.abs(rest)))
    time = float(u[0])
    return time, g * (1.0 - np.sqrt(time / g))


def true_front_hypervolume() -> float:
    time = np.linspace(0, 1, 20001)
    return hypervolume_2d(np.stack([time, 1 - np.sqrt(time)], 1), REFERENCE)


def new_store():
    engine = create_store_engine(f"sqlite:///{tempfile.mkdtemp(prefix='strategy-pool-')}/store.db")
    migrate(engine)
    sessions = session_factory(engine)
    with sessions() as session, session.begin():
        session.add(Workspace(name="sim"))
    return sessions


def run_single(seed: int, generations: int, population: int, survival: float) -> list[float]:
    rng = np.random.default_rng(1000 + seed)
    with new_store()() as session:
        pool = StrategyPoolService(session, "sim")
        profile = pool.create_profile(
            ProfileSpec("etl", GENES, [Objective("speed", "max")], population, survival, seed)
        )
        distances = []
        for _ in range(generations + 1):
            result = pool.evolve(profile.id)
            if result.default is not None:
                distances.append(distance_to_optimum(np.array(result.default.genome)))
            for strategy in result.pending:
                pool.record_outcome(strategy.id, {"speed": speed(np.array(strategy.genome), rng)})
            session.commit()
        return distances


def run_pareto(seed: int, generations: int, population: int, survival: float) -> list[float]:
    objectives = [Objective("time_per_record", "min"), Objective("error_rate", "min")]
    with new_store()() as session:
        pool = StrategyPoolService(session, "sim")
        profile = pool.create_profile(ProfileSpec("mo", GENES, objectives, population, survival, seed))
        volumes = []
        for _ in range(generations + 1):
            result = pool.evolve(profile.id)
            if result.default is not None:
                _, fitness = genetic_algorithm(pool.profile(profile.id)).pareto_front()
                volumes.append(hypervolume_2d(-fitness, REFERENCE))
            for strategy in result.pending:
                t, e = time_and_error(np.array(strategy.genome))
                pool.record_outcome(strategy.id, {"time_per_record": t, "error_rate": e})
            session.commit()
        return volumes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--generations", type=int, default=25)
    parser.add_argument("--population", type=int, default=20)
    parser.add_argument("--pareto-generations", type=int, default=40)
    parser.add_argument("--pareto-population", type=int, default=40)
    parser.add_argument("--survival-fraction", type=float, default=0.2, help="the pool's default: top 20%% survive")
    args = parser.parse_args()
    distances = np.array(
        [run_single(s, args.generations, args.population, args.survival_fraction) for s in range(args.seeds)]
    )
    volumes = np.array(
        [
            run_pareto(s, args.pareto_generations, args.pareto_population, args.survival_fraction)
            for s in range(args.seeds)
        ]
    )
    best_volume = true_front_hypervolume()
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    generations = np.arange(1, distances.shape[1] + 1)
    left.plot(generations, np.median(distances, 0), label="median over seeds")
    left.fill_between(generations, *np.quantile(distances, [0.1, 0.9], axis=0), alpha=0.3, label="10-90%")
    left.set(
        xlabel="generation",
        ylabel="default strategy: distance to optimum",
        yscale="log",
        title=f"one objective, population {args.population}",
    )
    left.legend()
    g2 = np.arange(1, volumes.shape[1] + 1)
    right.plot(g2, np.median(volumes, 0), label="median over seeds")
    right.fill_between(g2, *np.quantile(volumes, [0.1, 0.9], axis=0), alpha=0.3, label="10-90%")
    right.axhline(best_volume, color="k", ls="--", label="true Pareto front")
    right.set(
        xlabel="generation",
        ylabel=f"hypervolume (ref {REFERENCE})",
        title=f"time vs error rate, population {args.pareto_population}",
    )
    right.legend()
    figure.tight_layout()
    figure.savefig(HERE / "strategy_pool.png", dpi=110)
    rows = []
    for g in sorted({1, 2, 5, 10, 15, 20, distances.shape[1]} & set(generations.tolist())):
        rows.append(
            {
                "objective": "speed",
                "generation": g,
                "median_distance": float(np.median(distances[:, g - 1])),
                "max_distance": float(distances[:, g - 1].max()),
            }
        )
    for g in sorted({1, 2, 5, 10, 20, 30, volumes.shape[1]} & set(g2.tolist())):
        rows.append(
            {
                "objective": "time+error",
                "generation": g,
                "median_hypervolume": float(np.median(volumes[:, g - 1])),
                "min_hypervolume": float(volumes[:, g - 1].min()),
                "true_front_hypervolume": best_volume,
            }
        )
    append_record(
        "experiments/services/records/strategy_pool.jsonl",
        rows,
        settings={
            "seeds": args.seeds,
            "population": args.population,
            "pareto_population": args.pareto_population,
            "survival_fraction": args.survival_fraction,
            "figure": "strategy_pool.png",
        },
    )


if __name__ == "__main__":
    main()
