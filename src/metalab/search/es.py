"""Evolution strategies over flat parameter vectors: OpenAI-ES and CMA-ES (through ``cmaes``).

Both keep a search distribution and move it; their ``best()`` is the distribution's mean, the
estimate ES methods are judged by (a single noisy sample that scored well is not).
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Sequence
from typing import Any

import numpy as np

from metalab.errors import ConfigError
from metalab.search.base import Candidate, checked_fitness, require_positive, stack
from metalab.search.space import SearchSpace

log = logging.getLogger(__name__)


def centered_ranks(fitness: np.ndarray) -> np.ndarray:
    """Fitness replaced by its rank scaled to ``[-0.5, 0.5]`` (Salimans et al. 2017): the update then
    depends only on the order of the returns, so one outlier episode cannot dominate a step."""
    n = len(fitness)
    if n == 1:
        return np.zeros(1)
    ranks = np.empty(n)
    ranks[np.argsort(fitness, kind="stable")] = np.arange(n)
    return ranks / (n - 1) - 0.5


def es_gradient(noise: np.ndarray, weights: np.ndarray, sigma: float) -> np.ndarray:
    """Monte-Carlo gradient of ``E[f(mean + sigma * eps)]`` w.r.t. the mean: ``sum_i w_i eps_i / (n sigma)``.

    With antithetic pairs ``(eps, -eps)`` the even part of ``f`` cancels, which removes most variance.
    """
    return weights @ noise / (len(weights) * sigma)


class _Adam:
    """Adam (Kingma and Ba 2015) for *ascent* on a numpy vector; the state is three plain values."""

    def __init__(
        self, dimension: int, learning_rate: float, beta1: float = 0.9, beta2: float = 0.999, epsilon: float = 1e-8
    ) -> None:
        self.learning_rate, self.beta1, self.beta2, self.epsilon = learning_rate, beta1, beta2, epsilon
        self.first, self.second, self.steps = np.zeros(dimension), np.zeros(dimension), 0

    def step(self, gradient: np.ndarray) -> np.ndarray:
        self.steps += 1
        self.first = self.beta1 * self.first + (1 - self.beta1) * gradient
        self.second = self.beta2 * self.second + (1 - self.beta2) * gradient**2
        first_hat = self.first / (1 - self.beta1**self.steps)
        second_hat = self.second / (1 - self.beta2**self.steps)
        return self.learning_rate * first_hat / (np.sqrt(second_hat) + self.epsilon)


def _initial_mean(space: SearchSpace, initial_mean: Any, initial_std: float, rng: np.random.Generator) -> np.ndarray:
    if initial_mean is not None:
        mean = np.broadcast_to(np.asarray(initial_mean, dtype=np.float64), (len(space),)).copy()
    else:
        mean = (space.low + space.high) / 2
    return mean + initial_std * rng.standard_normal(len(space)) if initial_std > 0 else mean


class OpenAIES:
    """OpenAI-ES (Salimans et al. 2017): antithetic Gaussian perturbations of the mean, centred-rank
    fitness shaping, Adam on the mean, optional L2 weight decay. Genes are treated as real numbers and not
    clipped (a flat parameter vector has no natural bounds; the space's centre is the starting point)."""

    def __init__(
        self,
        space: SearchSpace,
        population_size: int = 256,
        sigma: float = 0.1,
        learning_rate: float = 0.03,
        weight_decay: float = 0.0,
        fitness_shaping: str = "centered_ranks",
        initial_mean: Any = None,
        initial_std: float = 0.0,
        seed: int = 0,
    ) -> None:
        if population_size < 2 or population_size % 2:
            raise ConfigError(
                f"population_size={population_size!r} is not allowed: OpenAI-ES samples antithetic "
                "pairs, so population_size must be even and >= 2"
            )
        if fitness_shaping not in ("centered_ranks", "none"):
            raise ConfigError(f"fitness_shaping={fitness_shaping!r} is not allowed: use centered_ranks or none")
        require_positive("sigma", sigma)
        require_positive("learning_rate", learning_rate)
        self.space, self.population_size, self.sigma = space, population_size, sigma
        self.weight_decay, self.fitness_shaping = weight_decay, fitness_shaping
        self.rng = np.random.default_rng(seed)
        self.mean = _initial_mean(space, initial_mean, initial_std, self.rng)
        self.optimizer = _Adam(len(space), learning_rate)
        self.generation, self.next_id = 0, 0
        self.last_gradient = np.zeros(len(space))

    def ask(self) -> list[Candidate]:
        half = self.rng.standard_normal((self.population_size // 2, len(self.space)))
        noise = np.concatenate([half, -half])
        genomes = self.mean + self.sigma * noise
        candidates = [Candidate(self.next_id + i, g) for i, g in enumerate(genomes)]
        self.next_id += len(candidates)
        return candidates

    def tell(self, candidates: Sequence[Candidate], fitnesses: Any) -> None:
        """One Adam step on the mean. The noise is recovered from each genome, so ``tell`` needs no state
        kept from ``ask`` (a dropped NaN individual simply leaves the estimate)."""
        kept, values = checked_fitness(candidates, fitnesses, 1, "OpenAIES")
        self.generation += 1
        if len(kept) < 2:
            log.warning(
                "OpenAIES: fewer than 2 finite fitness values in generation %d; mean not moved", self.generation
            )
            return
        noise = (stack(kept) - self.mean) / self.sigma
        weights = centered_ranks(values[:, 0]) if self.fitness_shaping == "centered_ranks" else values[:, 0]
        gradient = es_gradient(noise, weights, self.sigma) - self.weight_decay * self.mean
        self.last_gradient = gradient
        self.mean = self.mean + self.optimizer.step(gradient)

    def best(self) -> Candidate:
        return Candidate(-1, self.mean.copy())

    def state_dict(self) -> dict[str, Any]:
        adam = self.optimizer
        return {
            "rng": self.rng.bit_generator.state,
            "mean": self.mean.copy(),
            "generation": self.generation,
            "next_id": self.next_id,
            "adam": {"first": adam.first.copy(), "second": adam.second.copy(), "steps": adam.steps},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.mean = np.asarray(state["mean"], dtype=np.float64).copy()
        self.generation, self.next_id = int(state["generation"]), int(state["next_id"])
        adam = state["adam"]
        self.optimizer.first, self.optimizer.second = (
            np.asarray(adam["first"]).copy(),
            np.asarray(adam["second"]).copy(),
        )
        self.optimizer.steps = int(adam["steps"])


class CMAES:
    """CMA-ES (Hansen) as implemented by the ``cmaes`` package, behind the ask/tell contract.

    ``cmaes`` minimises and needs a full generation in ``tell``; fitness is negated, and a candidate
    whose fitness was NaN is logged, dropped from the statistics and ranked below every finite one
    (the closest ``cmaes`` allows to leaving it out). ``bounded=True`` passes the space's bounds to
    ``cmaes`` (it then only samples inside them); flat policy parameters use ``bounded=False``.
    """

    def __init__(
        self,
        space: SearchSpace,
        population_size: int | None = None,
        sigma: float = 0.5,
        initial_mean: Any = None,
        initial_std: float = 0.0,
        bounded: bool = True,
        seed: int = 0,
    ) -> None:
        from cmaes import CMA

        require_positive("sigma", sigma)
        if population_size is not None and population_size < 2:
            raise ConfigError(f"population_size={population_size!r} is not allowed: CMA-ES needs population_size >= 2")
        self.space = space
        rng = np.random.default_rng(seed)
        mean = _initial_mean(space, initial_mean, initial_std, rng)
        bounds = np.stack([space.low, space.high], axis=1) if bounded else None
        self._cma = CMA(mean=mean, sigma=sigma, bounds=bounds, population_size=population_size, seed=seed)
        self.population_size = self._cma.population_size
        self.generation, self.next_id = 0, 0

    def ask(self) -> list[Candidate]:
        candidates = [Candidate(self.next_id + i, self._cma.ask()) for i in range(self.population_size)]
        self.next_id += len(candidates)
        return candidates

    def tell(self, candidates: Sequence[Candidate], fitnesses: Any) -> None:
        kept, values = checked_fitness(candidates, fitnesses, 1, "CMAES")
        costs = {c.id: -v for c, v in zip(kept, values[:, 0])}
        worst = max(costs.values(), default=0.0)
        spread = abs(worst) + 1.0
        self._cma.tell([(c.genome, costs.get(c.id, worst + spread)) for c in candidates])
        self.generation += 1

    def best(self) -> Candidate:
        return Candidate(-1, np.array(self._cma.mean, dtype=np.float64))

    @property
    def sigma(self) -> float:
        return float(self._cma._sigma)

    def state_dict(self) -> dict[str, Any]:
        # The CMA object's attributes as they are, pickled: exact, and robust to cmaes renaming its private
        # fields. Not pickle.dumps(self._cma): cmaes's own pickling leaves out its random generator and
        # stores the covariance as one triangle, and either makes a resumed run sample differently.
        return {"cma": pickle.dumps(dict(vars(self._cma))), "generation": self.generation, "next_id": self.next_id}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from cmaes import CMA

        self._cma = CMA.__new__(CMA)
        vars(self._cma).update(pickle.loads(state["cma"]))
        self.generation, self.next_id = int(state["generation"]), int(state["next_id"])
