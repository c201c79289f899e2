"""Supervised training with an optional frozen teacher (knowledge distillation, Hinton et al. 2015).

:class:`DistillationLearner` trains ``backbone`` (the student) on image classification with
``(1 - alpha) * CE + alpha * T^2 KL(teacher/T || student/T)`` (:mod:`metalab.distillation`). Without a teacher
it is plain cross-entropy training, which is how the teacher itself and the students "without the teacher"
are trained: one learner, so the only difference between a student with and without the teacher is the
soft term.

The teacher is an architecture (``learner.teacher``, a model config) and the weights of a finished run
(``learner.teacher_checkpoint``: the file a teacher run exports with ``learner.export_path``, or any Lightning
checkpoint of this learner). It stays in evaluation mode (its batch norm uses its running statistics),
takes no gradient and is not part of the student's checkpoints. Because the training batches are not
augmented, the teacher's logits of a training image never change: with ``cache_teacher_logits`` they are
computed the first time the image is seen (the data module gives each image's ``index``) and reused in later
epochs, so a student with the teacher costs one teacher pass over its training set more than one without.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn

from metalab.distillation import distillation_objective
from metalab.errors import ConfigError, DataError, NumericalError, require
from metalab.learners.nas import ProcessClock

EXPORT_FORMAT = "metalab-teacher-v1"


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def state_dict_bytes(net: nn.Module) -> int:
    """Bytes of ``torch.save(net.state_dict())``: the size of the model on disk (weights and BN buffers)."""
    buffer = io.BytesIO()
    torch.save(net.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def teacher_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The network weights in ``path``: an exported teacher (``{"state_dict": ...}``) or a Lightning
    checkpoint of this learner (keys ``network.*``). One clear error for a missing or unreadable file."""
    where = Path(path)
    if not where.is_file():  # a missing input file, like a data file (a build without it is skipped in tests)
        raise DataError(
            f"learner.teacher_checkpoint={str(path)!r} is not allowed: no such file; train the teacher first "
            "(python train.py +experiment=distill_cifar10/teacher writes it) or give the path of its export"
        )
    try:
        saved = torch.load(where, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for a file that is not a checkpoint
        raise ConfigError(
            f"learner.teacher_checkpoint={str(path)!r} is not allowed: not a torch checkpoint "
            f"({type(error).__name__}: {' '.join(str(error).split())[:120]})"
        ) from None
    state = saved.get("state_dict") if isinstance(saved, dict) else None
    if not isinstance(state, dict):
        raise ConfigError(
            f"learner.teacher_checkpoint={str(path)!r} is not allowed: it holds no 'state_dict' "
            "(give a teacher export or a Lightning checkpoint of metalab.learners.distill)"
        )
    if any(k.startswith("network.") for k in state):
        state = {k.removeprefix("network."): v for k, v in state.items() if k.startswith("network.")}
    return state


def load_teacher(teacher: nn.Module, path: str | Path) -> nn.Module:
    """``teacher`` with the weights of ``path``, frozen and in evaluation mode; a checkpoint whose keys or
    shapes differ from ``learner.teacher``'s architecture is one error naming the first difference."""
    state = teacher_state_dict(path)
    own = teacher.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or shapes:
        if shapes:
            k = shapes[0]
            detail = f"{k} is {list(state[k].shape)} in the file, {list(own[k].shape)} in learner.teacher"
        else:
            detail = f"missing {missing[:2]}" if missing else f"unexpected {unexpected[:2]}"
        raise ConfigError(
            f"learner.teacher_checkpoint={str(path)!r} is not allowed: it does not fit learner.teacher "
            f"({type(teacher).__name__}): {detail}; give the architecture the teacher was trained with"
        )
    teacher.load_state_dict(state)
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def export_network(net: nn.Module, path: str | Path) -> Path:
    """Write ``{"format", "state_dict", "parameters"}`` to ``path`` atomically (a reader never sees half a file)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    torch.save({"format": EXPORT_FORMAT, "state_dict": net.state_dict(), "parameters": count_parameters(net)}, partial)
    partial.replace(target)
    return target


class DistillationLearner(L.LightningModule):
    """Trains ``backbone`` on ``{"x", "y"[, "index"]}`` batches (see the module docstring); tested on the
    test split (``test/cifar10/acc`` in %). ``optimizer``: a partial optimiser; the learning rate follows a
    cosine to 0 over the run's steps. ``alpha``: the weight of the soft term (the label term gets
    ``1 - alpha``); ``temperature``: T > 0, both softmaxes' temperature."""

    def __init__(
        self,
        backbone: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        teacher: nn.Module | None = None,
        teacher_checkpoint: str | None = None,
        alpha: float = 0.9,
        temperature: float = 4.0,
        cache_teacher_logits: bool = True,
        export_path: str | None = None,
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        require(temperature > 0, "learner.temperature", "> 0 (1 leaves the softmaxes as they are)", temperature)
        require(0 <= alpha <= 1, "learner.alpha", "in [0, 1] (the soft term's weight)", alpha)
        if (teacher is None) != (teacher_checkpoint is None):
            absent = "learner.teacher_checkpoint" if teacher_checkpoint is None else "learner.teacher"
            raise ConfigError(
                f"{absent}=None is not allowed: a teacher needs both its architecture (learner.teacher) "
                "and its weights (learner.teacher_checkpoint); set both or neither"
            )
        self.network = backbone
        self.optimizer_factory = optimizer
        self.alpha, self.temperature = float(alpha), float(temperature)
        self.cache_teacher_logits, self.export_path = cache_teacher_logits, export_path
        self.channels_last = channels_last
        self.teacher_path = teacher_checkpoint
        # a plain list keeps the teacher out of the module tree: Lightning's train() must not put it in training
        # mode, the optimiser must not see it, and the student's checkpoints must not carry it
        self._teacher = [load_teacher(teacher, teacher_checkpoint)] if teacher is not None else []
        self.cached_logits: torch.Tensor | None = None  # "images classes", teacher logits by training index
        self.cached: torch.Tensor | None = None  # "images" bool
        self.teacher_images = 0  # images the teacher scored (cache misses)
        self.clock = ProcessClock()
        if self.channels_last:
            self.network = self.network.to(memory_format=torch.channels_last)
            for net in self._teacher:
                net.to(memory_format=torch.channels_last)

    @property
    def teacher(self) -> nn.Module | None:
        return self._teacher[0] if self._teacher else None

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.network.parameters())
        steps = max(1, int(self.trainer.estimated_stepping_batches))
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    @torch.no_grad()
    def teacher_logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """The frozen teacher's logits of the batch, from the cache where the images were seen before."""
        teacher = self.teacher
        if teacher is None:
            return None
        teacher.eval()
        index = batch.get("index")
        if not self.cache_teacher_logits or index is None:
            self.teacher_images += len(batch["y"])
            return teacher(self.prepare(batch["x"])).float()
        index = index.cpu()  # the cache lives in host memory, whatever device the networks are on
        if self.cached is None or len(self.cached) <= int(index.max()):
            self._grow_cache(int(index.max()) + 1)
        new = ~self.cached[index]
        if bool(new.any()):
            fresh = teacher(self.prepare(batch["x"][new.to(batch["x"].device)])).float().cpu()
            if self.cached_logits is None:
                self.cached_logits = torch.zeros(len(self.cached), fresh.shape[1])
            self.cached_logits[index[new]] = fresh
            self.cached[index[new]] = True
            self.teacher_images += int(new.sum())
        return self.cached_logits[index].to(batch["x"].device)

    def _grow_cache(self, size: int) -> None:
        """Room for training indices ``< size`` (at least doubled, so growth costs amortised O(1))."""
        old = 0 if self.cached is None else len(self.cached)
        size = max(size, 2 * old)
        seen = torch.zeros(size, dtype=torch.bool)
        if self.cached is not None:
            seen[:old] = self.cached
        if self.cached_logits is not None:
            logits = torch.zeros(size, self.cached_logits.shape[1])
            logits[:old] = self.cached_logits
            self.cached_logits = logits
        self.cached = seen

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        teacher_logits = self.teacher_logits(batch)
        logits = self.network(self.prepare(batch["x"]))
        loss, parts = distillation_objective(logits, batch["y"], teacher_logits, self.alpha, self.temperature)
        if not torch.isfinite(loss):  # a diverged run would otherwise train on NaN to the end and test at chance
            raise NumericalError(
                f"training loss became {loss.item()} at step {self.global_step}; lower learner.optimizer.lr "
                "or clip the gradient (trainer.gradient_clip_val)"
            )
        logged = {"train/loss": loss.detach(), "train/acc": (logits.argmax(-1) == batch["y"]).float().mean()}
        logged.update({f"train/{name}_loss": value for name, value in parts.items()})
        self.log_dict(logged, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(batch["y"]))
        return loss

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        logits = self.network(self.prepare(batch["x"]))
        acc = (logits.argmax(-1) == batch["y"]).float().mean() * 100
        self.log("test/cifar10/acc", acc, on_epoch=True, batch_size=len(batch["y"]))

    def on_fit_start(self) -> None:
        for net in self._teacher:  # outside the module tree, so Lightning does not move it
            net.to(self.device)

    def on_train_start(self) -> None:
        self.clock.start()

    def on_train_end(self) -> None:
        self.clock.stop()
        if self.export_path:
            export_network(self.network, self.export_path)

    def run_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "parameters": count_parameters(self.network),
            "size_bytes": state_dict_bytes(self.network),
            "train_cpu_seconds": self.clock.now(),
            "alpha": self.alpha if self.teacher is not None else 0.0,
            "temperature": self.temperature,
            "teacher": None,
        }
        if self.teacher is not None:
            path = Path(self.teacher_path)
            record["teacher"] = {
                "checkpoint": path.name,
                "sha256": file_sha256(path),
                "parameters": count_parameters(self.teacher),
                "images_scored": self.teacher_images,
            }
        if self.export_path:
            record["exported"] = {"file": Path(self.export_path).name, "sha256": file_sha256(Path(self.export_path))}
        return record

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["cpu_seconds"] = self.clock.now()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.clock.seconds = float(checkpoint.get("cpu_seconds", 0.0))
