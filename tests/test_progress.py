"""BudgetProgress (metalab.callbacks.progress): lines toward max_steps / max_time, on a mocked clock where
every training step takes one second, so the rate and the time left it must print are known exactly."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import metalab.budget
from metalab.budget import FitHorizonToTimeBudget
from metalab.callbacks import progress
from metalab.callbacks.progress import BudgetProgress


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    perf_counter = monotonic


class OneSecondSteps(L.LightningModule):
    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.layer, self.clock = torch.nn.Linear(2, 1), clock

    def training_step(self, batch, batch_idx):
        self.clock.now += 1.0
        return self.layer(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit(tmp_path, monkeypatch, every_seconds: float, bar: bool = False, others: tuple = (), **budget) -> BudgetProgress:
    import lightning.pytorch.callbacks.timer as timer_module

    clock = FakeClock()
    monkeypatch.setattr(progress, "time", clock)
    monkeypatch.setattr(timer_module, "time", clock)
    monkeypatch.setattr(metalab.budget, "time", clock)
    callback = BudgetProgress(every_seconds=every_seconds)
    extra = [L.pytorch.callbacks.TQDMProgressBar(refresh_rate=1)] if bar else []
    extra += list(others)
    trainer = L.Trainer(
        accelerator="cpu",
        callbacks=[callback, *extra],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=bar,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
        **budget,
    )
    trainer.fit(OneSecondSteps(clock), DataLoader(TensorDataset(torch.randn(16, 2)), batch_size=4))
    return callback


def test_step_budget_lines_give_steps_rate_and_time_left(tmp_path, monkeypatch, capsys):
    callback = fit(tmp_path, monkeypatch, every_seconds=4, max_steps=10, max_epochs=-1)
    assert callback.lines == [
        "[progress] step 4/10 (40%), 1 steps/s, 6.0s left (by steps), 4.0s elapsed",
        "[progress] step 8/10 (80%), 1 steps/s, 2.0s left (by steps), 8.0s elapsed",
        "[progress] training ended: step 10/10 (100%), 1 steps/s, 10.0s elapsed",
    ]
    assert capsys.readouterr().out.count("[progress]") == 3


def test_time_budget_left_comes_from_lightnings_timer(tmp_path, monkeypatch):
    callback = fit(tmp_path, monkeypatch, every_seconds=5, max_time={"seconds": 12}, max_epochs=-1)
    assert callback.lines[0] == "[progress] step 5, 1 steps/s, 7.0s left (by max_time), 5.0s elapsed"
    assert callback.lines[-1].startswith("[progress] training ended: step 12,")


def test_the_nearer_of_the_two_budgets_is_the_time_left(tmp_path, monkeypatch):
    callback = fit(tmp_path, monkeypatch, every_seconds=3, max_steps=100, max_time={"seconds": 9}, max_epochs=-1)
    assert callback.lines[0] == "[progress] step 3/100 (3%), 1 steps/s, 6.0s left (by max_time), 3.0s elapsed"


def test_a_fitted_time_budget_horizon_is_the_end_shown(tmp_path, monkeypatch):
    """A 2-hour budget stops at the steps its probe fitted, not at max_steps (the paper's 60,000): the lines
    count toward that horizon. Here the probe (steps 1-3, one second each) fits int((20 - 3) * 0.5) = 8 more
    steps into the 20-second budget: the horizon is step 11."""
    probe = FitHorizonToTimeBudget(probe_steps=2, warmup_steps=1, margin=0.5)
    callback = fit(
        tmp_path, monkeypatch, every_seconds=4, others=(probe,), max_steps=100, max_time={"seconds": 20}, max_epochs=-1
    )
    fitted = "horizon fitted to the time budget"
    assert probe.horizon == 11
    assert callback.lines == [
        f"[progress] step 4/11 (36%, {fitted}), 1 steps/s, 7.0s left (by steps), 4.0s elapsed",
        f"[progress] step 8/11 (73%, {fitted}), 1 steps/s, 3.0s left (by steps), 8.0s elapsed",
        f"[progress] training ended: step 11/11 (100%, {fitted}), 1 steps/s, 11.0s elapsed",
    ]


def test_an_epoch_budget_prints_nothing(tmp_path, monkeypatch):
    assert fit(tmp_path, monkeypatch, every_seconds=0, max_epochs=2).lines == []


def test_a_negative_interval_is_a_config_error():
    with pytest.raises(ValueError, match="every_seconds=-1 is not allowed"):
        BudgetProgress(every_seconds=-1)


def test_with_a_tqdm_bar_every_line_is_shown_the_last_one_too(tmp_path, monkeypatch, capsys):
    """Lines go through the bar's print while it is drawn; it writes nothing once the bar is closed."""
    callback = fit(tmp_path, monkeypatch, every_seconds=4, bar=True, max_steps=10, max_epochs=-1)
    out = capsys.readouterr()
    assert len(callback.lines) == 3
    assert all(line in out.out + out.err for line in callback.lines)
