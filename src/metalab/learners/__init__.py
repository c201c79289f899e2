"""LightningModules: meta-learners (``meta/``) and continual learners (``continual/``)."""
