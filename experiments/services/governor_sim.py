"""Hyperparameter governor on a simulated training system whose reward is known for every knob setting.

Knobs: learning rate (float, 1e-4..0.1), batch size (int, 8..512), cache (bool). Telemetry per update:
gain = 1 - 0.5 (log10 lr + 2)^2 - ((batch - 128) / 512)^2 + 0.1 cache + noise, stability = 1 - 0.3 [lr > 0.05],
resource = 0.5 batch / 512; reward weights 1 / 0.5 / 0.3. The best setting is lr 0.01, batch 128, cache on.
Every update goes through ``GovernorService`` on a SQLite store (the state machine is stored and reloaded
each time, as over HTTP); each run has its own domain, so no run starts from a prior another run moved.

1. Bad change: after 50 updates at the good setting an agent sets lr = 0.1 (reward -0.65 in expectation;
   noise sd 0.1). Reported: updates until the rollback (median, 95th percentile, max over seeds), whether
   the reward recovers (mean of the 20 updates after the rollback within 0.1 of the 20 before the change; the
   same for a milder bad change, lr = 0.05, reward -0.25 in expectation), and that no
   knob ever left its bounds although the agent also proposes out-of-range values (lr 5, batch -3) whenever
   the governor lets it.
2. Oscillation: a naive agent reacts to noise: after every update whose reward fell, it halves or doubles the
   learning rate (reversing its last move) and flips the cache. The reward barely depends on those moves near
   the optimum and the noise sd is 0.3. Knob changes and reversals over 300 updates, with cooldown 0, 5 and 10.
3. Priors: eight domains (five alike, two alike but different, one corrupt record) combined by the core's
   Reptile update: the weights and outliers.

Usage: python experiments/services/governor_sim.py [--seeds 100]
"""

from __future__ import annotations

import argparse
import math
import tempfile

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from _record import HERE  # noqa: E402

from metalab.report.records import append_record  # noqa: E402
from metalab.services.errors import Conflict  # noqa: E402
from metalab.services.governor import GovernorService, GovernorSettings, Knob  # noqa: E402
from metalab.services.store import create_store_engine, migrate, session_factory  # noqa: E402
from metalab.services.store.models import Workspace  # noqa: E402

KNOBS = [Knob("lr", "float", 1e-4, 0.1, 0.01), Knob("batch", "int", 8, 512, 128), Knob("cache", "bool", default=True)]
BOUNDS = {k.name: (k.low, k.high) for k in KNOBS}


def telemetry(values: dict, rng: np.random.Generator, noise: float) -> dict[str, float]:
    gain = (
        1
        - 0.5 * (math.log10(values["lr"]) + 2) ** 2
        - ((values["batch"] - 128) / 512) ** 2
        + 0.1 * bool(values["cache"])
        + rng.normal(0, noise)
    )
    return {"gain": gain, "stability": 1 - 0.3 * (values["lr"] > 0.05), "resource": 0.5 * values["batch"] / 512}


def in_bounds(values: dict) -> bool:
    return all(BOUNDS[k][0] <= float(v) <= BOUNDS[k][1] for k, v in values.items())


def new_service():
    engine = create_store_engine(f"sqlite:///{tempfile.mkdtemp(prefix='governor-')}/store.db")
    migrate(engine)
    sessions = session_factory(engine)
    with sessions() as session, session.begin():
        session.add(Workspace(name="sim"))
    return sessions


def bad_change(seed: int, sessions, bad_lr: float = 0.1) -> dict:
    rng = np.random.default_rng(seed)
    with sessions() as session:
        service = GovernorService(session, "sim")
        governor = service.create(f"g{seed}-{bad_lr}", f"vision-{seed}-{bad_lr}", KNOBS, GovernorSettings())
        rewards, emas, bounded = [], [], True
        for _ in range(50):
            state, reward, _ = service.telemetry(governor.id, telemetry(service.get(governor.id)[1].values, rng, 0.1))
            rewards.append(reward)
            emas.append(state.ema)
        service.change(governor.id, {"lr": bad_lr}, "injected bad change")
        rolled_back_after, after_rollback = None, []
        for step in range(1, 61):
            values = service.get(governor.id)[1].values
            state, reward, event = service.telemetry(governor.id, telemetry(values, rng, 0.1))
            rewards.append(reward)
            emas.append(state.ema)
            bounded &= in_bounds(state.values)
            if event == "rollback" and rolled_back_after is None:
                rolled_back_after = step
            if rolled_back_after is not None:
                after_rollback.append(reward)
                try:  # the agent keeps pushing out-of-range values; the governor clamps (or refuses while cooling)
                    state, _ = service.change(governor.id, {"lr": 5.0, "batch": -3})
                    bounded &= in_bounds(state.values)
                except Conflict:
                    pass
        session.commit()
    # recovered: the mean reward of the 20 updates after the rollback is within 0.1 (3 sd of that difference
    # of means at noise sd 0.1) of the 20 updates before the change
    recovered = len(after_rollback) >= 20 and abs(np.mean(after_rollback[:20]) - np.mean(rewards[30:50])) <= 0.1
    return {
        "rolled_back_after": rolled_back_after,
        "recovered": recovered,
        "bounded": bounded,
        "rewards": rewards,
        "emas": emas,
    }


def oscillation(seed: int, cooldown: int, sessions, updates: int = 300) -> dict:
    rng = np.random.default_rng(10_000 + seed)
    with sessions() as session:
        service = GovernorService(session, "sim")
        governor = service.create(
            f"o{seed}-{cooldown}", f"noisy-{seed}-{cooldown}", KNOBS, GovernorSettings(cooldown=cooldown)
        )
        previous, direction, changes, reversals, last_move, trace = None, 1, 0, 0, None, []
        for _ in range(updates):
            state, reward, _ = service.telemetry(governor.id, telemetry(service.get(governor.id)[1].values, rng, 0.3))
            trace.append(state.values["lr"])
            if previous is not None and reward < previous:
                direction = -direction
                proposal = {
                    "lr": state.values["lr"] * (2.0 if direction > 0 else 0.5),
                    "cache": not state.values["cache"],
                }
                try:
                    service.change(governor.id, proposal, "reward fell")
                    changes += 1
                    reversals += last_move is not None and last_move != direction
                    last_move = direction
                except Conflict:
                    pass
            previous = reward
        session.commit()
    return {"changes": changes, "reversals": reversals, "trace": trace}


def priors(sessions) -> dict:
    domains = {
        "vision-a": (0.010, 128),
        "vision-b": (0.012, 120),
        "vision-c": (0.009, 140),
        "vision-d": (0.011, 128),
        "vision-e": (0.010, 136),
        "speech-a": (0.001, 32),
        "speech-b": (0.0012, 40),
        "corrupt": (0.1, 512),
    }
    with sessions() as session:
        service = GovernorService(session, "sim")
        for name, (lr, batch) in domains.items():
            service.set_prior(name, KNOBS[:2], {"lr": lr, "batch": batch})
        result = service.combine(step_size=1.0)
        session.commit()
    return {"weights": result.weights, "outliers": result.outliers, "combined": result.values}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--oscillation-seeds", type=int, default=10)
    args = parser.parse_args()
    sessions = new_service()
    runs = [bad_change(s, sessions) for s in range(args.seeds)]
    delays = np.array([r["rolled_back_after"] if r["rolled_back_after"] else np.inf for r in runs], dtype=float)
    mild = [bad_change(s, sessions, 0.05) for s in range(args.seeds)]
    mild_delays = np.array([r["rolled_back_after"] if r["rolled_back_after"] else np.inf for r in mild], dtype=float)
    cooldowns = (0, 5, 10)
    swings = {c: [oscillation(s, c, sessions) for s in range(args.oscillation_seeds)] for c in cooldowns}
    prior = priors(new_service())  # a store of its own: the runs above left priors of their own domains
    figure, axes = plt.subplots(1, 3, figsize=(15, 4))
    example = runs[0]
    axes[0].plot(example["rewards"], ".", ms=3, alpha=0.5, label="reward")
    axes[0].plot(example["emas"], label="EMA")
    axes[0].axvline(50, color="r", ls=":", label="bad change (lr 0.1)")
    if example["rolled_back_after"]:
        axes[0].axvline(50 + example["rolled_back_after"], color="g", ls=":", label="rollback")
    axes[0].set(xlabel="telemetry update", ylabel="meta-reward", title="seed 0: injected bad change")
    axes[0].legend(fontsize=8)
    finite = delays[np.isfinite(delays)]
    mild_finite = mild_delays[np.isfinite(mild_delays)]
    top = max(finite.max(), mild_finite.max() if len(mild_finite) else 1)
    axes[1].hist([finite, mild_finite], bins=np.arange(0.5, top + 1.5), label=["lr 0.1 (-0.65)", "lr 0.05 (-0.25)"])
    axes[1].legend(fontsize=8)
    axes[1].set(
        xlabel="updates from the bad change to the rollback", ylabel="seeds", title=f"{args.seeds} seeds per bad change"
    )
    for c in cooldowns:
        axes[2].plot(
            swings[c][0]["trace"], label=f"cooldown {c}: {np.mean([r['changes'] for r in swings[c]]):.0f} changes"
        )
    axes[2].set(
        xlabel="telemetry update",
        ylabel="learning rate (log)",
        yscale="log",
        title="naive agent on a noisy reward (seed 0)",
    )
    axes[2].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(HERE / "governor.png", dpi=110)
    rows = []
    for label, found, done in [
        ("bad change lr 0.1 rolled back", finite, runs),
        ("bad change lr 0.05 rolled back", mild_finite, mild),
    ]:
        rows.append(
            {
                "check": label,
                "seeds": args.seeds,
                "rolled_back": len(found),
                "median_updates": float(np.median(found)),
                "p95_updates": float(np.quantile(found, 0.95)),
                "max_updates": float(found.max()),
                "reward_recovered_share": float(np.mean([r["recovered"] for r in done])),
                "knobs_always_in_bounds": all(r["bounded"] for r in done),
            }
        )
    for c in cooldowns:
        rows.append(
            {
                "check": f"naive agent, cooldown {c}",
                "seeds": args.oscillation_seeds,
                "updates": 300,
                "mean_changes": float(np.mean([r["changes"] for r in swings[c]])),
                "mean_reversals": float(np.mean([r["reversals"] for r in swings[c]])),
                "knobs_always_in_bounds": all(in_bounds({"lr": v}) for r in swings[c] for v in r["trace"]),
            }
        )
    rows.append(
        {
            "check": "cross-domain prior",
            "outliers": ",".join(prior["outliers"]),
            "combined_lr": prior["combined"]["lr"],
            "combined_batch": prior["combined"]["batch"],
            "weight_each_vision": prior["weights"]["vision-a"],
            "weight_each_speech": prior["weights"]["speech-a"],
        }
    )
    append_record(
        "experiments/services/records/governor.jsonl",
        rows,
        settings={
            "ema_alpha": 0.3,
            "cooldown": 5,
            "rollback_cooldown": 20,
            "evaluation_window": 10,
            "drop_z": 3.0,
            "min_drop": 0.05,
            "figure": "governor.png",
        },
    )


if __name__ == "__main__":
    main()
