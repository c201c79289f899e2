"""Self-diagnosis and self-healing training: a Lightning callback over the detectors of
:mod:`metalab.callbacks.detectors` (issue 35).

What it watches, once per training batch (Lightning's batch: a chunk of mini-batches for a chunked
continual learner), and what it does (``conf/diagnosis/default.yaml``):

- a non-finite loss: a learner that can skip steps (:class:`SkipsNonFiniteSteps`, the episodic and
  continual learners) skips that step instead of raising; the callback then restores the model's buffers
  (batch-norm statistics, which the poisoned forward pass already changed) from the last good snapshot.
  A non-finite loss or gradient norm from any other learner means the update was applied: roll back;
- gradient explosion (the global gradient norm far above its running median), a loss spike (a batch's
  loss far above the running median) and divergence (the loss median over a window rising well above its
  best): roll back to the last good in-memory snapshot (model and optimiser state, its learning rates
  included, taken every ``rollback.snapshot_every`` healthy batches) and, when the trouble comes back within
  ``rollback.recur_window`` batches of the last rollback, distrust the snapshot restored last (go one further
  back) and lower the learning rate by ``rollback.lr_factor``: a one-off bad batch or a rate that jumped
  is undone by the rollback alone, a rate that was too large all along is lowered until training holds;
- corrupted inputs (a batch whose input RMS is ``input_scale.factor`` times above or below its running
  median): checked before the step; the state is saved then and restored after the batch (the batch is skipped);
- a learning-rate jump (``lr_jump.factor`` times the largest rate of the run so far; warm-up and restarts
  never exceed their own peak): roll back, which restores the snapshot's rate;
- a plateau of the training loss: lower the learning rate by ``plateau.lr_factor`` (report only, where a
  learning-rate schedule sets the rate);
- a throughput collapse (seconds per step stuck far above their best; this process's CPU seconds by
  default, so other jobs on a shared core are not taken for a fault of the run) and, in continual runs, a jump of
  forgetting on earlier tasks at a task end: report (no automatic remedy is known);
- non-finite losses on consecutive batches (the weights, not one batch, are broken): roll back;
- more than ``rollback.max_rollbacks`` rollbacks, or nothing to roll back to: stop early, saying why
  (``trainer.should_stop``).

What the detectors learnt of the run (recent values, bests, the starting loss) goes into the checkpoint with
the alerts, so a resumed run diagnoses as the uninterrupted run would. Every diagnosis and action is one
console line, a metric to the loggers (``diagnosis/<kind>`` at that step), and an entry of
:attr:`SelfHealing.alerts`, which ``metalab.run.train`` writes to ``metrics.json``.
Public Lightning API only (batch hooks, ``trainer.optimizers``, ``trainer.lr_scheduler_configs``,
``trainer.should_stop``, ``trainer.loggers``); no step hook is overridden.

Until it acts, the callback only observes: it reads losses, gradient norms, inputs and learning rates,
copies state into its snapshots, draws no random number and changes no value, so a run in which it raised
no alert that changed training is bit for bit the run with ``diagnosis=off``
(``tests/callbacks/test_diagnosis_identity.py``). That is why the run fingerprint leaves the diagnosis
settings out (``metalab.report.identity``), and why every action must be an alert (the report marks the
run healed).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable

import lightning as L
import torch

from metalab.callbacks.detectors import (
    Detector,
    ForgettingJump,
    JumpAboveMax,
    PlateauDetector,
    RiseDetector,
    SpikeDetector,
)
from metalab.errors import ConfigError


@runtime_checkable
class SkipsNonFiniteSteps(Protocol):
    """A learner that, when ``skip_nonfinite_steps`` is true, skips (does not apply) a step whose loss is
    not finite, instead of raising, and appends ``{"step": global_step, "loss": value}`` to ``skipped_steps``."""

    skip_nonfinite_steps: bool
    skipped_steps: list[dict[str, Any]]


# -- settings ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rule:
    """What a setting must be: a check and the words that say so."""

    check: Any
    allowed: str


POSITIVE_INT = Rule(lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "an integer >= 1")
NONNEGATIVE_INT = Rule(lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "an integer >= 0")
ABOVE_ONE = Rule(lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 1 < v < math.inf, "a number > 1")
FRACTION = Rule(lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1, "a number in (0, 1)")
PROPER_FRACTION = Rule(
    lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1, "a number in [0, 1)"
)
NONNEGATIVE = Rule(
    lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < math.inf, "a number >= 0"
)
POINTS = Rule(
    lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 100,
    "a number of accuracy points in (0, 100]",
)


def action_rule(*actions: str) -> Rule:
    return Rule(lambda v: v in actions, "one of " + ", ".join(actions))


# Each detector's settings and their rules. A section set to null (or false) turns that detector off.
SECTIONS: dict[str, dict[str, Rule]] = {
    "non_finite": {"action": action_rule("skip", "rollback", "stop", "alert"), "rollback_after": POSITIVE_INT},
    "input_scale": {
        "factor": ABOVE_ONE,
        "window": POSITIVE_INT,
        "warmup": POSITIVE_INT,
        "action": action_rule("skip", "stop", "alert"),
    },
    "lr_jump": {"factor": ABOVE_ONE, "action": action_rule("rollback", "stop", "alert")},
    "gradient_explosion": {
        "factor": ABOVE_ONE,
        "window": POSITIVE_INT,
        "warmup": POSITIVE_INT,
        "floor": NONNEGATIVE,
        "every": POSITIVE_INT,
        "action": action_rule("rollback", "stop", "alert"),
    },
    "loss_spike": {
        "factor": ABOVE_ONE,
        "window": POSITIVE_INT,
        "warmup": POSITIVE_INT,
        "floor": NONNEGATIVE,
        "action": action_rule("rollback", "stop", "alert"),
    },
    "divergence": {
        "factor": ABOVE_ONE,
        "window": POSITIVE_INT,
        "floor": PROPER_FRACTION,
        "action": action_rule("rollback", "stop", "alert"),
    },
    "plateau": {
        "patience": POSITIVE_INT,
        "min_improvement": FRACTION,
        "window": POSITIVE_INT,
        "lr_factor": FRACTION,
        "min_lr": NONNEGATIVE,
        "action": action_rule("reduce_lr", "stop", "alert"),
    },
    "throughput": {
        "factor": ABOVE_ONE,
        "window": POSITIVE_INT,
        "warmup": NONNEGATIVE_INT,
        "clock": action_rule("cpu", "wall"),
        "action": action_rule("alert", "stop"),
    },
    "forgetting": {
        "threshold": POINTS,
        "scenario": Rule(
            lambda v: isinstance(v, str) and bool(v), "auto or a scenario name (task_il, class_il, domain_il)"
        ),
        "action": action_rule("alert", "stop"),
    },
    "rollback": {
        "snapshot_every": POSITIVE_INT,
        "keep": POSITIVE_INT,
        "lr_factor": FRACTION,
        "recur_window": NONNEGATIVE_INT,
        "max_rollbacks": NONNEGATIVE_INT,
    },
}


def check_settings(settings: dict[str, Any], prefix: str = "diagnosis") -> dict[str, dict[str, Any] | None]:
    """Every section and key known and in range, else :class:`ConfigError` naming ``diagnosis.<section>.<key>``.
    A section may leave keys out (then they keep their defaults) or be null/false (that detector is off)."""
    checked: dict[str, dict[str, Any] | None] = {}
    for section, values in settings.items():
        if section not in SECTIONS:
            raise ConfigError(
                f"{prefix}.{section} is not allowed: unknown diagnosis section; {prefix} takes {', '.join(SECTIONS)}"
            )
        if values is None or values is False:
            checked[section] = None
            continue
        if not hasattr(values, "items"):
            raise ConfigError(
                f"{prefix}.{section}={values!r} is not allowed: {prefix}.{section} must be a mapping of "
                f"{', '.join(SECTIONS[section])}, or null to turn it off"
            )
        for key, value in values.items():
            rule = SECTIONS[section].get(key)
            if rule is None:
                raise ConfigError(
                    f"{prefix}.{section}.{key} is not allowed: unknown key; {prefix}.{section} takes "
                    f"{', '.join(SECTIONS[section])}"
                )
            if not rule.check(value):
                name = f"{prefix}.{section}.{key}"
                raise ConfigError(f"{name}={value!r} is not allowed: {name} must be {rule.allowed}")
        checked[section] = dict(values)
    return checked


@dataclass
class Alert:
    """One diagnosis and what was done about it, as written to ``metrics.json``. ``changed_training``: the action
    changed what was trained (a skip, a rollback, a lowered rate, an early stop), so the run is not the run
    without diagnosis and the report marks it healed; false for a report alone (no remedy known)."""

    step: int
    kind: str
    detail: str
    action: str
    changed_training: bool = True

    def line(self) -> str:
        return f"[metalab] diagnosis: step {self.step}: {self.kind}: {self.detail} -> {self.action}"


@dataclass
class Snapshot:
    """The in-memory state a rollback returns to: parameters and buffers (not metric states: a rollback must
    not undo evaluations), what the module adds to a checkpoint (``on_save_checkpoint``: a continual
    method's replay buffer or Fisher), and the optimisers' state."""

    step: int
    batch: int  # the callback's batch count when taken (margins are in batches)
    tensors: dict[str, torch.Tensor]
    extra: dict[str, Any]
    optimizers: list[dict[str, Any]]


DEFAULTS: dict[str, dict[str, Any]] = {
    "non_finite": {"action": "skip", "rollback_after": 2},
    "input_scale": {"factor": 20.0, "window": 50, "warmup": 5, "action": "skip"},
    "lr_jump": {"factor": 10.0, "action": "rollback"},
    "gradient_explosion": {"factor": 50.0, "window": 50, "warmup": 10, "floor": 1.0, "every": 4, "action": "rollback"},
    "loss_spike": {"factor": 20.0, "window": 50, "warmup": 10, "floor": 1.0, "action": "rollback"},
    "divergence": {"factor": 3.0, "window": 25, "floor": 0.1, "action": "rollback"},
    "plateau": {
        "patience": 5000,
        "min_improvement": 0.01,
        "window": 50,
        "lr_factor": 0.5,
        "min_lr": 1e-6,
        "action": "reduce_lr",
    },
    "throughput": {"factor": 10.0, "window": 20, "warmup": 10, "clock": "cpu", "action": "alert"},
    "forgetting": {"threshold": 50.0, "scenario": "auto", "action": "alert"},
    "rollback": {"snapshot_every": 10, "keep": 3, "lr_factor": 0.1, "recur_window": 100, "max_rollbacks": 6},
}


def build_diagnosis(**settings: Any) -> SelfHealing:
    """``_target_`` of ``conf/diagnosis/default.yaml``: check the settings (one :class:`ConfigError` naming the
    key), fill in the defaults, build the callback."""
    checked = check_settings(settings)
    merged: dict[str, dict[str, Any] | None] = {}
    for section, default in DEFAULTS.items():
        if section in checked and checked[section] is None:
            merged[section] = None
        else:
            merged[section] = {**default, **(checked.get(section) or {})}
    if merged["rollback"] is None:
        merged["rollback"] = {**DEFAULTS["rollback"], "max_rollbacks": 0}
    return SelfHealing(merged)


class SelfHealing(L.Callback):
    """Diagnose each training batch and heal what can be healed; see the module docstring for the rules."""

    def __init__(self, settings: dict[str, dict[str, Any] | None] | None = None) -> None:
        self.settings = settings if settings is not None else {k: dict(v) for k, v in DEFAULTS.items()}
        s = self.settings
        self.input_check = (
            SpikeDetector(
                s["input_scale"]["factor"], s["input_scale"]["window"], s["input_scale"]["warmup"], two_sided=True
            )
            if s["input_scale"]
            else None
        )
        self.lr_jump = JumpAboveMax(s["lr_jump"]["factor"]) if s["lr_jump"] else None
        self.grad_spike = (
            SpikeDetector(
                s["gradient_explosion"]["factor"],
                s["gradient_explosion"]["window"],
                s["gradient_explosion"]["warmup"],
                s["gradient_explosion"]["floor"],
            )
            if s["gradient_explosion"]
            else None
        )
        spike, rise, flat = s["loss_spike"], s["divergence"], s["plateau"]
        self.loss_spike = (
            SpikeDetector(spike["factor"], spike["window"], spike["warmup"], spike["floor"]) if spike else None
        )
        self.divergence = RiseDetector(rise["factor"], rise["window"], rise["floor"]) if rise else None
        self.plateau = PlateauDetector(flat["patience"], flat["min_improvement"], flat["window"]) if flat else None
        self.slowdown = RiseDetector(s["throughput"]["factor"], s["throughput"]["window"]) if s["throughput"] else None
        self.forgetting = ForgettingJump(s["forgetting"]["threshold"]) if s["forgetting"] else None
        self.alerts: list[Alert] = []
        self.stop_reason: str | None = None
        self.snapshots: list[Snapshot] = []
        self._spare: list[Snapshot] = []  # snapshots no longer kept, whose memory the next ones reuse
        self.rollbacks = 0
        self.hook_seconds = 0.0  # CPU time spent in its training hooks (its cost, measured)
        self.batches_seen = 0
        self._batches = 0  # observations since the start (or the current task's start)
        self._last_rollback: int | None = None
        self._restored_batch = 0
        self._consecutive_skips = 0
        self._skips_seen = 0
        self._task: Any = None
        self._rows_seen: int | None = None
        self._suspect_batch: tuple[str, Snapshot] | None = None  # (diagnosis, the state before this batch)
        self._last_end: float | None = None
        self._last_step = 0
        self._params: list[torch.nn.Parameter] = []
        wall = bool(s["throughput"]) and s["throughput"]["clock"] == "wall"
        self._clock = time.perf_counter if wall else time.process_time

    # -- Lightning hooks -----------------------------------------------------------------------------------------
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if isinstance(pl_module, SkipsNonFiniteSteps) and self.settings["non_finite"]:
            pl_module.skip_nonfinite_steps = self.settings["non_finite"]["action"] == "skip"

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        started = time.process_time()
        self._params = [p for p in pl_module.parameters() if p.requires_grad]
        self._skips_seen = len(getattr(pl_module, "skipped_steps", []))
        self._take_snapshot(trainer, pl_module)
        self.hook_seconds += time.process_time() - started

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        started = time.process_time()
        task = getattr(pl_module, "current_task", None) if hasattr(pl_module, "stream_info") else None
        if task != self._task:  # a new task: new loss scale, and no rollback into the previous task
            self._check_forgetting(trainer, pl_module)  # a row is added when a task ends, so only then
            if self._task is not None:
                self._new_task(trainer, pl_module)
            self._task = task
        self.hook_seconds += time.process_time() - started

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Corrupted inputs (their RMS far from its running median, either way) are caught before the step:
        the state is saved now and restored after the batch, so the batch is skipped exactly."""
        if self.input_check is None:
            return
        started = time.process_time()
        rms = _input_rms(batch)
        found = self.input_check.observe(rms) if rms is not None else None
        if found:
            self._suspect_batch = (f"input RMS {found}", self._capture(trainer, pl_module))
        self.hook_seconds += time.process_time() - started

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        started = time.process_time()
        self._check_batch(trainer, pl_module, outputs, batch_idx)
        self.hook_seconds += time.process_time() - started

    def _check_batch(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch_idx: int) -> None:
        now, step = self._clock(), trainer.global_step
        # Seconds per step from the previous batch's end (data loading included), within an epoch only.
        steps = step - self._last_step if batch_idx > 0 and self._last_end is not None else 0
        seconds = now - self._last_end if steps else 0.0
        self._last_end, self._last_step = now, step
        self._batches += 1
        self.batches_seen += 1
        if self._suspect_batch is not None:
            (detail, before), self._suspect_batch = self._suspect_batch, None
            self._act(
                trainer, pl_module, "corrupted inputs", detail, self.settings["input_scale"]["action"], before=before
            )
            return
        healthy = self._diagnose(trainer, pl_module, _loss_of(outputs), steps)
        if steps > 0 and self.slowdown is not None and self._batches > self.settings["throughput"]["warmup"]:
            found = self.slowdown.observe(seconds / steps)
            if found:
                self._act(
                    trainer,
                    pl_module,
                    "throughput collapse",
                    f"seconds per step: {found}",
                    self.settings["throughput"]["action"],
                )
        if healthy and self._batches % self.settings["rollback"]["snapshot_every"] == 0:
            self._take_snapshot(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check_forgetting(trainer, pl_module)
        if isinstance(pl_module, SkipsNonFiniteSteps):
            pl_module.skip_nonfinite_steps = False
        self.snapshots, self._spare = [], []  # free the memory; a later fit starts its own

    def state_dict(self) -> dict[str, Any]:
        detectors = {name: d.state_dict() for name, d in self._detectors().items()}
        return {
            "alerts": [asdict(a) for a in self.alerts],
            "rollbacks": self.rollbacks,
            "batches_seen": self.batches_seen,
            "detectors": detectors,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.alerts = [Alert(**a) for a in state_dict.get("alerts", [])]
        self.rollbacks = int(state_dict.get("rollbacks", 0))
        self.batches_seen = int(state_dict.get("batches_seen", 0))
        saved = state_dict.get("detectors", {})
        for name, detector in self._detectors().items():
            if name in saved:
                detector.load_state_dict(saved[name])

    def _detectors(self) -> dict[str, Detector]:
        """The detectors this run's settings switched on, by name (the checkpoint's keys). Not the throughput
        rule's: a resumed process, maybe on another machine, measures its own speed afresh."""
        named = {
            "input_scale": self.input_check,
            "lr_jump": self.lr_jump,
            "gradient_explosion": self.grad_spike,
            "loss_spike": self.loss_spike,
            "divergence": self.divergence,
            "plateau": self.plateau,
        }
        return {name: d for name, d in named.items() if d is not None}

    # -- diagnosis -----------------------------------------------------------------------------------------------
    def _diagnose(self, trainer: L.Trainer, module: L.LightningModule, loss: float | None, steps: int) -> bool:
        """Run the batch's checks in order of severity; act on the first that fires. True: healthy."""
        s = self.settings
        skipped = getattr(module, "skipped_steps", None)
        if skipped is not None and len(skipped) > self._skips_seen:
            new, self._skips_seen = skipped[self._skips_seen :], len(skipped)
            self._consecutive_skips += 1
            detail = f"loss {new[0]['loss']} on {len(new)} mini-batch(es) from step {new[0]['step']}"
            persistent = len(new) > 1 or self._consecutive_skips >= s["non_finite"]["rollback_after"]
            if persistent:  # not one poisoned batch: the weights themselves give non-finite losses
                self._act(
                    trainer,
                    module,
                    "non-finite loss",
                    f"{detail}, {self._consecutive_skips} batch(es) in a row; the learner skipped the steps",
                    "rollback",
                )
            else:
                self._act(
                    trainer, module, "non-finite loss", f"{detail}; the learner skipped it", "skip", step=new[0]["step"]
                )
            return False
        self._consecutive_skips = 0
        every = s["gradient_explosion"]["every"] if s["gradient_explosion"] else 1
        wanted = steps > 0 and self._batches % every == 0 and (self.grad_spike is not None or s["non_finite"])
        grad_norm = self._grad_norm() if wanted else None  # sampled: the loss and rate checks run every batch
        if s["non_finite"] and (
            (loss is not None and not math.isfinite(loss)) or (grad_norm is not None and not math.isfinite(grad_norm))
        ):
            what = f"loss {loss}" if loss is not None and not math.isfinite(loss) else f"gradient norm {grad_norm}"
            action = s["non_finite"]["action"]
            self._act(
                trainer,
                module,
                "non-finite loss or gradient",
                f"{what} (the update was applied)",
                "rollback" if action == "skip" else action,
            )
            return False
        if self.lr_jump is not None and trainer.optimizers:
            found = self.lr_jump.observe(_first_lr(trainer))
            if found:
                self._act(trainer, module, "learning-rate jump", f"learning rate {found}", s["lr_jump"]["action"])
                return False
        checks = (
            (self.grad_spike, grad_norm, "gradient explosion", "gradient norm"),
            (self.loss_spike, loss, "loss spike", "loss"),
            (self.divergence, loss, "divergence", "loss"),
        )
        for detector, value, kind, name in checks:
            if detector is None or value is None:
                continue
            found = detector.observe(value)
            if found:
                self._act(trainer, module, kind, f"{name} {found}", s[kind.replace(" ", "_")]["action"])
                return False
        if self.plateau is not None and loss is not None:
            found = self.plateau.observe(loss)
            if found:
                self._act(trainer, module, "plateau", *self._plateau_remedy(trainer, found))
        return True

    def _plateau_remedy(self, trainer: L.Trainer, found: str) -> tuple[str, str]:
        """(detail, action) for a plateau. Lowering the rate is the remedy only where nothing else sets it: under a
        learning-rate schedule (a cosine or linear anneal to the budget's end) the schedule owns the rate, and
        halving it as well would end the run on a shorter schedule than the one it was configured with (Reptile
        5w5s, issue 32, was halved at step 37,023 of its linear anneal). There the plateau is reported only."""
        action = self.settings["plateau"]["action"]
        if action == "reduce_lr" and trainer.lr_scheduler_configs:
            return f"{found}; a learning-rate schedule sets the rate, so only reported", "alert"
        return found, action

    def _check_forgetting(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        """New rows of a continual learner's accuracy matrix (``module.accuracy[scenario]``): a jump of forgetting."""
        matrices = getattr(module, "accuracy", None)
        if self.forgetting is None or not hasattr(matrices, "keys") or not len(matrices):
            return
        scenario = self.settings["forgetting"]["scenario"]
        if scenario == "auto":
            scenario = next((s for s in ("task_il", "domain_il", "class_il") if s in matrices.keys()), None)
        if scenario not in matrices.keys():
            return
        matrix = matrices[scenario]
        rows = matrix.rows_done()
        if self._rows_seen is None:
            self._rows_seen = rows
        first_row = 1 if getattr(module, "evaluate_initial", True) else 0
        values = matrix.compute().tolist() if rows > self._rows_seen else []
        for row in range(max(self._rows_seen, first_row + 2), rows):  # row r: after task r-1 (row 0: untrained)
            found = self.forgetting.observe(values[row - 1], values[row], earlier=row - 1)
            if found:
                self._act(
                    trainer, module, "forgetting jump", f"{scenario}: {found}", self.settings["forgetting"]["action"]
                )
        self._rows_seen = rows

    def _grad_norm(self) -> float | None:
        grads = [p.grad for p in self._params if p.grad is not None]
        if not grads:
            return None
        with torch.no_grad():  # torch._foreach_norm directly: get_total_norm's grouping by device cost as much again
            return float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))))

    # -- remedies ------------------------------------------------------------------------------------------------
    def _act(
        self,
        trainer: L.Trainer,
        module: L.LightningModule,
        kind: str,
        detail: str,
        action: str,
        step: int | None = None,
        before: Snapshot | None = None,
    ) -> None:
        step = trainer.global_step if step is None else step
        if action == "stop":
            self._stop(trainer, module, kind, detail)
            return
        if action == "skip" and before is not None:  # the whole batch: back to the state from before it
            self._restore(trainer, module, before)
            done = "skipped the batch (restored the state from before it)"
        elif action == "skip":
            restored = self._restore_buffers(module)
            done = "skipped the step" + (
                f"; restored buffers (batch-norm statistics) of step {restored}" if restored is not None else ""
            )
        elif action == "rollback":
            done = self._rollback(trainer, module, kind, detail)
            if done is None:
                return
        elif action == "reduce_lr":
            done = self._reduce_lr(trainer, self.settings["plateau"]["lr_factor"], self.settings["plateau"]["min_lr"])
        else:
            done = "reported (no automatic remedy)"
        self._record(trainer, Alert(step, kind, detail, done, changed_training=action != "alert"))

    def _rollback(self, trainer: L.Trainer, module: L.LightningModule, kind: str, detail: str) -> str | None:
        """Restore the newest snapshot old enough to predate the trouble; when trouble recurs within
        ``recur_window`` batches, distrust the snapshot restored last (go one further back) and lower the rate."""
        settings = self.settings["rollback"]
        if self.rollbacks >= settings["max_rollbacks"] or not self.snapshots:
            why = "no snapshot to roll back to" if not self.snapshots else f"{self.rollbacks} rollbacks already"
            self._stop(trainer, module, kind, f"{detail} ({why})")
            return None
        recurred = self._last_rollback is not None and self._batches - self._last_rollback <= settings["recur_window"]
        if recurred and len(self.snapshots) > 1:  # trouble came back from the state restored last: distrust it
            self._keep([s for s in self.snapshots if s.batch < self._restored_batch] or self.snapshots[:1])
        # Detection lags the cause by a few batches (a too-large step shows in the next batches' loss): take
        # a snapshot at least half a snapshot interval old, a divergence window old for a divergence.
        if kind == "divergence" and self.divergence:
            margin = self.settings["divergence"]["window"]
        elif kind == "learning-rate jump":  # checked every batch: the batch before this one ran at a sane rate
            margin = 1
        else:
            margin = max(2, settings["snapshot_every"] // 2)
        older = [s for s in self.snapshots if s.batch <= self._batches - margin]
        snapshot = older[-1] if older else self.snapshots[0]
        self._restore(trainer, module, snapshot)
        self.rollbacks += 1
        self._restored_batch = snapshot.batch
        self._last_rollback = self._batches
        self._keep([s for s in self.snapshots if s.step <= snapshot.step])
        if self.divergence is not None:
            self.divergence.reset()
        done = f"rolled back to the state of step {snapshot.step} (learning rate {_first_lr(trainer):.3g})"
        if recurred:
            done += "; " + self._scale_lr(
                trainer, settings["lr_factor"], reason=f"recurred within {settings['recur_window']} batches"
            )
        return done

    def _restore_buffers(self, module: L.LightningModule) -> int | None:
        """Buffers (batch-norm running statistics) from the newest snapshot: a skipped step's forward pass
        changed them before its loss turned out non-finite."""
        if not self.snapshots:
            return None
        snapshot = self.snapshots[-1]
        restored = False
        with torch.no_grad():
            for name, buffer in module.named_buffers():
                if "buffer:" + name in snapshot.tensors:
                    buffer.copy_(snapshot.tensors["buffer:" + name])
                    restored = True
        return snapshot.step if restored else None

    def _reduce_lr(self, trainer: L.Trainer, factor: float, min_lr: float) -> str:
        return self._scale_lr(trainer, factor, floor=min_lr)

    def _scale_lr(self, trainer: L.Trainer, factor: float, floor: float = 0.0, reason: str = "") -> str:
        """Multiply every parameter group's rate by ``factor`` (not below ``floor``), and the schedulers'
        base rates too, so a schedule computed from them (LambdaLR, cosine) does not undo it."""
        before = [group["lr"] for opt in trainer.optimizers for group in opt.param_groups]
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = max(group["lr"] * factor, floor)
        for config in trainer.lr_scheduler_configs:
            if hasattr(config.scheduler, "base_lrs"):
                config.scheduler.base_lrs = [max(b * factor, floor) for b in config.scheduler.base_lrs]
        after = [group["lr"] for opt in trainer.optimizers for group in opt.param_groups]
        for logger in trainer.loggers:
            logger.log_metrics({"diagnosis/lr": after[0]}, step=trainer.global_step)
        tail = f" ({reason})" if reason else ""
        return f"learning rate {before[0]:.3g} -> {after[0]:.3g}{tail}"

    def _stop(self, trainer: L.Trainer, module: L.LightningModule, kind: str, detail: str) -> None:
        self.stop_reason = f"diagnosis: {kind} at step {trainer.global_step}"
        trainer.should_stop = True
        self._record(trainer, Alert(trainer.global_step, kind, detail, "stopped training early"))

    def _capture(self, trainer: L.Trainer, module: L.LightningModule, reuse: Snapshot | None = None) -> Snapshot:
        """A copy of the state a rollback restores. With ``reuse`` (a snapshot no longer kept), its tensors of
        matching shape are overwritten instead of allocated: a snapshot then costs one copy of the state
        (one ``torch._foreach_copy_``), not fresh memory each time (page faults and zeroing cost about as
        much again as the copy, and on a continual step of a few milliseconds they were most of its cost)."""
        extra: dict[str, Any] = {}
        module.on_save_checkpoint(extra)
        live = {
            "tensors": dict(_tensors(module)),
            "extra": extra,
            "optimizers": [o.state_dict() for o in trainer.optimizers],
        }
        old = (
            None if reuse is None else {"tensors": reuse.tensors, "extra": reuse.extra, "optimizers": reuse.optimizers}
        )
        pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
        copied = _copied(live, old, pairs, {})
        _copy_pairs(pairs)
        return Snapshot(trainer.global_step, self._batches, copied["tensors"], copied["extra"], copied["optimizers"])

    def _restore(self, trainer: L.Trainer, module: L.LightningModule, snapshot: Snapshot) -> None:
        with torch.no_grad():
            for name, tensor in _tensors(module):
                tensor.copy_(snapshot.tensors[name])
        if snapshot.extra:
            module.on_load_checkpoint(copy.deepcopy(snapshot.extra))
        for optimizer, state in zip(trainer.optimizers, snapshot.optimizers):  # its learning rates included
            optimizer.load_state_dict(copy.deepcopy(state))

    def _take_snapshot(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        keep = self.settings["rollback"]["keep"]
        if len(self.snapshots) >= keep:  # the oldest goes; its memory takes the new copy
            self._keep(self.snapshots[len(self.snapshots) - keep + 1 :])
        self.snapshots.append(self._capture(trainer, module, self._spare.pop() if self._spare else None))

    def _keep(self, kept: list[Snapshot]) -> None:
        """Keep ``kept`` as the snapshots; the others' memory is kept for the next ones (up to ``keep``)."""
        kept_ids = {id(s) for s in kept}
        dropped = [s for s in self.snapshots if id(s) not in kept_ids]
        self._spare = (self._spare + dropped)[: self.settings["rollback"]["keep"]]
        self.snapshots = list(kept)

    def _new_task(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        for detector in (self.grad_spike, self.loss_spike, self.plateau):
            if detector is not None:
                detector.reset()
        if self.divergence is not None:
            self.divergence.reset(forget_best=True)
        self._batches, self._last_rollback = 0, None
        self._keep([])
        self._take_snapshot(trainer, module)

    def _record(self, trainer: L.Trainer, alert: Alert) -> None:
        self.alerts.append(alert)
        print(alert.line(), flush=True)
        key = "diagnosis/" + alert.kind.replace(" ", "_")
        for logger in trainer.loggers:
            logger.log_metrics({key: 1.0, "diagnosis/alerts": float(len(self.alerts))}, step=trainer.global_step)


def _input_rms(batch: Any) -> float | None:
    """Root mean square of a batch's inputs (episodic ``support``/``query``, continual ``x``); None if none."""
    if not isinstance(batch, dict):
        return None
    inputs = [
        batch[k] for k in ("support", "query", "x") if torch.is_tensor(batch.get(k)) and batch[k].is_floating_point()
    ]
    if not inputs:
        return None
    with torch.no_grad():
        squares = sum(float(torch.linalg.vector_norm(x)) ** 2 for x in inputs)
    return math.sqrt(squares / sum(x.numel() for x in inputs))


def _copied(value: Any, into: Any, pairs: list[tuple[torch.Tensor, torch.Tensor]], memo: dict[int, Any]) -> Any:
    """A copy of ``value`` (nested dicts, lists and tuples of tensors and plain values), like ``copy.deepcopy``,
    but a tensor of ``into`` (an earlier copy of the same structure) with the same shape, dtype and device
    is reused: the pair (its tensor, the live tensor) goes to ``pairs`` for one batched copy. A tensor met
    twice is copied once (``memo``), as deepcopy keeps shared tensors shared."""
    if torch.is_tensor(value):
        if id(value) in memo:
            return memo[id(value)]
        same = torch.is_tensor(into) and (into.shape, into.dtype, into.device) == (
            value.shape,
            value.dtype,
            value.device,
        )
        if same and into.data_ptr() != value.data_ptr():
            pairs.append((into, value.detach()))
            memo[id(value)] = into
        else:
            memo[id(value)] = value.detach().clone()
        return memo[id(value)]
    if isinstance(value, dict):
        base = into if isinstance(into, dict) else {}
        return {key: _copied(item, base.get(key), pairs, memo) for key, item in value.items()}
    if type(value) in (list, tuple):
        base = into if isinstance(into, (list, tuple)) and len(into) == len(value) else [None] * len(value)
        return type(value)(_copied(item, old, pairs, memo) for item, old in zip(value, base))
    return copy.deepcopy(value)


def _copy_pairs(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    if not pairs:
        return
    with torch.no_grad():
        torch._foreach_copy_([target for target, _ in pairs], [source for _, source in pairs])


def _first_lr(trainer: L.Trainer) -> float:
    return next((group["lr"] for opt in trainer.optimizers for group in opt.param_groups), float("nan"))


def _tensors(module: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    """Parameters and buffers by name (what a rollback restores in place)."""
    return [*module.named_parameters(), *(("buffer:" + n, b) for n, b in module.named_buffers())]


def _loss_of(outputs: Any) -> float | None:
    """The training loss Lightning handed to ``on_train_batch_end`` (a tensor, or a dict with ``loss``)."""
    if isinstance(outputs, dict):
        outputs = outputs.get("loss")
    if torch.is_tensor(outputs) and outputs.numel() == 1:
        return outputs.item()
    return None


def alerts_of(callbacks: list[Any]) -> list[dict[str, Any]] | None:
    """The alerts of a run's :class:`SelfHealing` callback, for ``metrics.json``; None if diagnosis is off."""
    healer = next((c for c in callbacks if isinstance(c, SelfHealing)), None)
    return None if healer is None else [asdict(a) for a in healer.alerts]


def diagnosis_summary_of(callbacks: list[Any]) -> dict[str, Any] | None:
    """The diagnosis's own cost and counts for ``metrics.json``: CPU seconds in its per-batch hook, rollbacks."""
    healer = next((c for c in callbacks if isinstance(c, SelfHealing)), None)
    if healer is None:
        return None
    return {"hook_seconds": healer.hook_seconds, "batches": healer.batches_seen, "rollbacks": healer.rollbacks}


def stop_reason_of(callbacks: list[Any]) -> str | None:
    healer = next((c for c in callbacks if isinstance(c, SelfHealing)), None)
    return None if healer is None else healer.stop_reason
