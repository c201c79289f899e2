"""Meta-learners over episodes: Prototypical Networks; the MAML family over ``metalab.adapt``."""
