"""metalab: a training framework for learning to learn (meta-learning, continual learning, search)."""

__version__ = "0.1.0"
