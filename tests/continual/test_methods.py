"""Every method runs through the one loop on a tiny stream and does what it promises."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from continual.helpers import run_stream, tiny_stream
from metalab.errors import ConfigError
from metalab.learners.continual import EWC, DERPlusPlus, ExperienceReplay, Finetune, Joint, LwF, Progressive
from metalab.learners.continual.loop import PlainLearner
from metalab.learners.continual.methods import StreamInfo

METHODS = {
    "finetune": lambda: Finetune(),
    "joint": lambda: Joint(),
    "ewc": lambda: EWC(ewc_lambda=5.0),
    "online_ewc_sampled": lambda: EWC(ewc_lambda=5.0, online=True, gamma=0.8, sampled_labels=True),
    "er": lambda: ExperienceReplay(buffer_size=40, replay_batch_size=10),
    "derpp": lambda: DERPlusPlus(buffer_size=40, replay_batch_size=10),
    "lwf": lambda: LwF(),
    "progressive": lambda: Progressive(),
}


@pytest.mark.parametrize("name", list(METHODS))
def test_each_method_trains_the_whole_stream(name, tmp_path):
    learner, metrics = run_stream(METHODS[name](), tmp_path)
    for key in (
        "test/class_il/acc",
        "test/task_il/acc",
        "test/class_il/forgetting",
        "test/task_il/bwt",
        "test/task_il/fwt",
    ):
        assert math.isfinite(metrics[key]), key
    assert learner.accuracy["class_il"].rows_done() == 6  # initial model + one row per task
    assert metrics["test/task_il/acc"] > 60.0  # the synthetic tasks are easy: every method learns something
    assert (tmp_path / "continual_metrics.json").is_file()


def test_progressive_networks_never_forget_in_task_il(tmp_path):
    learner, metrics = run_stream(Progressive(), tmp_path)
    assert metrics["test/task_il/forgetting"] == 0.0
    assert metrics["test/task_il/bwt"] == 0.0


def test_replay_and_joint_beat_finetune_in_class_il(tmp_path):
    # 3 epochs per task: enough for fine-tuning to forget the earlier tasks' classes
    _, finetune = run_stream(Finetune(), tmp_path, stream=tiny_stream(epochs_per_task=3))
    _, replay = run_stream(
        ExperienceReplay(buffer_size=100, replay_batch_size=10), tmp_path, stream=tiny_stream(epochs_per_task=3)
    )
    _, joint = run_stream(Joint(), tmp_path, stream=tiny_stream(epochs_per_task=3))
    assert joint["test/class_il/acc"] >= replay["test/class_il/acc"] > finetune["test/class_il/acc"] + 20


def _info() -> StreamInfo:
    return StreamInfo(n_tasks=3, classes_per_task=2, train_examples=100, example_x=torch.zeros(1, 4))


def test_offline_ewc_constant_memory_form_equals_the_sum_of_per_task_penalties():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 6)).double()
    data = [(torch.randn(12, 4, dtype=torch.float64), torch.randint(0, 6, (12,))) for _ in range(3)]
    fake = PlainLearner(net, None, data)
    ewc = EWC(ewc_lambda=3.0)
    anchors, fishers = [], []
    from metalab.learners.continual.fisher import diagonal_fisher

    for task in range(3):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(0.3 * torch.randn_like(p))
        fishers.append(diagonal_fisher(net, [data[task]]))
        anchors.append({n: p.detach().clone() for n, p in net.named_parameters()})
        ewc.after_task(fake, task)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.2 * torch.randn_like(p))
    expected = sum(
        1.5 * (f[n] * (p - a[n]) ** 2).sum() for f, a in zip(fishers, anchors) for n, p in net.named_parameters()
    )
    got = ewc.penalty(fake, {}, torch.zeros(1))
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9)
    # the gradient too (what training actually uses)
    g_got = torch.autograd.grad(got, list(net.parameters()))
    g_exp = torch.autograd.grad(expected, list(net.parameters()))
    for a, b in zip(g_got, g_exp):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_online_ewc_decays_old_importance():
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 6).double()
    data = [(torch.randn(10, 4, dtype=torch.float64), torch.randint(0, 6, (10,))) for _ in range(2)]
    fake = PlainLearner(net, None, data)
    ewc = EWC(ewc_lambda=1.0, online=True, gamma=0.5)
    from metalab.learners.continual.fisher import diagonal_fisher

    f0 = diagonal_fisher(net, [data[0]])
    ewc.after_task(fake, 0)
    f1 = diagonal_fisher(net, [data[1]])
    ewc.after_task(fake, 1)
    for n in f0:
        torch.testing.assert_close(ewc.quadratic.importance[n], 0.5 * f0[n] + f1[n])
        torch.testing.assert_close(ewc.quadratic.anchor[n], dict(net.named_parameters())[n].detach())


def test_proximal_ewc_step_is_the_exact_minimiser_and_matches_the_gradient_step_for_small_rates():
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 6).double()
    data = [(torch.randn(10, 4, dtype=torch.float64), torch.randint(0, 6, (10,)))]
    fake = PlainLearner(net, None, data)
    ewc = EWC(ewc_lambda=50.0, update="proximal")
    ewc.after_task(fake, 0)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.5 * torch.randn_like(p))
    moved = {n: p.detach().clone() for n, p in net.named_parameters()}
    for lr in (0.3, 1e-6):
        for n, p in net.named_parameters():
            p.data.copy_(moved[n])
        fake.optimizer = torch.optim.SGD(net.parameters(), lr=lr)
        ewc.after_optimizer_step(fake)
        for n, p in net.named_parameters():
            a, m = ewc.quadratic.importance[n], ewc.quadratic.anchor[n]
            # stationary point of |theta - moved|^2 / (2 lr) + lambda/2 A (theta - m)^2
            torch.testing.assert_close((p - moved[n]) / lr + 50.0 * a * (p - m), torch.zeros_like(p), atol=1e-9, rtol=0)
            if lr < 1e-3:  # for small steps it is the explicit gradient step on the penalty
                explicit = moved[n] - lr * 50.0 * a * (moved[n] - m)
                torch.testing.assert_close(p.detach(), explicit, rtol=0, atol=1e-9)
    assert any((ewc.quadratic.importance[n] > 0).any() for n in ewc.quadratic.importance)


def test_proximal_ewc_is_stable_where_the_gradient_penalty_diverges(tmp_path):
    from metalab.errors import NumericalError

    with pytest.raises(NumericalError, match="ewc penalty"):
        run_stream(EWC(ewc_lambda=1e5), tmp_path, stream=tiny_stream(epochs_per_task=2))
    _, finetune = run_stream(Finetune(), tmp_path, stream=tiny_stream(epochs_per_task=2))
    _, proximal = run_stream(EWC(ewc_lambda=1e5, update="proximal"), tmp_path, stream=tiny_stream(epochs_per_task=2))
    assert math.isfinite(proximal["test/task_il/acc"])
    assert proximal["test/task_il/forgetting"] < finetune["test/task_il/forgetting"]


def test_proximal_ewc_refuses_optimisers_it_is_not_exact_for():
    net = torch.nn.Linear(4, 6).double()
    fake = PlainLearner(net, None, [(torch.randn(10, 4, dtype=torch.float64), torch.randint(0, 6, (10,)))])
    ewc = EWC(ewc_lambda=1.0, update="proximal")
    ewc.after_task(fake, 0)
    fake.optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    with pytest.raises(ConfigError, match="plain SGD"):
        ewc.after_optimizer_step(fake)
    with pytest.raises(ConfigError, match="learner.method.update"):
        EWC(update="implicit")


@pytest.mark.parametrize("teacher_bn", ["running", "batch"])
def test_lwf_teacher_normalises_with_the_statistics_asked_for(teacher_bn):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 6))
    net.train()
    net(torch.randn(64, 4) * 3 + 1)  # running statistics that differ from the next batch's
    stored = net[1].running_mean.clone()
    lwf = LwF(teacher_bn=teacher_bn)
    teacher = lwf._teacher(net)
    x = torch.randn(16, 4)
    reference = copy.deepcopy(net)
    reference.train(teacher_bn == "batch")
    with torch.no_grad():
        assert torch.allclose(teacher(x), reference(x), atol=1e-6)
        other = reference.train(teacher_bn != "batch")(x)
        assert not torch.allclose(teacher(x), other, atol=1e-3)  # the two choices really differ
    assert torch.equal(teacher[1].running_mean, stored)  # the teacher's stored statistics stay as they were
    assert not any(p.requires_grad for p in teacher.parameters())


def test_lwf_refuses_an_unknown_teacher_mode():
    with pytest.raises(ConfigError, match="teacher_bn"):
        LwF(teacher_bn="eval")
