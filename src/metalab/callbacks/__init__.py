"""Lightning callbacks used by every run: training throughput and RNG state in checkpoints."""

from metalab.callbacks.rng import RNGStateInCheckpoint
from metalab.callbacks.throughput import TrainThroughput

__all__ = ["RNGStateInCheckpoint", "TrainThroughput"]
