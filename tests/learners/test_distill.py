"""Knowledge distillation (Hinton et al. 2015): the tempered KL against a hand computation (the T^2 factor
included), the learner's step against the objective written out, the teacher-logit cache, and the errors
for a missing or mismatched teacher checkpoint and a temperature <= 0."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from metalab.distillation import distillation_objective, tempered_kl
from metalab.errors import ConfigError, DataError
from metalab.learners.distill import DistillationLearner, export_network, load_teacher
from metalab.models.mlp import MLP
from metalab.models.resnet import ResNet18


def _kl_by_hand(student: list[list[float]], teacher: list[list[float]], t: float) -> float:
    """T^2 * mean over rows of sum_k p_k (log p_k - log q_k), p = softmax(teacher/T), q = softmax(student/T),
    with plain Python floats (no torch)."""
    total = 0.0
    for s_row, t_row in zip(student, teacher):
        p = [math.exp(v / t) for v in t_row]
        q = [math.exp(v / t) for v in s_row]
        p = [v / sum(p) for v in p]
        q = [v / sum(q) for v in q]
        total += sum(pk * (math.log(pk) - math.log(qk)) for pk, qk in zip(p, q))
    return t * t * total / len(student)


def _logits(seed: int, n: int = 4, classes: int = 5) -> torch.Tensor:
    return 3 * torch.randn(n, classes, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("temperature", [1.0, 3.0, 0.5])
def test_tempered_kl_equals_the_hand_computation_with_its_t_squared_factor(temperature):
    student, teacher = _logits(0), _logits(1)
    expected = _kl_by_hand(student.tolist(), teacher.tolist(), temperature)
    assert tempered_kl(student, teacher, temperature).item() == pytest.approx(expected, rel=1e-5)


def test_the_objective_is_the_weighted_average_of_label_ce_and_tempered_kl():
    student, teacher = _logits(2), _logits(3)
    labels = torch.tensor([0, 4, 2, 2])
    alpha, t = 0.7, 4.0
    loss, parts = distillation_objective(student, labels, teacher, alpha, t)
    ce = -sum(
        row[y] - math.log(sum(math.exp(v) for v in row)) for row, y in zip(student.tolist(), labels.tolist())
    ) / len(labels)
    expected = (1 - alpha) * ce + alpha * _kl_by_hand(student.tolist(), teacher.tolist(), t)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert parts["hard"].item() == pytest.approx(ce, rel=1e-5)
    alone, _ = distillation_objective(student, labels, None, alpha, t)  # no teacher: labels alone
    assert alone.item() == pytest.approx(ce, rel=1e-5)


def _mlp(seed: int, hidden: int = 6) -> MLP:
    torch.manual_seed(seed)
    return MLP(in_features=12, hidden=[hidden], n_classes=3)


def _learner(tmp_path, **kwargs) -> tuple[DistillationLearner, MLP]:
    teacher = _mlp(1)
    path = export_network(teacher, tmp_path / "teacher.pt")
    learner = DistillationLearner(
        _mlp(0),
        lambda params: torch.optim.SGD(params, lr=0.1),
        teacher=_mlp(5),  # other initial weights: the checkpoint's must replace them
        teacher_checkpoint=str(path),
        channels_last=False,
        **kwargs,
    )
    return learner, teacher


def test_a_training_step_is_the_objective_on_the_frozen_teachers_logits_and_caches_them(tmp_path):
    learner, teacher = _learner(tmp_path, alpha=0.6, temperature=2.0)
    g = torch.Generator().manual_seed(7)
    batch = {"x": torch.randn(5, 12, generator=g), "y": torch.randint(0, 3, (5,), generator=g)}
    batch["index"] = torch.tensor([4, 0, 9, 2, 7])
    learner.log_dict = lambda *args, **kwargs: None  # no Trainer attached
    loss = learner.training_step(batch, 0)
    with torch.no_grad():
        teacher_logits = teacher(batch["x"])
    expected, _ = distillation_objective(learner.network(batch["x"]), batch["y"], teacher_logits, 0.6, 2.0)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert learner.teacher_images == 5
    learner.training_step(batch, 1)  # the same images again: from the cache, the teacher is not run
    assert learner.teacher_images == 5
    torch.testing.assert_close(learner.cached_logits[batch["index"]], teacher_logits)
    assert not any(p.requires_grad for p in learner.teacher.parameters()) and not learner.teacher.training
    assert all(not name.startswith("_teacher") for name in learner.state_dict())  # not in the student's checkpoints


def test_a_missing_teacher_checkpoint_names_the_key(tmp_path):
    with pytest.raises(DataError, match=r"learner\.teacher_checkpoint=.*no such file"):
        load_teacher(_mlp(0), tmp_path / "absent.pt")


def test_a_teacher_checkpoint_of_another_architecture_names_the_key_and_the_shapes(tmp_path):
    path = export_network(ResNet18(nf=2, blocks=[1, 1, 1, 1]), tmp_path / "narrow.pt")
    with pytest.raises(
        ConfigError, match=r"learner\.teacher_checkpoint=.*does not fit learner\.teacher.*\[2, 3, 3, 3\]"
    ):
        load_teacher(ResNet18(nf=4), path)
    with pytest.raises(ConfigError, match=r"does not fit learner\.teacher.*missing"):
        load_teacher(nn.Sequential(nn.Linear(2, 2)), export_network(nn.Sequential(), tmp_path / "empty.pt"))


@pytest.mark.parametrize("temperature", [0.0, -1.0])
def test_a_temperature_at_or_below_zero_names_the_key(tmp_path, temperature):
    with pytest.raises(ConfigError, match=r"learner\.temperature=.* must be > 0"):
        DistillationLearner(_mlp(0), lambda params: torch.optim.SGD(params, lr=0.1), temperature=temperature)


def test_a_teacher_needs_both_its_architecture_and_its_weights(tmp_path):
    with pytest.raises(ConfigError, match=r"learner\.teacher_checkpoint=None is not allowed"):
        DistillationLearner(_mlp(0), lambda params: torch.optim.SGD(params, lr=0.1), teacher=_mlp(1))


def test_a_non_finite_loss_stops_training_with_one_error(tmp_path):
    from metalab.errors import NumericalError

    learner, _ = _learner(tmp_path)
    learner.log_dict = lambda *args, **kwargs: None
    batch = {"x": torch.full((2, 12), float("nan")), "y": torch.tensor([0, 1]), "index": torch.tensor([0, 1])}
    with pytest.raises(NumericalError, match="training loss became nan"):
        learner.training_step(batch, 0)
