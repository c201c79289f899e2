"""The inner loop of the MAML family: K gradient steps on every task of a meta-batch at once.

Parameters are a dict of stacked tensors ``{name: [task, ...]}``. The support losses of all tasks
are summed into one scalar, so one ``torch.autograd.grad`` call returns every task's own gradient
(task ``t``'s parameters only touch task ``t``'s loss): no Python loop over tasks.

Second- and first-order differ by one flag: ``first_order=False`` keeps the graph of the inner
gradients (``create_graph=True``) so the outer gradient flows through them (MAML); ``True`` treats
the inner gradients as constants (first-order MAML, ANIL as usually run, Reptile).
The step ``theta - lr * g`` goes through :func:`kernels.inner_update_params`, a fused Triton kernel
on CUDA and plain torch elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from metalab import kernels
from metalab.errors import ConfigError, NumericalError

Params = dict[str, torch.Tensor]


def task_losses(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean loss of each task ``"t"``: cross-entropy for class labels ``"t n"`` (long) against logits
    ``"t n way"``, squared error for real targets ``"t n d"`` (regression, e.g. sine waves)."""
    if targets.is_floating_point():
        return (outputs - targets).pow(2).flatten(1).mean(1)
    per_example = F.cross_entropy(outputs.flatten(0, 1), targets.flatten(), reduction="none")
    return per_example.view(targets.shape).mean(1)


@dataclass
class InnerLoop:
    """``steps`` steps of SGD with rate ``lr`` (a float, or per-parameter tensors for Meta-SGD).

    ``names``: the parameters to adapt (all by default; the head only for ANIL). The others are used
    as given (shared by all tasks).
    """

    steps: int
    lr: float
    first_order: bool = False
    names: list[str] | None = None
    learned_lr: dict[str, torch.Tensor] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ConfigError(f"learner.inner_steps={self.steps} is not allowed: must be >= 0")
        if not self.lr > 0 and self.learned_lr is None:
            raise ConfigError(f"learner.inner_lr={self.lr} is not allowed: must be > 0")

    def adapt(
        self,
        forward: Callable[[Params, torch.Tensor], torch.Tensor],
        params: Params,
        inputs: torch.Tensor,
        labels: torch.Tensor,
        steps: int | None = None,
        first_order: bool | None = None,
    ) -> Params:
        """Adapted parameters ``{name: [task, ...]}`` after the inner steps on ``(inputs, labels)``.

        ``params`` is the shared initialisation ``{name: [...]}``; ``forward(params, inputs)`` takes
        the stacked form ``{name: [task, ...]}`` and ``inputs "task n ..."``.
        """
        steps = self.steps if steps is None else steps
        first_order = self.first_order if first_order is None else first_order
        tasks = inputs.shape[0]
        names = self.names if self.names is not None else list(params)
        current = dict(params)  # shared [...] until a name is first updated, then [task, ...]
        for step in range(steps):
            # Broadcast views of the shared tensors (no copy); gradients with respect to these
            # views come out per task.
            stacked = {n: p if p.dim() > params[n].dim() else p.expand(tasks, *p.shape) for n, p in current.items()}
            loss = task_losses(forward(stacked, inputs), labels)
            if not torch.isfinite(loss).all():
                bad = (~torch.isfinite(loss)).nonzero().flatten().tolist()
                raise NumericalError(
                    f"inner-loop loss became non-finite at inner step {step} (tasks {bad[:5]}); "
                    "lower learner.inner_lr or check the data"
                )
            grads = torch.autograd.grad(loss.sum(), [stacked[n] for n in names], create_graph=not first_order)
            lr = {n: self.learned_lr[n] for n in names} if self.learned_lr is not None else self.lr
            current.update(kernels.inner_update_params(
                {n: current[n] for n in names}, {n: g.contiguous() for n, g in zip(names, grads)}, lr
            ))
        return {n: p if p.dim() > params[n].dim() else p.expand(tasks, *p.shape) for n, p in current.items()}
