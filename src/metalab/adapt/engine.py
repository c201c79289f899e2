"""The inner loop of the MAML family: K gradient steps on every task of a meta-batch at once.

Parameters are a dict of stacked tensors ``{name: [task, ...]}``. The support losses of all tasks
are summed into one scalar, so one ``torch.autograd.grad`` call returns every task's own gradient
(task ``t``'s parameters only touch task ``t``'s loss): no Python loop over tasks.

Second- and first-order differ by one flag: ``first_order=False`` keeps the graph of the inner
gradients (``create_graph=True``) so the outer gradient flows through them (MAML); ``True`` treats
the inner gradients as constants (first-order MAML, ANIL as usually run, Reptile).
The step ``theta - lr * g`` goes through :func:`kernels.inner_update_params`, a fused Triton kernel
on CUDA and plain torch elsewhere.

Reptile's paper runs its inner loop differently (Nichol et al. 2018, Appendix A; openai/supervised-reptile):
Adam with beta1 = 0 instead of SGD, each step on a mini-batch of the task's examples instead of the whole
set. ``optimizer="adam"`` and ``batch`` give that, still for all tasks at once: each task draws its own
mini-batches (:func:`minibatch_indices`) and keeps its own moments, starting from an :class:`AdamState`
the caller owns (the learner carries it across tasks and meta-steps, as the paper's code does).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from metalab import kernels
from metalab.errors import ConfigError, NumericalError

Params = dict[str, torch.Tensor]
INNER_OPTIMIZERS = ("sgd", "adam")


@dataclass
class AdamState:
    """Adam's state (Kingma & Ba 2015) for the inner loop: ``step`` updates taken so far and the moments,
    ``{name: [...]}`` shared by all tasks (a start) or ``{name: [task, ...]}`` (after a task's steps)."""

    step: int
    exp_avg: Params
    exp_avg_sq: Params

    @staticmethod
    def zeros(params: Params) -> AdamState:
        return AdamState(
            0, {n: torch.zeros_like(p) for n, p in params.items()}, {n: torch.zeros_like(p) for n, p in params.items()}
        )


def minibatch_indices(
    tasks: int, n: int, batch: int, steps: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``[steps, tasks, batch]`` example indices: each task's steps read consecutive mini-batches of one
    stream of fresh random permutations of its ``n`` examples (a batch may run over into the next
    permutation), which is how Nichol et al.'s code draws inner mini-batches without replacement."""
    epochs = -(-steps * batch // n)
    stream = torch.rand(tasks, epochs, n, generator=generator).argsort(-1).flatten(1)
    return stream[:, : steps * batch].view(tasks, steps, batch).transpose(0, 1)


def merge_sequential(start: torch.Tensor, finals: torch.Tensor, steps: int, beta: float) -> torch.Tensor:
    """The moving average ``start`` after tasks ``0..T-1`` took ``steps`` updates each *one after another*,
    given each task's final average ``finals[t]`` when it started from ``start`` (as the batched loop runs
    them). An average with decay ``beta`` is linear in its start: task ``t`` adds
    ``finals[t] - beta**steps * start`` whatever it starts from, decayed by the later tasks' steps."""
    tasks = finals.shape[0]
    later = beta ** (steps * torch.arange(tasks - 1, -1, -1, dtype=finals.dtype, device=finals.device))
    deltas = finals - beta**steps * start
    return beta ** (steps * tasks) * start + (later.view(-1, *[1] * start.dim()) * deltas).sum(0)


def task_losses(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean loss of each task ``"t"``: cross-entropy for class labels ``"t n"`` (long) against logits
    ``"t n way"``, squared error for real targets ``"t n d"`` (regression, e.g. sine waves)."""
    if targets.is_floating_point():
        return (outputs - targets).pow(2).flatten(1).mean(1)
    per_example = F.cross_entropy(outputs.flatten(0, 1), targets.flatten(), reduction="none")
    return per_example.view(targets.shape).mean(1)


@dataclass
class InnerLoop:
    """``steps`` steps of SGD with rate ``lr`` (a float, or per-parameter tensors for Meta-SGD), or of
    Adam with step size ``lr`` (``optimizer="adam"``, first order only).

    ``names``: the parameters to adapt (all by default; the head only for ANIL). The others are used
    as given (shared by all tasks). ``batch``: each step on a random mini-batch of this many of the task's
    examples (:func:`minibatch_indices`); ``None`` or 0: every step on all of them.
    """

    steps: int
    lr: float
    first_order: bool = False
    names: list[str] | None = None
    learned_lr: dict[str, torch.Tensor] | None = field(default=None, repr=False)
    optimizer: str = "sgd"
    batch: int | None = None
    betas: tuple[float, float] = (0.0, 0.999)
    eps: float = 1e-8

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ConfigError(f"learner.inner_steps={self.steps} is not allowed: must be >= 0")
        if not self.lr > 0 and self.learned_lr is None:
            raise ConfigError(f"learner.inner_lr={self.lr} is not allowed: must be > 0")
        if self.optimizer not in INNER_OPTIMIZERS:
            raise ConfigError(
                f"learner.inner_optimizer={self.optimizer!r} is not allowed: must be one of {INNER_OPTIMIZERS}"
            )
        if self.batch is not None and self.batch < 0:
            raise ConfigError(
                f"learner.inner_batch={self.batch} is not allowed: must be >= 1, or 0/null for the whole support set"
            )
        if not all(0 <= b < 1 for b in self.betas) or not self.eps > 0:
            raise ConfigError(
                f"learner.inner_betas={list(self.betas)} / learner.inner_eps={self.eps} is not "
                "allowed: betas must be in [0, 1) and eps > 0"
            )
        if self.optimizer == "adam" and (not self.first_order or self.learned_lr is not None):
            raise ConfigError(
                "learner.inner_optimizer='adam' is not allowed here: it needs a first-order learner "
                "(reptile, or fomaml) without learned inner rates (learn_inner_lr=false)"
            )

    def adapt(
        self,
        forward: Callable[[Params, torch.Tensor], torch.Tensor],
        params: Params,
        inputs: torch.Tensor,
        labels: torch.Tensor,
        steps: int | None = None,
        first_order: bool | None = None,
        batch: int | None = None,
        state: AdamState | None = None,
    ) -> Params:
        """Adapted parameters ``{name: [task, ...]}`` after the inner steps on ``(inputs, labels)``.

        ``params`` is the shared initialisation ``{name: [...]}``; ``forward(params, inputs)`` takes
        the stacked form ``{name: [task, ...]}`` and ``inputs "task n ..."``. ``batch`` overrides the
        loop's mini-batch size (e.g. a different one at evaluation); ``state``: Adam's start (zeros if None).
        """
        return self.run(forward, params, inputs, labels, steps, first_order, batch, state)[0]

    def run(
        self,
        forward: Callable[[Params, torch.Tensor], torch.Tensor],
        params: Params,
        inputs: torch.Tensor,
        labels: torch.Tensor,
        steps: int | None = None,
        first_order: bool | None = None,
        batch: int | None = None,
        state: AdamState | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Params, AdamState | None]:
        """:meth:`adapt`, and for Adam each task's final state (``{name: [task, ...]}``), which the caller
        may carry on; ``generator`` draws the mini-batches (the global one by default)."""
        steps = self.steps if steps is None else steps
        first_order = self.first_order if first_order is None else first_order
        batch = self.batch if batch is None else batch
        tasks, examples = inputs.shape[:2]
        names = self.names if self.names is not None else list(params)
        adam = self.optimizer == "adam"
        if adam:
            state = AdamState.zeros({k: params[k] for k in names}) if state is None else state
            state = AdamState(state.step, dict(state.exp_avg), dict(state.exp_avg_sq))
        picks = (
            minibatch_indices(tasks, examples, batch, steps, generator).to(inputs.device)
            if batch and batch != examples and steps > 0
            else None
        )
        rows = torch.arange(tasks, device=inputs.device).unsqueeze(1)
        current = dict(params)  # shared [...] until a name is first updated, then [task, ...]
        for step in range(steps):
            x, y = (inputs, labels) if picks is None else (inputs[rows, picks[step]], labels[rows, picks[step]])
            # Broadcast views of the shared tensors (no copy); gradients with respect to these
            # views come out per task.
            stacked = {n: p if p.dim() > params[n].dim() else p.expand(tasks, *p.shape) for n, p in current.items()}
            loss = task_losses(forward(stacked, x), y)
            if not torch.isfinite(loss).all():
                bad = (~torch.isfinite(loss)).nonzero().flatten().tolist()
                raise NumericalError(
                    f"inner-loop loss became non-finite at inner step {step} (tasks {bad[:5]}); "
                    "lower learner.inner_lr or check the data"
                )
            grads = torch.autograd.grad(loss.sum(), [stacked[n] for n in names], create_graph=not first_order)
            if adam:
                current.update(self._adam_step({n: current[n] for n in names}, dict(zip(names, grads)), state))
                continue
            lr = {n: self.learned_lr[n] for n in names} if self.learned_lr is not None else self.lr
            current.update(
                kernels.inner_update_params(
                    {n: current[n] for n in names}, {n: g.contiguous() for n, g in zip(names, grads)}, lr
                )
            )
        fast = {n: p if p.dim() > params[n].dim() else p.expand(tasks, *p.shape) for n, p in current.items()}
        return fast, state if adam else None

    def _adam_step(self, params: Params, grads: Params, state: AdamState) -> Params:
        """One Adam update of every task's parameters; ``state`` advances in place (per-task moments).

        As ``torch.optim.Adam``: ``m <- b1 m + (1-b1) g``, ``v <- b2 v + (1-b2) g^2``,
        ``theta <- theta - lr / (1-b1^k) * m / (sqrt(v / (1-b2^k)) + eps)``. (TensorFlow's Adam, which
        Nichol et al. used, adds eps before the bias correction of v: the same up to eps = 1e-8.)"""
        beta1, beta2 = self.betas
        state.step += 1
        correction1, correction2 = 1 - beta1**state.step, (1 - beta2**state.step) ** 0.5
        out = {}
        for name, p in params.items():
            g = grads[name]
            m = state.exp_avg[name] = beta1 * state.exp_avg[name] + (1 - beta1) * g
            v = state.exp_avg_sq[name] = beta2 * state.exp_avg_sq[name] + (1 - beta2) * g * g
            out[name] = p - (self.lr / correction1) * m / (v.sqrt() / correction2 + self.eps)
        return out
