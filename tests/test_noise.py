"""Third-party chatter kept off a run's console (metalab.noise), the project's own lines kept; each test
metric printed once however many test loaders logged it (metalab.run)."""

from __future__ import annotations

import logging
import warnings

from metalab.noise import DropNoise, quiet_third_party


def test_lightning_start_up_lines_and_tips_are_dropped_but_warnings_a_user_can_act_on_stay():
    noise = DropNoise()

    def kept(message: str) -> bool:
        return noise.filter(logging.LogRecord("lightning.pytorch", logging.INFO, __file__, 1, message, None, None))

    assert not kept("GPU available: False, used: False")
    assert not kept("TPU available: False, using: 0 TPU cores")
    assert not kept("💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger]")
    assert not kept("Using bfloat16 Automatic Mixed Precision (AMP)")
    assert kept("Seed set to 0")
    assert kept("The number of training batches (5) is smaller than the logging interval Trainer(log_every_n_steps=20)")


def test_the_filter_sits_on_lightnings_handler_so_child_loggers_are_filtered(capsys):
    import lightning.pytorch  # noqa: F401  (adds its handler)

    quiet_third_party()
    quiet_third_party()  # idempotent: one filter, not two
    parent = logging.getLogger("lightning.pytorch")
    for target in (parent, *parent.handlers):
        assert sum(isinstance(f, DropNoise) for f in target.filters) == 1
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    keep = Keep()
    keep.addFilter(DropNoise())
    parent.addHandler(keep)
    try:
        child = logging.getLogger("lightning.pytorch.utilities.rank_zero")
        child.info("GPU available: False, used: False")
        child.info("`Trainer.fit` stopped: `max_steps=30` reached.")
    finally:
        parent.removeHandler(keep)
    assert records == ["`Trainer.fit` stopped: `max_steps=30` reached."]


def test_library_deprecations_are_ignored_and_the_users_own_are_not():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_third_party()
        warnings.warn_explicit("x is deprecated", FutureWarning, "optuna/samplers.py", 1, module="optuna.samplers")
        warnings.warn_explicit(
            "suggest_uniform has been deprecated in v3.0.0.", FutureWarning, "sweeper.py", 1, module="hydra_plugins.x"
        )
        warnings.warn_explicit(
            "treespec is deprecated", FutureWarning, "_pytree.py", 21, module="lightning.pytorch.utilities._pytree"
        )
        warnings.warn_explicit("your own", FutureWarning, "mine.py", 1, module="mine")
    assert [str(w.message) for w in caught] == ["your own"]


def test_each_test_metric_is_printed_once(capsys):
    from metalab.run import _print_test_metrics

    shared = {"test/5w1s/acc": 36.7, "test/5w5s/acc": 55.0}
    _print_test_metrics([dict(shared), dict(shared)])  # what Lightning returns for two test loaders
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "[metalab] test metrics"
    assert [line.split()[0] for line in out[1:]] == ["test/5w1s/acc", "test/5w5s/acc"]
