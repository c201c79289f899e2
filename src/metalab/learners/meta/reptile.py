"""Reptile (Nichol, Achiam & Schulman 2018) on the batched inner loop.

Each task of the meta-batch is adapted with ``inner_steps`` SGD steps on its support set (all tasks
at once, first order); the initialisation then moves toward the mean of the adapted weights:
``theta <- theta + eps * mean_t(theta_t - theta)``. This is done by handing the optimiser the
"gradient" ``theta - mean_t(theta_t)`` (the negated :func:`~metalab.adapt.outer_update.reptile_direction`,
the one copy of the interpolation, shared with the services' governor): with SGD(lr=eps) it is exactly
``reptile_update(theta, theta_t, eps)``.
A meta-batch of 1 is serial Reptile; more tasks is batched Reptile.

The paper's inner loop (Nichol et al. 2018, Appendix A, and its code, openai/supervised-reptile) is Adam with
beta1 = 0 on mini-batches of the task's examples, its state carried across tasks: ``inner_optimizer: adam``,
``inner_batch``, ``eval_inner_batch`` (see :mod:`metalab.learners.meta.maml`); ``sgd`` is plain SGD.
"""

from __future__ import annotations

import torch

from metalab.adapt.outer_update import reptile_direction
from metalab.learners.meta.episodic import Batch
from metalab.learners.meta.maml import MAML


class Reptile(MAML):
    """Same adaptation as first-order MAML; a different outer update (manual optimisation)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs["first_order"] = True
        super().__init__(*args, **kwargs)
        self.automatic_optimization = False

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        params = dict(self.backbone.named_parameters())
        fast = self.adapt_support(batch["support"], batch["support_labels"], self.inner.steps, first_order=True)
        optimizer = self.optimizers()
        optimizer.zero_grad()
        with torch.no_grad():
            for name, p in params.items():
                p.grad = -reptile_direction(p, fast[name])
            logits = self.model(fast, batch["query"])
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch["query_labels"].flatten())
        if self.skips_nonfinite(loss):
            return loss  # no outer update (nor schedule step) from a poisoned batch
        self.check_finite(loss)
        optimizer.step()
        scheduler = self.lr_schedulers()
        if scheduler is not None:
            scheduler.step()
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/acc", (logits.argmax(-1) == batch["query_labels"]).float().mean() * 100, prog_bar=True)
        return loss
