"""Self-diagnosis and self-healing (metalab.callbacks.diagnosis): detectors on synthetic sequences against a
numpy reference, rollback on a real module and optimiser, faults in tiny real Trainer runs, bad settings."""

from __future__ import annotations

import io
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from continual.helpers import run_stream, synthetic_tensors

from metalab.callbacks.detectors import ForgettingJump, PlateauDetector, RiseDetector, SpikeDetector
from metalab.callbacks.diagnosis import DEFAULTS, SelfHealing, build_diagnosis
from metalab.callbacks.faults import FaultInjection
from metalab.data.streams import SplitStreamDataModule
from metalab.errors import ConfigError, NumericalError
from metalab.learners.continual import ExperienceReplay, Finetune

ROOT = Path(__file__).resolve().parents[2]


# -- detectors -------------------------------------------------------------------------------------------------
def spike_reference(values: np.ndarray, factor: float, window: int, warmup: int) -> list[int]:
    """Indices flagged by the rule, recomputed with numpy: value > factor * median of the last ``window``
    unflagged values, once ``warmup`` of them exist."""
    kept: list[float] = []
    flagged = []
    for i, v in enumerate(values):
        recent = kept[-window:]
        if len(recent) >= warmup and v > factor * np.median(recent):
            flagged.append(i)
        else:
            kept.append(float(v))
    return flagged


def test_spike_detector_flags_what_the_reference_flags():
    rng = np.random.default_rng(0)
    values = np.exp(rng.normal(0.0, 0.3, 600))  # healthy gradient norms: lognormal noise
    spikes = [40, 41, 300, 599]
    values[spikes] *= 200.0
    near = rng.choice(np.arange(60, 590), 40, replace=False)
    values[near] *= rng.uniform(10.0, 40.0, 40)  # around the 20x limit: half flagged, half not
    detector = SpikeDetector(factor=20.0, window=50, warmup=10)
    flagged = [i for i, v in enumerate(values) if detector.observe(float(v))]
    expected = spike_reference(values, 20.0, 50, 10)
    assert flagged == expected and set(spikes) <= set(expected) and 10 < len(expected) < 40


def test_spike_detector_is_quiet_on_noise_and_during_warmup():
    rng = np.random.default_rng(1)
    detector = SpikeDetector(factor=20.0, window=50, warmup=10)
    assert not any(detector.observe(float(v)) for v in np.exp(rng.normal(0.0, 0.5, 5000)))
    fresh = SpikeDetector(factor=2.0, window=5, warmup=3)
    assert [fresh.observe(v) is not None for v in (1.0, 100.0, 1.0, 50.0)] == [False, False, False, True]


def rise_reference(values: np.ndarray, factor: float, window: int, floor: float = 0.0) -> list[int]:
    best, start, flagged = math.inf, None, []
    for i in range(window - 1, len(values)):
        median = float(np.median(values[i - window + 1 : i + 1]))
        start = median if start is None else start
        if median < best:
            best = median
        elif median > factor * max(best, floor * start):
            flagged.append(i)
    return flagged


def test_divergence_fires_where_the_windowed_median_rises_past_factor_times_its_best():
    rng = np.random.default_rng(2)
    falling = 3.0 * np.exp(-np.arange(200) / 60) + 0.2
    rising = falling[-1] * np.exp(np.arange(100) / 20)  # diverging after step 200
    values = np.concatenate([falling, rising]) * np.exp(rng.normal(0, 0.1, 300))
    detector = RiseDetector(factor=3.0, window=25)
    flagged = [i for i, v in enumerate(values) if detector.observe(float(v))]
    expected = rise_reference(values, 3.0, 25)
    assert flagged == expected and expected and expected[0] > 200
    quiet = RiseDetector(factor=3.0, window=25)
    assert not any(quiet.observe(float(v)) for v in falling * np.exp(rng.normal(0, 0.3, 200)))


def test_divergence_floor_ignores_a_converged_loss_wandering_near_zero_but_not_a_real_rise():
    # a 5-way loss from ln 5 down to about 0.01, whose windowed median then wanders between about 0.005
    # and 0.04 (the shape of the Reptile 5w5s and Matching Networks runs the floor was added for)
    rng = np.random.default_rng(3)
    steps = np.arange(3000)
    converged = (1.6 * np.exp(-steps / 150) + 0.01) * np.exp(0.7 * np.sin(steps / 97) + rng.normal(0, 0.5, 3000))
    unfloored = RiseDetector(factor=3.0, window=25)
    assert any(unfloored.observe(float(v)) for v in converged)  # the false alarm the floor removes
    floored = RiseDetector(factor=3.0, window=25, floor=0.1)
    assert not any(floored.observe(float(v)) for v in converged)
    diverging = np.concatenate([converged, 0.02 * np.exp(np.arange(200) / 30)])  # back up to 16 and beyond
    detector = RiseDetector(factor=3.0, window=25, floor=0.1)
    flagged = [i for i, v in enumerate(diverging) if detector.observe(float(v))]
    expected = rise_reference(diverging, 3.0, 25, floor=0.1)
    assert flagged == expected and expected and expected[0] > 3000
    assert detector.observe(float("nan")) is None


def test_a_resumed_run_diagnoses_as_the_uninterrupted_run_would():
    # the converged 5-way loss of the floor test, interrupted half-way: the divergence floor is a fraction of
    # the loss the run started from, which a resumed process only knows from the checkpoint
    rng = np.random.default_rng(3)
    steps = np.arange(3000)
    losses = (1.6 * np.exp(-steps / 150) + 0.01) * np.exp(0.7 * np.sin(steps / 97) + rng.normal(0, 0.5, 3000))
    before, after = [float(v) for v in losses[:1500]], [float(v) for v in losses[1500:]]

    def verdicts(healer: SelfHealing, values: list[float]) -> list[tuple[str | None, str | None]]:
        return [(healer.divergence.observe(v), healer.plateau.observe(v)) for v in values]

    uninterrupted = SelfHealing()
    verdicts(uninterrupted, before)
    saved = io.BytesIO()
    torch.save(uninterrupted.state_dict(), saved)  # as Lightning checkpoints it
    resumed = SelfHealing()
    resumed.load_state_dict(torch.load(io.BytesIO(saved.getvalue()), weights_only=True))
    continued = verdicts(resumed, after)
    assert continued == verdicts(uninterrupted, after) and not any(d for d, _ in continued)
    forgetful = SelfHealing()  # what a resume did before the detectors were saved
    assert any(d for d, _ in verdicts(forgetful, after))


def test_plateau_fires_after_patience_without_improvement_and_not_while_improving():
    detector = PlateauDetector(patience=30, min_improvement=0.01, window=5)
    fired = [i for i in range(200) if detector.observe(1.0)]
    # the first full window sets the best (index 4); then every 30 observations without 1% progress
    assert fired == [34, 64, 94, 124, 154, 184]
    improving = PlateauDetector(patience=30, min_improvement=0.01, window=5)
    assert not any(improving.observe(0.98**i) for i in range(200))


def test_forgetting_jump_compares_earlier_tasks_of_consecutive_rows():
    detector = ForgettingJump(threshold=30.0)
    assert detector.observe([95.0, 90.0, 10.0], [90.0, 85.0, 97.0], earlier=2) is None
    found = detector.observe([95.0, 90.0, 10.0], [40.0, 85.0, 97.0], earlier=2)
    assert found and "task 0 fell 55.0 points" in found
    assert detector.observe([95.0, 90.0, 10.0], [95.0, 90.0, 0.0], earlier=2) is None  # task 2 is not earlier


# -- rollback ------------------------------------------------------------------------------------------------
def fake_trainer(optimizer: torch.optim.Optimizer, step: int) -> SimpleNamespace:
    """The trainer attributes the callback reads (declared here rather than a full Trainer: the rollback is
    the unit under test; the Trainer runs below exercise it end to end)."""
    return SimpleNamespace(
        optimizers=[optimizer], global_step=step, loggers=[], lr_scheduler_configs=[], should_stop=False
    )


def test_a_plateau_lowers_the_rate_only_where_no_schedule_sets_it():
    optimizer = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1)
    healer = SelfHealing()
    unscheduled = fake_trainer(optimizer, 10)
    assert healer._plateau_remedy(unscheduled, "flat") == ("flat", "reduce_lr")
    healer._act(unscheduled, torch.nn.Linear(2, 1), "plateau", "flat", "reduce_lr")
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.05) and healer.alerts[-1].changed_training
    scheduled = fake_trainer(optimizer, 20)
    scheduled.lr_scheduler_configs = [
        SimpleNamespace(scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1))
    ]
    detail, action = healer._plateau_remedy(scheduled, "flat")
    assert action == "alert" and "schedule sets the rate" in detail
    healer._act(scheduled, torch.nn.Linear(2, 1), "plateau", detail, action)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.05) and not healer.alerts[-1].changed_training
    assert SelfHealing({**DEFAULTS, "plateau": {**DEFAULTS["plateau"], "action": "stop"}})._plateau_remedy(
        scheduled, "flat"
    ) == ("flat", "stop")  # an explicit stop is the user's choice, schedule or not


def test_rollback_restores_weights_buffers_and_optimizer_state_and_lowers_the_rate_when_trouble_recurs():
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    optimizer = torch.optim.Adam(module.parameters(), lr=0.01)

    def step() -> None:
        optimizer.zero_grad()
        module(torch.randn(8, 4)).pow(2).sum().backward()
        optimizer.step()

    module.on_save_checkpoint = lambda checkpoint: None  # a LightningModule hook; this plain module has none
    healer = SelfHealing()
    step()
    healer._take_snapshot(fake_trainer(optimizer, 1), module)
    good = {k: v.clone() for k, v in module.state_dict().items()}
    good_moments = [s["exp_avg"].clone() for s in optimizer.state.values()]
    for _ in range(3):
        step()
    assert not torch.equal(module[0].weight, good["0.weight"])
    trainer = fake_trainer(optimizer, 10)
    done = healer._rollback(trainer, module, "gradient explosion", "test")
    assert done == "rolled back to the state of step 1 (learning rate 0.01)"
    for key, value in module.state_dict().items():
        assert torch.equal(value, good[key]), key  # weights and batch-norm running statistics
    assert all(torch.equal(s["exp_avg"], m) for s, m in zip(optimizer.state.values(), good_moments))
    assert optimizer.param_groups[0]["lr"] == 0.01  # first rollback: the snapshot's rate
    optimizer.param_groups[0]["lr"] = 5.0  # a rate that jumped after the snapshot is undone by the rollback
    healer._rollback(fake_trainer(optimizer, 11), module, "gradient explosion", "test")
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.001)  # recurred: the snapshot's rate, lowered
    done = healer._rollback(fake_trainer(optimizer, 12), module, "gradient explosion", "test")
    assert done.endswith("learning rate 0.01 -> 0.001 (recurred within 100 batches)")
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.001)


def test_snapshots_that_reuse_dropped_memory_restore_exactly_the_state_they_copied():
    """Snapshots overwrite the tensors of dropped ones (``keep=2`` here, so from the third on): each must still
    hold the state of its own step (weights, batch-norm statistics, Adam moments, what the module adds to a
    checkpoint), independent of the live tensors and of the other snapshots."""
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    optimizer = torch.optim.Adam(module.parameters(), lr=0.01)
    memory = {"x": torch.zeros(5, 4)}  # a replay buffer's storage, written in place as training goes
    module.on_save_checkpoint = lambda checkpoint: checkpoint.update(memory=memory)
    module.on_load_checkpoint = lambda checkpoint: memory.update(checkpoint["memory"])
    healer = build_diagnosis(rollback={"keep": 2, "snapshot_every": 1})
    states, first = {}, None
    for step in range(1, 6):
        optimizer.zero_grad()
        module(torch.randn(8, 4)).pow(2).sum().backward()
        optimizer.step()
        memory["x"][step - 1] = float(step)
        healer._batches = step
        healer._take_snapshot(fake_trainer(optimizer, step), module)
        first = healer.snapshots[0].tensors["0.weight"] if first is None else first
        states[step] = (
            {k: v.clone() for k, v in module.state_dict().items()},
            [s["exp_avg_sq"].clone() for s in optimizer.state.values()],
            memory["x"].clone(),
        )
    assert [s.step for s in healer.snapshots] == [4, 5]
    assert any(s.tensors["0.weight"] is first for s in healer.snapshots)  # step 1's memory holds a later step
    for snapshot in reversed(healer.snapshots):
        for p in module.parameters():
            p.data.add_(1.0)  # move away from the snapshot
        memory["x"].fill_(-1.0)
        healer._restore(fake_trainer(optimizer, 9), module, snapshot)
        weights, moments, stored = states[snapshot.step]
        assert all(torch.equal(v, weights[k]) for k, v in module.state_dict().items())
        assert all(torch.equal(s["exp_avg_sq"], m) for s, m in zip(optimizer.state.values(), moments))
        assert torch.equal(memory["x"], stored) and memory["x"] is not snapshot.extra["memory"]["x"]


def test_rollbacks_run_out_and_training_stops_with_the_reason():
    module = torch.nn.Linear(2, 1)
    module.on_save_checkpoint = lambda checkpoint: None
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    healer = build_diagnosis(rollback={"max_rollbacks": 1})
    healer._take_snapshot(fake_trainer(optimizer, 0), module)
    trainer = fake_trainer(optimizer, 5)
    healer._act(trainer, module, "divergence", "rising", "rollback")
    healer._act(trainer, module, "divergence", "rising again", "rollback")
    assert trainer.should_stop and healer.stop_reason == "diagnosis: divergence at step 5"
    assert [a.action.split(";")[0] for a in healer.alerts] == [
        "rolled back to the state of step 0 (learning rate 0.1)",
        "stopped training early",
    ]


# -- tiny real Trainer runs --------------------------------------------------------------------------------------
def test_nan_loss_at_step_k_is_skipped_and_training_finishes_finite(tmp_path):
    healer, fault = SelfHealing(), FaultInjection(nan_loss_at_step=12)
    learner, metrics = run_stream(ExperienceReplay(buffer_size=50), tmp_path, callbacks=[fault, healer])
    assert fault.fired == [{"fault": "nan_loss", "step": 12}]
    assert [(a.kind, a.step, a.action) for a in healer.alerts] == [("non-finite loss", 12, "skipped the step")]
    assert learner.skipped_steps == [{"step": 12, "loss": pytest.approx(float("nan"), nan_ok=True)}]
    assert all(math.isfinite(p.sum().item()) for p in learner.parameters())
    assert metrics and all(math.isfinite(v) for v in metrics.values())


def test_without_diagnosis_the_same_nan_stops_the_run(tmp_path):
    with pytest.raises(NumericalError, match="training loss became nan at step 12"):
        run_stream(Finetune(), tmp_path, callbacks=[FaultInjection(nan_loss_at_step=12)])


def longer_stream() -> SplitStreamDataModule:
    """5 tasks of 30 mini-batches: long enough for the detectors' warm-up within a task."""
    return SplitStreamDataModule.from_tensors(
        *synthetic_tensors(n_train=1500), dataset="mnist", epochs_per_task=1, batch_size=10, eval_batch_size=50, seed=0
    )


def test_a_hundredfold_learning_rate_is_rolled_back_to_the_rate_before_it(tmp_path):
    healer, fault = SelfHealing(), FaultInjection(lr_multiplier_at_step=45)  # the middle of task 1
    _, clean = run_stream(Finetune(), tmp_path / "clean", stream=longer_stream())
    learner, metrics = run_stream(Finetune(), tmp_path / "fault", stream=longer_stream(), callbacks=[fault, healer])
    assert fault.fired == [{"fault": "lr_multiplier", "step": 45}]
    first = healer.alerts[0]
    assert (first.kind, first.step) == ("learning-rate jump", 46)
    assert first.action.startswith("rolled back to the state")
    assert first.action.endswith("(learning rate 0.1)") and learner.optimizers().param_groups[0]["lr"] == 0.1
    assert all(math.isfinite(v) for v in metrics.values())
    assert metrics["test/task_il/acc"] > 0.9 * clean["test/task_il/acc"]


def test_without_the_rate_check_the_explosion_is_rolled_back_and_the_rate_lowered_when_it_recurs(tmp_path):
    healer = build_diagnosis(lr_jump=None, gradient_explosion={"every": 1}, rollback={"snapshot_every": 2})
    fault = FaultInjection(lr_multiplier_at_step=45)
    _, clean = run_stream(Finetune(), tmp_path / "clean", stream=longer_stream())
    learner, metrics = run_stream(Finetune(), tmp_path / "fault", stream=longer_stream(), callbacks=[fault, healer])
    actions = [a.action for a in healer.alerts]
    assert healer.alerts[0].kind == "gradient explosion" and all(a.startswith("rolled back") for a in actions)
    assert any("learning rate 0.1 -> 0.01" in a for a in actions)  # recurred: the older snapshot's rate, lowered
    assert all(math.isfinite(v) for v in metrics.values())
    assert metrics["test/task_il/acc"] > 0.9 * clean["test/task_il/acc"]


def test_corrupted_inputs_are_caught_before_the_step_and_the_batch_is_skipped_exactly(tmp_path):
    healer, fault = SelfHealing(), FaultInjection(corrupt_inputs_at_step=45)
    _, clean = run_stream(Finetune(), tmp_path / "clean", stream=longer_stream())
    learner, metrics = run_stream(Finetune(), tmp_path / "fault", stream=longer_stream(), callbacks=[fault, healer])
    assert [(a.kind, a.action) for a in healer.alerts] == [
        ("corrupted inputs", "skipped the batch (restored the state from before it)")
    ]
    assert metrics["test/task_il/acc"] > 0.9 * clean["test/task_il/acc"]


def test_a_clean_run_raises_no_alert(tmp_path):
    healer = SelfHealing()
    run_stream(ExperienceReplay(buffer_size=50), tmp_path, callbacks=[healer])
    assert healer.alerts == [] and healer.batches_seen > 0


# -- settings ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "settings, message",
    [
        (
            {"divergence": {"windw": 3}},
            "diagnosis.divergence.windw is not allowed: unknown key; diagnosis.divergence takes factor, window",
        ),
        ({"bogus": {}}, "diagnosis.bogus is not allowed: unknown diagnosis section; diagnosis takes non_finite, "),
        (
            {"divergence": {"factor": 0.5}},
            "diagnosis.divergence.factor=0.5 is not allowed: diagnosis.divergence.factor must be a number > 1",
        ),
        (
            {"plateau": {"lr_factor": 1.5}},
            "diagnosis.plateau.lr_factor=1.5 is not allowed: diagnosis.plateau.lr_factor must be a number in (0, 1)",
        ),
        (
            {"forgetting": {"threshold": 150}},
            "diagnosis.forgetting.threshold=150 is not allowed: diagnosis.forgetting.threshold must be a number of ",
        ),
        (
            {"non_finite": {"action": "pray"}},
            "diagnosis.non_finite.action='pray' is not allowed: diagnosis.non_finite.action must be one of skip, ",
        ),
        (
            {"rollback": {"snapshot_every": 0}},
            "diagnosis.rollback.snapshot_every=0 is not allowed: diagnosis.rollback.snapshot_every must be an integer",
        ),
    ],
)
def test_bad_settings_name_the_key(settings, message):
    with pytest.raises(ConfigError) as error:
        build_diagnosis(**settings)
    assert str(error.value).startswith(message)


def test_defaults_match_the_config_file_and_a_section_can_be_turned_off():
    import yaml

    config = yaml.safe_load((ROOT / "conf" / "diagnosis" / "default.yaml").read_text())
    config.pop("_target_")
    assert config == DEFAULTS
    assert build_diagnosis(plateau=None).plateau is None


@pytest.mark.parametrize(
    "override, expected",
    [
        ("+diagnosis.divergence.windw=3", "error: diagnosis.divergence.windw is not allowed: unknown key"),
        (
            "diagnosis.gradient_explosion.factor=0.5",
            "error: diagnosis.gradient_explosion.factor=0.5 is not allowed: diagnosis.gradient_explosion.factor "
            "must be a number > 1",
        ),
    ],
)
def test_train_py_gives_one_error_line(override, expected, tmp_path):
    result = subprocess.run(
        [sys.executable, "train.py", override, f"hydra.run.dir={tmp_path}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1 and errors[0].startswith(expected), result.stderr[-2000:]
    assert "Traceback" not in result.stderr
