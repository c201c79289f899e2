"""Batched policy evaluation: the same returns as one gymnasium env per policy, and the batched Pendulum
steps exactly like gymnasium's."""

from __future__ import annotations

from functools import partial

import gymnasium as gym
import numpy as np
import pytest
import torch

from metalab.search.envs import BatchedPendulum, GymnasiumVectorEnv
from metalab.search.policy import PolicySearch, StackedMLP, rollout_one_by_one


def test_batched_pendulum_steps_like_gymnasium():
    rng = np.random.default_rng(0)
    batched = BatchedPendulum(num_envs=5)
    angle, speed = rng.uniform(-np.pi, np.pi, 5), rng.uniform(-1, 1, 5)
    observations = batched.set_state(angle, speed)
    singles = [gym.make("Pendulum-v1").unwrapped for _ in range(5)]
    for env, a, s in zip(singles, angle, speed):
        env.reset(seed=0)
        env.state = np.array([a, s])
    np.testing.assert_allclose(observations, np.stack([e._get_obs() for e in singles]), rtol=1e-6)
    for _ in range(200):
        torque = rng.uniform(-3, 3, (5, 1))  # beyond the limit too: both must clip
        observations, rewards, _ = batched.step(torque)
        expected = [env.step(t.astype(np.float64)) for env, t in zip(singles, torque)]
        np.testing.assert_allclose(rewards, [r for _, r, *_ in expected], rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(observations, np.stack([o for o, *_ in expected]), rtol=1e-5, atol=1e-6)


def test_stacked_mlp_equals_one_network_per_policy():
    mlp = StackedMLP([3, 5, 2], activation="tanh")
    genomes = np.random.default_rng(1).normal(size=(4, mlp.parameter_count))
    observations = torch.randn(4, 6, 3)
    batched = mlp.forward(mlp.unflatten(genomes), observations)
    for p, genome in enumerate(genomes):
        w1 = torch.tensor(genome[:15], dtype=torch.float32).reshape(3, 5)
        b1 = torch.tensor(genome[15:20], dtype=torch.float32)
        w2 = torch.tensor(genome[20:30], dtype=torch.float32).reshape(5, 2)
        b2 = torch.tensor(genome[30:32], dtype=torch.float32)
        expected = torch.tanh(observations[p] @ w1 + b1) @ w2 + b2
        torch.testing.assert_close(batched[p], expected)


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_batched_returns_equal_a_per_policy_loop(env_id):
    """Same start states, same policies: every batched return equals the one-env-per-policy return."""
    make = partial(GymnasiumVectorEnv, "CartPole-v1") if env_id == "CartPole-v1" else BatchedPendulum
    problem = PolicySearch(make, hidden=(8,), episodes=1, common_starts=False)
    genomes = np.random.default_rng(2).normal(scale=0.5, size=(6, len(problem.space)))
    batched = problem.returns(genomes, episodes=1, seed=5)[:, 0]
    env = problem.env(6)
    env.reset(seed=5)
    if env_id == "CartPole-v1":
        starts = env._env.state.T.copy()
    else:
        rng = np.random.default_rng(5)
        starts = np.stack([rng.uniform(-np.pi, np.pi, 6), rng.uniform(-1, 1, 6)], axis=1)
    reference = rollout_one_by_one(problem, genomes, env_id, seed=0, initial_states=starts)
    np.testing.assert_allclose(batched, reference, rtol=1e-4)
    assert len(set(np.round(batched, 3))) > 1  # the policies differ, so this compared something


def test_common_starts_give_every_candidate_the_same_episodes():
    problem = PolicySearch(BatchedPendulum, hidden=(4,), episodes=3, common_starts=True)
    same = np.zeros((5, len(problem.space)))
    returns = problem.returns(same, 3, seed=9, common_starts=True)
    np.testing.assert_array_equal(returns, np.broadcast_to(returns[0], returns.shape))
    assert len(set(returns[0])) == 3
    independent = problem.returns(same, 3, seed=9, common_starts=False)
    assert len(set(independent.ravel())) == 15
