"""Architecture search and retraining (shells over :mod:`metalab.nas`).

- :class:`DartsLearner`: first-order DARTS on the supernet, manual optimisation, one architecture step
  (search-validation batch) then one weight step (search-train batch) per training step.
- :class:`CellSearchLearner`: regularized evolution or random search on the plain loop of
  :class:`~metalab.learners.search.SearchRun`, plus the chosen cell's record and picture.
- :class:`CellClassifier`: a genotype's network retrained from scratch and tested on the CIFAR-10 test split.

Each puts its genotype into the run's ``metrics.json`` (``run_record``, read by :func:`metalab.run.train`)
and writes ``cell.png`` into the run directory.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F

from metalab.errors import require
from metalab.learners.search import SearchRun
from metalab.nas.darts import auxiliary_skip_beta, classification_loss
from metalab.nas.network import CellNetwork, SuperNetwork, count_parameters
from metalab.nas.plot import draw_cell
from metalab.nas.space import OPERATIONS, Genotype


class ProcessClock:
    """CPU seconds of this process spent in training, kept across resumes (search cost in CPU-minutes)."""

    def __init__(self) -> None:
        self.seconds, self._start = 0.0, None

    def start(self) -> None:
        self._start = time.process_time()

    def stop(self) -> None:
        if self._start is not None:
            self.seconds += time.process_time() - self._start
            self._start = None

    def now(self) -> float:
        return self.seconds + (time.process_time() - self._start if self._start is not None else 0.0)


class DartsLearner(L.LightningModule):
    """First-order DARTS with the DARTS- guard (see :mod:`metalab.nas.darts`). ``backbone`` is the
    :class:`SuperNetwork`. Hyper-parameters default to DARTS's CIFAR-10 search (weights: SGD 0.025 cosine to
    0.001, momentum 0.9, weight decay 3e-4, gradient norm clipped at 5; alpha: Adam betas (0.5, 0.999), weight
    decay 1e-3) except ``arch_lr``: DARTS's 3e-4 moves alpha too little in a search of a few hundred steps."""

    def __init__(
        self,
        backbone: SuperNetwork,
        guard: str = "dartsminus",
        beta_start: float = 1.0,
        weight_lr: float = 0.025,
        weight_lr_min: float = 0.001,
        momentum: float = 0.9,
        weight_decay: float = 3e-4,
        grad_clip: float = 5.0,
        arch_lr: float = 3e-3,
        arch_weight_decay: float = 1e-3,
    ) -> None:
        super().__init__()
        auxiliary_skip_beta(guard, 0, 1)  # validates the guard name up front
        require(arch_lr > 0, "learner.arch_lr", "> 0", arch_lr)
        self.supernet = backbone
        self.guard, self.beta_start = guard, beta_start
        self.weight_lr, self.weight_lr_min, self.momentum = weight_lr, weight_lr_min, momentum
        self.weight_decay, self.grad_clip = weight_decay, grad_clip
        self.arch_lr, self.arch_weight_decay = arch_lr, arch_weight_decay
        self.automatic_optimization = False
        self.search_steps = 0
        self.history: list[dict[str, Any]] = []  # the derived cell at the end of every epoch
        self.clock = ProcessClock()
        self.epoch_started = 0.0
        self.epoch_seconds: list[float] = []

    def configure_optimizers(self):
        weights = torch.optim.SGD(
            self.supernet.weight_parameters(), lr=self.weight_lr, momentum=self.momentum, weight_decay=self.weight_decay
        )
        arch = torch.optim.Adam(
            [self.supernet.arch_logits], lr=self.arch_lr, betas=(0.5, 0.999), weight_decay=self.arch_weight_decay
        )
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
            weights, T_max=self.total_steps(), eta_min=self.weight_lr_min
        )
        return [weights, arch], [schedule]

    def total_steps(self) -> int:
        return max(1, int(self.trainer.estimated_stepping_batches)) if self._trainer is not None else 1

    def skip_beta(self) -> float:
        return auxiliary_skip_beta(self.guard, self.search_steps, self.total_steps(), self.beta_start)

    def architecture_step(self, batch: dict[str, torch.Tensor], beta: float) -> torch.Tensor:
        """Adam step on alpha from the search-validation batch at the current weights (first order)."""
        _, arch_optimizer = self.optimizers()
        arch_optimizer.zero_grad()
        loss, acc = classification_loss(self.supernet, batch["x_val"], batch["y_val"], beta)
        self.manual_backward(loss, inputs=[self.supernet.arch_logits])
        arch_optimizer.step()
        self.log_dict({"val/loss": loss.detach(), "val/acc": acc}, on_step=True, on_epoch=True)
        return loss.detach()

    def weight_step(self, batch: dict[str, torch.Tensor], beta: float) -> torch.Tensor:
        """SGD step on the network weights from the search-train batch (alpha untouched)."""
        weight_optimizer, _ = self.optimizers()
        weight_optimizer.zero_grad()
        parameters = self.supernet.weight_parameters()
        loss, acc = classification_loss(self.supernet, batch["x"], batch["y"], beta)
        self.manual_backward(loss, inputs=parameters)
        torch.nn.utils.clip_grad_norm_(parameters, self.grad_clip)
        weight_optimizer.step()
        self.lr_schedulers().step()
        self.log_dict({"train/loss": loss.detach(), "train/acc": acc}, on_step=True, on_epoch=True, prog_bar=True)
        return loss.detach()

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        beta = self.skip_beta()
        self.architecture_step(batch, beta)
        self.weight_step(batch, beta)
        self.search_steps += 1
        self.log("search/skip_beta", beta, on_step=True, on_epoch=False)

    def on_train_start(self) -> None:
        self.clock.start()

    def on_train_epoch_start(self) -> None:
        self.epoch_started = time.perf_counter()

    def on_train_epoch_end(self) -> None:
        self.epoch_seconds.append(time.perf_counter() - self.epoch_started)
        genotype = self.supernet.derive()
        weights = self.supernet.operation_weights().detach()
        self.history.append(
            {"epoch": self.current_epoch, "genotype": str(genotype), "skip_connect": genotype.count("skip_connect")}
        )
        self.log("search/derived_skips", float(genotype.count("skip_connect")))
        self.log(
            "search/derived_parameter_free",
            float(sum(op in ("none", "skip_connect", "avg_pool_3x3") for op in genotype.ops)),
        )
        for k, name in enumerate(OPERATIONS):
            self.log(f"search/mean_weight_{name}", weights[:, k].mean())
        self.log("search/epoch_seconds", self.epoch_seconds[-1])

    def on_train_end(self) -> None:
        self.clock.stop()
        genotype = self.supernet.derive()
        out = Path(self.trainer.default_root_dir)
        (out / "genotype.txt").write_text(str(genotype) + "\n")
        draw_cell(genotype, out / "cell.png", f"DARTS (guard: {self.guard})\n{genotype}")

    def run_record(self) -> dict[str, Any]:
        genotype = self.supernet.derive()
        weights = self.supernet.operation_weights().detach()
        return {
            "genotype": str(genotype),
            "genotype_history": self.history,
            "operation_weights": {
                name: [round(float(w), 4) for w in weights[:, k]] for k, name in enumerate(OPERATIONS)
            },
            "search_cpu_seconds": self.clock.now(),
            "supernet_epoch_seconds": self.epoch_seconds,
            "supernet_parameters": count_parameters(self.supernet) - self.supernet.arch_logits.numel(),
            "guard": self.guard,
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["darts_state"] = {
            "search_steps": self.search_steps,
            "history": self.history,
            "cpu_seconds": self.clock.now(),
            "epoch_seconds": self.epoch_seconds,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint["darts_state"]
        self.search_steps, self.history = int(state["search_steps"]), list(state["history"])
        self.clock.seconds, self.epoch_seconds = float(state["cpu_seconds"]), list(state["epoch_seconds"])


class CellSearchLearner(SearchRun):
    """Regularized evolution or random search over cells (``problem``: a
    :class:`~metalab.nas.fitness.CellTrainingProblem`) on the plain loop of :class:`~metalab.learners.search.SearchRun`;
    the chosen cell goes into the record and ``cell.png``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.clock = ProcessClock()

    def chosen(self) -> Genotype:
        return Genotype.from_indices(self.searcher.best().genome)

    def on_fit_start(self) -> None:
        self.clock.start()

    def on_fit_end(self) -> None:
        super().on_fit_end()
        self.clock.stop()
        (self.output_dir / "genotype.txt").write_text(str(self.chosen()) + "\n")
        draw_cell(self.chosen(), self.output_dir / "cell.png", f"{type(self.searcher).__name__}\n{self.chosen()}")

    def run_record(self) -> dict[str, Any]:
        history = self.problem.history
        return {
            "genotype": str(self.chosen()),
            "evaluations": history,
            "search_cpu_seconds": self.clock.now(),
            "best_fitness": self.problem.cache.get(str(self.chosen())),
        }

    def state(self) -> dict[str, Any]:
        return {
            **super().state(),
            "cell_search_state": {"problem": self.problem.state_dict(), "cpu_seconds": self.clock.now()},
        }

    def load_state(self, checkpoint: dict[str, Any]) -> None:
        super().load_state(checkpoint)
        state = checkpoint["cell_search_state"]
        self.problem.load_state_dict(state["problem"])
        self.clock.seconds = float(state["cpu_seconds"])


class CellClassifier(L.LightningModule):
    """Retraining: ``backbone`` is the genotype's :class:`CellNetwork`; SGD with Nesterov momentum 0.9,
    weight decay 5e-4 and a cosine learning rate to 0 over the run (NAS-Bench-201's recipe, shortened);
    tested on the CIFAR-10 test split (``test/cifar10/acc`` in %)."""

    def __init__(self, backbone: CellNetwork, lr: float = 0.1, weight_decay: float = 5e-4) -> None:
        super().__init__()
        self.network, self.lr, self.weight_decay = backbone, lr, weight_decay
        self.clock = ProcessClock()

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(
            self.network.parameters(), lr=self.lr, momentum=0.9, nesterov=True, weight_decay=self.weight_decay
        )
        steps = max(1, int(self.trainer.estimated_stepping_batches))
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logits = self.network(batch["x"])
        loss = F.cross_entropy(logits, batch["y"])
        self.log_dict(
            {"train/loss": loss.detach(), "train/acc": (logits.argmax(-1) == batch["y"]).float().mean()},
            on_step=True,
            on_epoch=True,
            prog_bar=True,
        )
        return loss

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        logits = self.network(batch["x"])
        acc = (logits.argmax(-1) == batch["y"]).float().mean() * 100
        self.log("test/cifar10/acc", acc, on_epoch=True, batch_size=len(batch["y"]))
        self.log("test/parameters", float(count_parameters(self.network)))

    def on_train_start(self) -> None:
        self.clock.start()

    def on_train_end(self) -> None:
        self.clock.stop()
        draw_cell(
            self.network.genotype,
            Path(self.trainer.default_root_dir) / "cell.png",
            f"retrained\n{self.network.genotype}",
        )

    def run_record(self) -> dict[str, Any]:
        return {
            "genotype": str(self.network.genotype),
            "parameters": count_parameters(self.network),
            "train_cpu_seconds": self.clock.now(),
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["cpu_seconds"] = self.clock.now()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.clock.seconds = float(checkpoint.get("cpu_seconds", 0.0))
