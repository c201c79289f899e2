"""Lightning callbacks used by every run: throughput, RNG state and the final state in checkpoints, signals,
progress toward a step or time budget."""

from metalab.callbacks.checkpoint import FinalStateCheckpoint
from metalab.callbacks.progress import BudgetProgress
from metalab.callbacks.rng import RNGStateInCheckpoint
from metalab.callbacks.signals import StopOnSignal
from metalab.callbacks.throughput import TrainThroughput

__all__ = ["BudgetProgress", "FinalStateCheckpoint", "RNGStateInCheckpoint", "StopOnSignal", "TrainThroughput"]
