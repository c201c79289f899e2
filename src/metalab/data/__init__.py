"""Data sets (compact .npz files), episodic task samplers and continual task streams."""
