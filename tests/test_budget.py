"""Schedules fitted to a wall-time budget (metalab.budget): the math against torch's own schedulers, and
the probe on a mocked clock (one "second" per step), so the horizon it must choose is known exactly."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from metalab import budget
from metalab.budget import AnnealToHorizon, FitHorizonToTimeBudget, steps_that_fit


def test_steps_that_fit():
    assert steps_that_fit(100.0, 0.5, 0.9) == 180
    assert steps_that_fit(-3.0, 0.5, 0.9) == 0
    with pytest.raises(ValueError):
        steps_that_fit(10.0, 0.0, 0.9)


def _lrs(make_scheduler, steps: int) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    scheduler = make_scheduler(optimizer)
    out = []
    for _ in range(steps):
        optimizer.step()
        scheduler.step()
        out.append(optimizer.param_groups[0]["lr"])
    return out


def test_cosine_to_horizon_is_torchs_cosine_annealing():
    ours = _lrs(lambda o: AnnealToHorizon(o, "cosine", end_factor=0.01, horizon=50), 60)
    torchs = _lrs(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=50, eta_min=1e-5), 50)
    assert ours[:50] == pytest.approx(torchs, rel=1e-9, abs=1e-15)
    assert ours[50:] == pytest.approx([1e-5] * 10)  # held at the end value past the horizon


def test_linear_to_horizon_is_torchs_linear_lr():
    ours = _lrs(lambda o: AnnealToHorizon(o, "linear", end_factor=0.0, horizon=40), 40)
    torchs = _lrs(lambda o: torch.optim.lr_scheduler.LinearLR(o, 1.0, 0.0, total_iters=40), 40)
    assert ours == pytest.approx(torchs, rel=1e-9, abs=1e-15)


def test_without_a_horizon_the_rate_is_held():
    assert _lrs(lambda o: AnnealToHorizon(o, "cosine"), 5) == [1e-3] * 5


class FakeClock:
    def __init__(self) -> None:
        self.now = 500.0

    def perf_counter(self) -> float:
        return self.now

    monotonic = perf_counter


class OneSecondSteps(L.LightningModule):
    """A linear model whose every training step takes one second on the fake clock."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.layer, self.clock = torch.nn.Linear(2, 1), clock

    def training_step(self, batch, batch_idx):
        self.clock.now += 1.0
        return self.layer(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=0.1)
        scheduler = AnnealToHorizon(optimizer, "linear", end_factor=0.0)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


@pytest.mark.parametrize(
    "warmup_steps, max_steps, expected",
    [(1, -1, 5 + int((100 - 5) * 0.9)), (0, -1, 4 + int((100 - 4) * 0.9)), (1, 40, 40)],
)
def test_probe_fits_the_schedule_and_max_steps_into_max_time(monkeypatch, tmp_path, warmup_steps, max_steps, expected):
    """Also without a warm-up: the probe's clock then starts before the first step (batch-end hooks never see
    step 0), which a probe started at batch ends got wrong."""
    import lightning.pytorch.callbacks.timer as timer_module

    clock = FakeClock()
    monkeypatch.setattr(budget, "time", clock)
    monkeypatch.setattr(timer_module, "time", clock)
    probe = FitHorizonToTimeBudget(probe_steps=4, warmup_steps=warmup_steps, margin=0.9)
    trainer = L.Trainer(
        accelerator="cpu",
        max_time={"seconds": 100},
        max_steps=max_steps,
        max_epochs=-1,
        callbacks=[probe],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
    )
    data = DataLoader(TensorDataset(torch.randn(16, 2)), batch_size=4)
    module = OneSecondSteps(clock)
    trainer.fit(module, data)
    scheduler = trainer.lr_scheduler_configs[0].scheduler
    assert probe.seconds_per_step == 1.0
    assert probe.horizon == scheduler.horizon == expected == trainer.global_step  # stopped where the schedule ends
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
