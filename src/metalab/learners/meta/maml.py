"""MAML and its kin on the batched inner loop (``metalab.adapt``).

One module, options instead of copies (Finn et al. 2017; Raghu et al. 2020; Li et al. 2017):

- MAML: ``first_order=False``: the meta-gradient flows through the inner updates;
- first-order MAML: ``first_order=True``;
- ANIL: ``adapt="head"``: only the linear head is adapted, on features the body computes once;
- Meta-SGD: ``learn_inner_lr=True``: one learnable inner rate per parameter entry, meta-learned
  with the initialisation.

``engine="serial"`` runs every task one after the other through :mod:`metalab.adapt.reference`,
the plain statement of the same math: for models no fast path covers, or to check one.

At validation and test the inner loop runs ``eval_inner_steps`` first-order steps (no meta-gradient
is needed there) and batch norm uses each task's own batch statistics, as in MAML's reference code:
by default those of its whole query set, which is *transductive* (a query's prediction depends on the
other queries). ``eval_transductive=False`` classifies each query alone, with the statistics of its
task's support set plus that one image: Nichol et al. 2018's non-transductive setting.

``inner_optimizer="adam"`` with ``inner_batch`` / ``eval_inner_batch`` is Reptile's inner loop as its
paper runs it (Adam with beta1 = 0 on mini-batches; first order only). Adam's state is the learner's
(:class:`InnerAdamState`, saved in checkpoints), carried across tasks and meta-steps and never reset, as
in Nichol et al.'s code (openai/supervised-reptile: only the model's weights are reset between tasks, the
optimiser's slots live on; evaluation starts every test task from the training state and discards its
changes). The meta-batch's tasks run at once from the same start; the state then becomes what running them
one after another would have left (:func:`metalab.adapt.engine.merge_sequential`).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch import nn

from metalab import kernels
from metalab.adapt import AdamState, InnerLoop, TaskBatchedModel, merge_sequential, reference
from metalab.errors import ConfigError
from metalab.learners.meta.episodic import Batch, EpisodicLearner
from metalab.models.conv4 import Conv4


class MAML(EpisodicLearner):
    """Meta-learns an initialisation (and optionally per-parameter inner rates) by K-step adaptation."""

    def __init__(
        self,
        backbone: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        inner_steps: int = 1,
        inner_lr: float = 0.4,
        eval_inner_steps: int = 3,
        first_order: bool = False,
        adapt: str = "all",
        learn_inner_lr: bool = False,
        channels_last: bool = True,
        chunk_images: int = 0,
        support_chunk_images: int | None = None,
        engine: str = "auto",
        eval_transductive: bool = True,
        inner_optimizer: str = "sgd",
        inner_batch: int | None = None,
        eval_inner_batch: int | None = None,
        inner_betas: tuple[float, float] = (0.0, 0.999),
        inner_eps: float = 1e-8,
    ) -> None:
        super().__init__(backbone, optimizer, scheduler, channels_last=channels_last)
        if (inner_optimizer != "sgd" or inner_batch or eval_inner_batch) and (
            adapt == "head" or engine == "serial" or learn_inner_lr
        ):
            raise ConfigError(
                f"learner.inner_optimizer={inner_optimizer!r} / learner.inner_batch={inner_batch} / "
                f"learner.eval_inner_batch={eval_inner_batch} is not allowed with learner.adapt="
                f"{adapt!r}, learner.engine={engine!r}, learner.learn_inner_lr={learn_inner_lr}: "
                "Adam and mini-batches need adapt=all, engine=auto and learn_inner_lr=false"
            )
        if eval_inner_batch is not None and eval_inner_batch < 0:
            raise ConfigError(
                f"learner.eval_inner_batch={eval_inner_batch} is not allowed: must be >= 1, or 0/null "
                "for the whole support set"
            )
        if adapt not in ("all", "head"):
            raise ConfigError(f"learner.adapt={adapt!r} is not allowed: must be 'all' or 'head' (ANIL)")
        if not eval_transductive and (adapt == "head" or engine == "serial"):
            raise ConfigError(
                f"learner.eval_transductive=false is not supported with learner.adapt={adapt!r} and "
                f"learner.engine={engine!r}: it needs adapt=all and engine=auto"
            )
        self.eval_transductive = eval_transductive
        if eval_inner_steps < 0:
            raise ConfigError(f"learner.eval_inner_steps={eval_inner_steps} is not allowed: must be >= 0")
        if chunk_images < 0 or (support_chunk_images is not None and support_chunk_images < 0):
            raise ConfigError(
                f"learner.chunk_images={chunk_images} / learner.support_chunk_images="
                f"{support_chunk_images} is not allowed: must be >= 0 (0: all tasks in one call)"
            )
        self.model = TaskBatchedModel(backbone, channels_last=channels_last, chunk_images=chunk_images, engine=engine)
        self.engine = engine
        self.support_chunk_images = support_chunk_images
        names = [n for n, _ in backbone.named_parameters()]
        if adapt == "head":
            head_names = sorted(n for n in names if n.startswith("head.") and isinstance(backbone, Conv4))
            if not head_names:
                raise ConfigError(
                    "learner.adapt='head' (ANIL) needs a model with a linear head (model.out_features > 0)"
                )
            names = head_names
        self.adapt_head_only = adapt == "head"
        self.inner_lrs = (
            nn.ParameterDict(
                {
                    learned_rate_key(n): nn.Parameter(torch.full_like(p, inner_lr))
                    for n, p in backbone.named_parameters()
                    if n in names
                }
            )
            if learn_inner_lr
            else None
        )
        self.inner = InnerLoop(
            steps=inner_steps,
            lr=inner_lr,
            first_order=first_order,
            names=names,
            optimizer=inner_optimizer,
            batch=inner_batch,
            betas=(float(inner_betas[0]), float(inner_betas[1])),
            eps=inner_eps,
        )
        self.eval_inner_steps = eval_inner_steps
        self.eval_inner_batch = eval_inner_batch
        self.inner_adam = (
            InnerAdamState({n: p for n, p in backbone.named_parameters() if n in names})
            if inner_optimizer == "adam"
            else None
        )

    def setup(self, stage: str) -> None:
        super().setup(stage)
        head = getattr(self.backbone, "head", None)
        dm = self.trainer.datamodule if self._trainer else None
        if isinstance(head, nn.Linear) and dm is not None and hasattr(dm, "train_spec"):
            shapes = {
                "data.train": dm.train_spec,
                "data.val": dm.val_spec,
                **{f"data.test[{k}]": s for k, s in dm.test_specs.items()},
            }
            for key, spec in shapes.items():
                if spec.way != head.out_features:
                    raise ConfigError(
                        f"{key} way={spec.way} is not allowed: the model's head has "
                        f"model.out_features={head.out_features} outputs; they must be equal"
                    )

    def query_logits(self, batch: Batch) -> torch.Tensor:
        support, query = batch["support"], batch["query"]  # the grouped forward sets the memory format
        steps = self.inner.steps if self.training else self.eval_inner_steps
        first_order = self.inner.first_order if self.training else True
        self.inner.learned_lr = (
            {n: self.inner_lrs[learned_rate_key(n)] for n in self.inner.names} if self.inner_lrs else None
        )
        params = dict(self.backbone.named_parameters())
        with torch.enable_grad():  # adaptation needs gradients in validation and test too
            if self.engine == "serial":
                lr = self.inner.learned_lr if self.inner.learned_lr is not None else self.inner.lr
                logits = reference.query_logits(self.backbone, params, batch, steps, lr, first_order, self.inner.names)
            elif self.adapt_head_only:
                tasks = support.shape[0]
                stacked = {n: p.expand(tasks, *p.shape) for n, p in params.items()}
                feats_s = self.model.body(stacked, support, self.support_chunk_images)
                feats_q = self.model.body(stacked, query)
                if self._fused_head_loop(feats_s, first_order):
                    logits = self._fused_head_logits(feats_s, batch["support_labels"], feats_q, params, steps)
                else:
                    head = {n: params[n] for n in self.inner.names}
                    fast = self.inner.adapt(self.model.head, head, feats_s, batch["support_labels"], steps, first_order)
                    logits = self.model.head(fast, feats_q)
            else:
                fast = self.adapt_support(support, batch["support_labels"], steps, first_order)
                if self.training or self.eval_transductive:
                    logits = self.model(fast, query)
                else:
                    logits = self.one_query_at_a_time(fast, support, query)
        return logits if self.training else logits.detach()

    def adapt_support(
        self, support: torch.Tensor, labels: torch.Tensor, steps: int, first_order: bool
    ) -> dict[str, torch.Tensor]:
        """Every task's parameters after the inner loop on its support set (mini-batches of ``inner_batch``
        in training, ``eval_inner_batch`` otherwise); with Adam, a training call carries the state on."""
        params = dict(self.backbone.named_parameters())
        batch = self.inner.batch if self.training else self.eval_inner_batch
        start = self.inner_adam.state() if self.inner_adam is not None else None
        fast, state = self.inner.run(
            self.support_forward(first_order), params, support, labels, steps, first_order, batch or None, start
        )
        if state is not None and self.training and steps > 0:
            self.inner_adam.carry(state, steps, support.shape[0], self.inner.betas)
        return fast

    @torch.no_grad()
    def one_query_at_a_time(
        self, fast: dict[str, torch.Tensor], support: torch.Tensor, query: torch.Tensor
    ) -> torch.Tensor:
        """``"t q way"`` logits, query ``j`` of every task classified in a batch of its task's support set
        plus that image alone (``"t (s+1) ..."``), so batch norm never sees another query (non-transductive)."""
        columns = [
            self.model(fast, torch.cat([support, query[:, j : j + 1]], dim=1))[:, -1] for j in range(query.shape[1])
        ]
        return torch.stack(columns, dim=1)

    def support_forward(self, first_order: bool) -> Callable[[dict[str, torch.Tensor], torch.Tensor], torch.Tensor]:
        """The inner loop's forward: support-set chunks, and for second order the block form whose
        double backward is cheap (the meta-gradient differentiates the inner gradients once more)."""
        return partial(self.model, chunk_images=self.support_chunk_images, twice_differentiable=not first_order)

    def _fused_head_loop(self, features: torch.Tensor, first_order: bool) -> bool:
        """First-order ANIL with one inner rate runs in one Triton program per task where Triton runs
        (CUDA, or ``kernels.backend=triton``); elsewhere the engine's torch loop does the same math."""
        return kernels.triton_runs(features.device) and first_order and self.inner_lrs is None

    def _fused_head_logits(
        self,
        feats_s: torch.Tensor,
        labels: torch.Tensor,
        feats_q: torch.Tensor,
        params: dict[str, torch.Tensor],
        steps: int,
    ) -> torch.Tensor:
        weight, bias = kernels.anil_head_adapt(  # "t d w", "t w"
            feats_s.contiguous(),
            labels.contiguous(),
            params["head.weight"].t().contiguous(),
            params["head.bias"],
            self.inner.lr,
            steps,
        )
        return torch.einsum("tnd,tdw->tnw", feats_q, weight) + bias.unsqueeze(1)


class InnerAdamState(nn.Module):
    """The inner loop's Adam state as buffers (so checkpoints keep it, as the paper's saved its slots)."""

    def __init__(self, params: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.names = list(params)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.exp_avg, self.exp_avg_sq = nn.Module(), nn.Module()
        for name, p in params.items():
            self.exp_avg.register_buffer(learned_rate_key(name), torch.zeros_like(p.detach()))
            self.exp_avg_sq.register_buffer(learned_rate_key(name), torch.zeros_like(p.detach()))

    def state(self) -> AdamState:
        """The shared start of the next inner loops."""
        return AdamState(
            int(self.step),
            {n: getattr(self.exp_avg, learned_rate_key(n)) for n in self.names},
            {n: getattr(self.exp_avg_sq, learned_rate_key(n)) for n in self.names},
        )

    @torch.no_grad()
    def carry(self, final: AdamState, steps: int, tasks: int, betas: tuple[float, float]) -> None:
        """Become the state the meta-batch's tasks would have left run one after another."""
        for name in self.names:
            for moments, finals, beta in (
                (self.exp_avg, final.exp_avg, betas[0]),
                (self.exp_avg_sq, final.exp_avg_sq, betas[1]),
            ):
                start = getattr(moments, learned_rate_key(name))
                start.copy_(merge_sequential(start, finals[name].detach(), steps, beta))
        self.step += steps * tasks


def learned_rate_key(name: str) -> str:
    """nn.ParameterDict keys may not contain dots."""
    return name.replace(".", "__")
