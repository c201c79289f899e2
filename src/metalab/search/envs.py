"""Batched environments: many copies of one gymnasium task stepped by one call on ``[envs, ...]`` arrays.

CartPole comes from gymnasium itself (``gymnasium.make_vec(..., vectorization_mode="vector_entry_point")``
gives its numpy-vectorised ``CartPoleVectorEnv``). Pendulum has no vectorised form in gymnasium, so
:class:`BatchedPendulum` implements the same dynamics on arrays; a test holds it step by step against
gymnasium's ``Pendulum-v1``. Anything else falls back to gymnasium's ``SyncVectorEnv`` (correct, but one
Python step per copy).
"""

from __future__ import annotations

from typing import Protocol

import gymnasium as gym
import numpy as np

from metalab.errors import ConfigError


class BatchedEnv(Protocol):
    num_envs: int
    single_observation_space: gym.spaces.Space
    single_action_space: gym.spaces.Space
    max_episode_steps: int

    def reset(self, seed: int, groups: int = 1) -> np.ndarray:
        """``[envs, obs]`` first observations drawn from ``seed``. ``groups > 1``: the envs form that many
        consecutive groups that all start from the same states (common random numbers: every candidate
        meets the same starts, so fitness differences come from the policies, not from luck)."""

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(observations, rewards, done)`` each ``[envs, ...]``; after ``done`` a copy's values are ignored."""


class GymnasiumVectorEnv:
    """A gymnasium task as a batch: its own vectorised class where it has one, else ``SyncVectorEnv``."""

    def __init__(self, id: str, num_envs: int) -> None:
        spec = gym.spec(id)
        mode = "vector_entry_point" if spec.vector_entry_point else "sync"
        self._env = gym.make_vec(id, num_envs=num_envs, vectorization_mode=mode)
        self.num_envs = num_envs
        self.single_observation_space = self._env.single_observation_space
        self.single_action_space = self._env.single_action_space
        self.max_episode_steps = int(spec.max_episode_steps)

    def reset(self, seed: int, groups: int = 1) -> np.ndarray:
        observations, _ = self._env.reset(seed=seed)
        if groups == 1:
            return observations
        state = getattr(self._env, "state", None)
        if not isinstance(state, np.ndarray) or state.shape[-1] != self.num_envs:
            raise ConfigError(f"common start states need an env with a [state, envs] array; {self._env} has none")
        per_group = self.num_envs // groups
        self._env.state = np.tile(state[:, :per_group], (1, groups))
        return self._env.state.T.astype(np.float32)

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        observations, rewards, terminated, truncated, _ = self._env.step(actions)
        return observations, rewards, terminated | truncated


class BatchedPendulum:
    """Pendulum-v1 on arrays (gymnasium's documented dynamics, defaults g = 10, m = l = 1, dt = 0.05):

    torque ``u`` clipped to [-2, 2]; reward ``-(angle^2 + 0.1 speed^2 + 0.001 u^2)`` with the angle taken
    in [-pi, pi); speed += (3 g / (2 l) sin(angle) + 3 / (m l^2) u) dt, clipped to [-8, 8]; angle += speed dt.
    Start: angle ~ U[-pi, pi], speed ~ U[-1, 1]; 200 steps per episode, no termination.
    """

    gravity, mass, length, dt, max_speed, max_torque = 10.0, 1.0, 1.0, 0.05, 8.0, 2.0

    def __init__(self, num_envs: int, max_episode_steps: int = 200) -> None:
        self.num_envs, self.max_episode_steps = num_envs, max_episode_steps
        self.single_observation_space = gym.spaces.Box(
            np.array([-1.0, -1.0, -8.0], dtype=np.float32), np.array([1.0, 1.0, 8.0], dtype=np.float32)
        )
        self.single_action_space = gym.spaces.Box(-2.0, 2.0, shape=(1,), dtype=np.float32)
        self.angle = self.speed = np.zeros(num_envs)
        self.steps = 0

    def reset(self, seed: int, groups: int = 1) -> np.ndarray:
        rng = np.random.default_rng(seed)
        per_group = self.num_envs // groups
        self.angle = np.tile(rng.uniform(-np.pi, np.pi, per_group), groups)
        self.speed = np.tile(rng.uniform(-1.0, 1.0, per_group), groups)
        self.steps = 0
        return self._observe()

    def set_state(self, angle: np.ndarray, speed: np.ndarray) -> np.ndarray:
        self.angle, self.speed, self.steps = np.asarray(angle, np.float64), np.asarray(speed, np.float64), 0
        return self._observe()

    def _observe(self) -> np.ndarray:
        return np.stack([np.cos(self.angle), np.sin(self.angle), self.speed], axis=1).astype(np.float32)

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        torque = np.clip(np.asarray(actions, np.float64).reshape(self.num_envs), -self.max_torque, self.max_torque)
        wrapped = (self.angle + np.pi) % (2 * np.pi) - np.pi
        cost = wrapped**2 + 0.1 * self.speed**2 + 0.001 * torque**2
        acceleration = (
            3 * self.gravity / (2 * self.length) * np.sin(self.angle) + 3.0 / (self.mass * self.length**2) * torque
        )
        self.speed = np.clip(self.speed + acceleration * self.dt, -self.max_speed, self.max_speed)
        self.angle = self.angle + self.speed * self.dt
        self.steps += 1
        done = np.full(self.num_envs, self.steps >= self.max_episode_steps)
        return self._observe(), -cost, done
