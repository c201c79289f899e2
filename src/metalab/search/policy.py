"""Policy search: a population of small MLP policies evaluated together on batched environments.

Every individual's flat parameter vector is cut into stacked weight tensors ``[policy, in, out]``, so
one batched matrix product per layer computes the actions of all policies on all their episodes at once
and one call steps all environments: ``population x episodes`` rollouts cost one Python loop over
time steps, not one per individual. :func:`rollout_one_by_one` is the plain per-individual loop kept
as the reference (tests) and the baseline (benchmarks).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from einops import rearrange, repeat

from metalab.errors import ConfigError
from metalab.search.envs import BatchedEnv, GymnasiumVectorEnv
from metalab.search.space import SearchSpace

ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu}


class StackedMLP:
    """An MLP whose parameters arrive as ``[policy, parameters]`` rows; no nn.Module, no per-policy copies."""

    def __init__(self, sizes: Sequence[int], activation: str = "tanh") -> None:
        if activation not in ACTIVATIONS:
            raise ConfigError(f"activation={activation!r} is not allowed: use one of {', '.join(ACTIVATIONS)}")
        self.sizes, self.activation = list(sizes), ACTIVATIONS[activation]
        self.shapes = [(a, b) for a, b in zip(self.sizes, self.sizes[1:])]
        self.parameter_count = sum(a * b + b for a, b in self.shapes)

    def unflatten(self, genomes: np.ndarray) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``[policy, parameters]`` -> per layer ``(weight [policy, in, out], bias [policy, 1, out])``."""
        flat = torch.as_tensor(genomes, dtype=torch.float32)
        layers, offset = [], 0
        for fan_in, fan_out in self.shapes:
            weight = rearrange(flat[:, offset : offset + fan_in * fan_out], "p (i o) -> p i o", i=fan_in)
            offset += fan_in * fan_out
            bias = rearrange(flat[:, offset : offset + fan_out], "p o -> p 1 o")
            offset += fan_out
            layers.append((weight, bias))
        return layers

    def forward(self, layers: list[tuple[torch.Tensor, torch.Tensor]], observations: torch.Tensor) -> torch.Tensor:
        """``[policy, episode, obs]`` -> ``[policy, episode, out]``: one ``baddbmm`` per layer for all policies."""
        hidden = observations
        for depth, (weight, bias) in enumerate(layers):
            hidden = torch.baddbmm(bias, hidden, weight)
            if depth < len(layers) - 1:
                hidden = self.activation(hidden)
        return hidden


def _action_head(space: gym.spaces.Space) -> tuple[int, Callable[[torch.Tensor], np.ndarray]]:
    """Network outputs and how they become actions: argmax for discrete, scaled tanh for a box."""
    if isinstance(space, gym.spaces.Discrete):
        return int(space.n), lambda out: out.argmax(-1).numpy()
    if isinstance(space, gym.spaces.Box) and len(space.shape) == 1:
        low, high = torch.as_tensor(space.low), torch.as_tensor(space.high)
        return int(space.shape[0]), lambda out: (low + (torch.tanh(out) + 1) * (high - low) / 2).numpy()
    raise ConfigError(f"action space {space} is not supported: policy search handles Discrete and 1-D Box actions")


class PolicySearch:
    """A gymnasium task as a :class:`~metalab.search.problems.Problem`: fitness is the mean return of
    ``episodes`` episodes per candidate. ``env`` builds a batched env of a given size (a Hydra partial).

    The space is a box of ``parameter_count`` floats in ``[-weight_bound, weight_bound]``; searchers start
    from its centre (zero weights). ``solved_at`` is the return the task counts as solved (gymnasium's
    threshold, e.g. 475 for CartPole-v1); a run may stop once the searcher's solution reaches it.
    ``common_starts``: in a generation every candidate plays its episodes from the same start states
    (drawn anew each generation), so selection compares policies rather than the luck of the draw.
    """

    objectives = 1

    def __init__(
        self,
        env: Callable[[int], BatchedEnv] | None = None,
        hidden: Sequence[int] = (16,),
        activation: str = "tanh",
        episodes: int = 1,
        eval_episodes: int = 100,
        solved_at: float | None = None,
        weight_bound: float = 10.0,
        common_starts: bool = True,
    ) -> None:
        if episodes < 1 or eval_episodes < 1:
            raise ConfigError(
                f"episodes={episodes!r}, eval_episodes={eval_episodes!r} are not allowed: both must be >= 1"
            )
        hidden = list(hidden)
        if not all(isinstance(width, int) and not isinstance(width, bool) and width >= 1 for width in hidden):
            raise ConfigError(
                f"hidden={hidden!r} is not allowed: hidden must be a list of layer widths >= 1 "
                "(e.g. [16]; [] for a linear policy)"
            )
        self.make_env = env or partial(GymnasiumVectorEnv, "CartPole-v1")
        probe = self.make_env(num_envs=1)
        self.observation_size = int(math.prod(probe.single_observation_space.shape))
        outputs, self.to_action = _action_head(probe.single_action_space)
        self.max_episode_steps = probe.max_episode_steps
        self.policy = StackedMLP([self.observation_size, *hidden, outputs], activation)
        self.episodes, self.eval_episodes, self.solved_at = episodes, eval_episodes, solved_at
        self.common_starts = common_starts
        self.space = SearchSpace.box(self.policy.parameter_count, -weight_bound, weight_bound, prefix="w")
        self._envs: dict[int, BatchedEnv] = {}

    def env(self, num_envs: int) -> BatchedEnv:
        """Environments are reused between generations (same size -> same object); reset re-seeds them."""
        if num_envs not in self._envs:
            self._envs[num_envs] = self.make_env(num_envs=num_envs)
        return self._envs[num_envs]

    @torch.no_grad()
    def returns(self, genomes: np.ndarray, episodes: int, seed: int, common_starts: bool = False) -> np.ndarray:
        """``[policy, episodes]`` undiscounted returns, every rollout of every policy stepped together."""
        policies = len(genomes)
        env = self.env(policies * episodes)
        layers = self.policy.unflatten(genomes)
        observations = env.reset(seed=seed, groups=policies if common_starts and policies > 1 else 1)
        total = np.zeros(policies * episodes)
        running = np.ones(policies * episodes, dtype=bool)
        for _ in range(env.max_episode_steps):
            batch = rearrange(torch.as_tensor(observations, dtype=torch.float32), "(p e) o -> p e o", p=policies)
            actions = self.to_action(rearrange(self.policy.forward(layers, batch), "p e a -> (p e) a"))
            observations, rewards, done = env.step(actions)
            total += np.where(running, rewards, 0.0)
            running &= ~done
            if not running.any():
                break
        return rearrange(total, "(p e) -> p e", p=policies)

    def evaluate(self, genomes: np.ndarray, seed: int = 0) -> np.ndarray:
        return self.returns(genomes, self.episodes, seed, self.common_starts).mean(axis=1)

    def evaluate_solution(self, genome: np.ndarray, seed: int, episodes: int | None = None) -> np.ndarray:
        """Returns of one policy over ``episodes`` (default ``eval_episodes``) fresh episodes, batched."""
        episodes = episodes or self.eval_episodes
        return self.returns(genome[None], episodes, seed)[0]

    def assess(self, searcher: Any, seed: int = 0) -> dict[str, float]:
        returns = self.evaluate_solution(searcher.best().genome, seed)
        ci95 = 1.96 * returns.std(ddof=1) / math.sqrt(len(returns)) if len(returns) > 1 else float("nan")
        # no "solved" here: that is decided once, by metalab.search.solved.solve_check
        return {"mean_return": float(returns.mean()), "mean_return_ci95": float(ci95), "episodes": float(len(returns))}


@torch.no_grad()
def rollout_one_by_one(
    problem: PolicySearch, genomes: np.ndarray, env_id: str, seed: int, initial_states: np.ndarray | None = None
) -> np.ndarray:
    """Reference and baseline: each policy in turn, one gymnasium env, one forward per step.

    ``initial_states`` (``[policy, state]``) overrides the env's start state, so a test can give both
    paths the same starts."""
    returns = np.zeros(len(genomes))
    env = gym.make(env_id)
    for index, genome in enumerate(genomes):
        layers = problem.policy.unflatten(genome[None])
        observation, _ = env.reset(seed=seed + index)
        if initial_states is not None:
            env.unwrapped.state = initial_states[index].copy()
            observation = (
                env.unwrapped._get_obs()
                if hasattr(env.unwrapped, "_get_obs")
                else initial_states[index].astype(np.float32)
            )
        done = False
        while not done:
            batch = repeat(torch.as_tensor(observation, dtype=torch.float32), "o -> 1 1 o")
            action = problem.to_action(problem.policy.forward(layers, batch)[0])[0]
            observation, reward, terminated, truncated, _ = env.step(action)
            returns[index] += float(reward)
            done = terminated or truncated
    env.close()
    return returns
