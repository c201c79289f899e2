"""Matching Networks: the attention read-out against a hand computation, full-context embeddings, a
training step, bad config values, and one tiny whole run."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import TINY_PROTONET, compose_run, needs_omniglot  # noqa: E402

from metalab.errors import ConfigError  # noqa: E402
from metalab.learners.meta.matching import (  # noqa: E402
    FullContextEmbedding,
    MatchingNetwork,
    cosine_attention_log_probs,
)
from metalab.models.conv4 import Conv4  # noqa: E402
from metalab.run import train  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def test_readout_matches_a_hand_computation():
    """One query q = (3, 4) against support (1, 0) of class 0 and (0, 2), (1, 1) of class 1 (2-way, class 1
    with two shots), worked by hand:

    - cosines: q/|q| = (0.6, 0.8), so cos = 0.6, 0.8 and (0.6 + 0.8)/sqrt(2) = 0.98994949;
    - softmax: exp = 1.82211880, 2.22554093, 2.69109855, sum 6.73875828, attention = 0.27039385, 0.33025980,
      0.39934635;
    - attention-weighted one-hot labels: P(0) = 0.27039385, P(1) = 0.33025980 + 0.39934635 = 0.72960615;
    - logs: -1.30787568, -0.31525041.

    Mutation tried: dropping the normalisation (dot products 3, 8, 7 instead of cosines) gives
    (-5.31817543, -0.00491374) and fails this test; so does summing over the wrong axis of the softmax.
    """
    query = torch.tensor([[[3.0, 4.0]]], dtype=torch.float64)
    support = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]], dtype=torch.float64)
    labels = torch.tensor([[0, 1, 1]])
    log_probs = cosine_attention_log_probs(query, support, labels, way=2)
    assert log_probs.shape == (1, 1, 2)
    expected = torch.tensor([[[-1.30787568, -0.31525041]]], dtype=torch.float64)
    assert torch.allclose(log_probs, expected, atol=1e-7)
    assert math.isclose(log_probs.exp().sum().item(), 1.0, abs_tol=1e-12)


def test_scale_sharpens_the_attention_as_computed_by_hand():
    """The same example with ``scale=2``: exp(2 cos) = 3.32011692, 4.95303242, 7.24201141, sum 15.51516076,
    attention = 0.21399178, 0.31923823, 0.46676999, so log P = log 0.21399178, log(0.31923823 + 0.46676999)."""
    query = torch.tensor([[[3.0, 4.0]]], dtype=torch.float64)
    support = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]], dtype=torch.float64)
    log_probs = cosine_attention_log_probs(query, support, torch.tensor([[0, 1, 1]]), way=2, scale=2.0)
    assert torch.allclose(log_probs, torch.tensor([[[-1.54181766, -0.24078803]]], dtype=torch.float64), atol=1e-7)
    far = cosine_attention_log_probs(query, support, torch.tensor([[0, 1, 1]]), way=2, scale=1e4)
    assert torch.isfinite(far).all()  # an underflowed attention weight gives a finite (floored) log


def test_learned_scale_starts_at_scale_and_is_trained():
    """``learn_scale=true`` gives the read-out of the fixed ``scale`` at the start (its log is the parameter),
    and a training step moves it: the loss has a gradient with respect to the scale."""
    torch.manual_seed(0)
    backbone = Conv4(hidden=8)
    fixed = MatchingNetwork(backbone, optimizer=torch.optim.Adam, scale=10.0)
    learned = MatchingNetwork(backbone, optimizer=torch.optim.Adam, scale=10.0, learn_scale=True)
    batch = _episode()
    assert torch.allclose(learned.query_logits(batch), fixed.query_logits(batch), atol=1e-5)
    assert "log_scale" in dict(learned.named_parameters()) and "log_scale" not in dict(fixed.named_parameters())
    learned.training_loss(batch)[0].backward()
    assert learned.log_scale.grad is not None and learned.log_scale.grad.abs() > 0
    assert learned.scale.detach().item() == pytest.approx(10.0)


@pytest.mark.parametrize("value", [1, "yes", None])
def test_bad_learn_scale_names_the_key(value):
    with pytest.raises(ConfigError, match=r"learner.learn_scale=.* must be true or false"):
        MatchingNetwork(Conv4(hidden=8), optimizer=torch.optim.Adam, learn_scale=value)


@pytest.mark.parametrize("scale", [0, -1.0, float("inf"), "big"])
def test_bad_scale_names_the_key(scale):
    with pytest.raises(ConfigError, match=r"learner.scale=.* must be a finite number > 0"):
        MatchingNetwork(Conv4(hidden=8), optimizer=torch.optim.Adam, scale=scale)


def _episode(tasks: int = 2, way: int = 3, shot: int = 2, query: int = 2, side: int = 28) -> dict:
    support_labels = torch.arange(way).repeat_interleave(shot).expand(tasks, -1)
    query_labels = torch.arange(way).repeat_interleave(query).expand(tasks, -1)
    return {
        "support": torch.rand(tasks, way * shot, 1, side, side),
        "support_labels": support_labels,
        "query": torch.rand(tasks, way * query, 1, side, side),
        "query_labels": query_labels,
    }


def test_identity_backbone_gives_the_readout_of_the_flattened_images():
    learner = MatchingNetwork(torch.nn.Flatten(), optimizer=torch.optim.Adam, channels_last=False)
    batch = _episode(side=3)
    expected = cosine_attention_log_probs(
        batch["query"].flatten(2), batch["support"].flatten(2), batch["support_labels"], way=3
    )
    assert torch.allclose(learner.query_logits(batch), expected, atol=1e-6)


def test_fce_shapes_and_context_dependence():
    """g(x_i, S) and f(x, S) keep the embedding's shape, and g of one support image changes when another
    support image changes (the whole set is its context, unlike the plain embedding)."""
    torch.manual_seed(0)
    fce = FullContextEmbedding(dim=8, steps=3)
    support, queries = torch.randn(2, 6, 8), torch.randn(2, 10, 8)
    g = fce.embed_support(support)
    f = fce.embed_queries(queries, g)
    assert g.shape == (2, 6, 8) and f.shape == (2, 10, 8)
    changed = support.clone()
    changed[:, 5] += 1.0
    assert not torch.allclose(fce.embed_support(changed)[:, 0], g[:, 0])
    assert not torch.allclose(fce.embed_queries(queries, fce.embed_support(changed)), f)


def _lstm_step(x, h, c, w_ih, w_hh, b):
    """One LSTM step written out from its equations (gates in the order input, forget, cell, output)."""
    z = w_ih @ x + w_hh @ h + b
    i, f, g, o = (z[k * len(c) : (k + 1) * len(c)] for k in range(4))  # the cell's size, not the recurrent input's
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def fce_reference(fce, support, queries):
    """Vinyals et al. 2016, appendix A, one vector at a time for a single task: A.2's
    ``g(x_i, S) = h_fwd_i + h_bwd_i + g'(x_i)`` with the two directions run as explicit loops over the
    support order, then A.1's K steps ``h^_k, c_k = LSTM(f'(x), [h_{k-1}, r_{k-1}], c_{k-1})``,
    ``h_k = h^_k + f'(x)``, ``r_{k-1} = sum_i softmax_i(h_{k-1} . g(x_i)) g(x_i)``, from ``h_0 = f'(x)``,
    ``c_0 = 0``."""
    lstm, d = fce.support_lstm, support.shape[-1]
    zeros = torch.zeros(d)

    def run(order, suffix):
        w_ih, w_hh = getattr(lstm, "weight_ih_l0" + suffix), getattr(lstm, "weight_hh_l0" + suffix)
        b = getattr(lstm, "bias_ih_l0" + suffix) + getattr(lstm, "bias_hh_l0" + suffix)
        h, c, out = zeros, zeros, {}
        for i in order:
            h, c = _lstm_step(support[i], h, c, w_ih, w_hh, b)
            out[i] = h
        return out

    n = len(support)
    fwd, bwd = run(range(n), ""), run(reversed(range(n)), "_reverse")
    g = torch.stack([fwd[i] + bwd[i] + support[i] for i in range(n)])
    w, b = fce.query_cell.gates.weight, fce.query_cell.gates.bias
    embedded = []
    for x in queries:
        h, c = x, zeros
        for _ in range(fce.steps):
            weights = torch.softmax(torch.stack([h @ g_i for g_i in g]), 0)
            read = sum(a * g_i for a, g_i in zip(weights, g, strict=True))
            out, c = _lstm_step(x, torch.cat([h, read]), c, w[:, :d], w[:, d:], b)
            h = out + x
        embedded.append(h)
    return g, torch.stack(embedded)


def test_fce_matches_the_papers_equations_computed_one_vector_at_a_time():
    torch.manual_seed(1)
    fce = FullContextEmbedding(dim=5, steps=3)
    support, queries = torch.randn(2, 4, 5), torch.randn(2, 3, 5)
    with torch.no_grad():
        g = fce.embed_support(support)
        f = fce.embed_queries(queries, g)
        for task in range(2):
            g_ref, f_ref = fce_reference(fce, support[task], queries[task])
            assert torch.allclose(g[task], g_ref, atol=1e-5)
            assert torch.allclose(f[task], f_ref, atol=1e-5)


def test_fce_changes_the_output_of_the_same_backbone():
    torch.manual_seed(0)
    backbone = Conv4(hidden=8)
    plain = MatchingNetwork(backbone, optimizer=torch.optim.Adam, fce=False)
    full = MatchingNetwork(backbone, optimizer=torch.optim.Adam, fce=True, fce_steps=2)
    batch = _episode()
    a, b = plain.query_logits(batch), full.query_logits(batch)
    assert a.shape == b.shape == (2, 6, 3)
    assert torch.allclose(b.exp().sum(-1), torch.ones(2, 6), atol=1e-5)
    assert (a - b).abs().max() > 1e-3
    assert any(name.startswith("fce.") for name, _ in full.named_parameters())


@pytest.mark.parametrize("fce", [False, True])
def test_training_steps_decrease_the_loss_on_a_tiny_episode(fce):
    torch.manual_seed(0)
    learner = MatchingNetwork(Conv4(hidden=8), optimizer=torch.optim.Adam, fce=fce, fce_steps=2)
    batch = _episode(tasks=1, way=3, shot=1, query=2)
    optimizer = torch.optim.Adam(learner.parameters(), lr=1e-2)
    first = None
    for _ in range(10):
        loss, _ = learner.training_loss(batch)
        first = loss.item() if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert learner.training_loss(batch)[0].item() < first - 0.05


@pytest.mark.parametrize("steps", [0, -1, 1.5, True])
def test_bad_fce_steps_names_the_key(steps):
    with pytest.raises(ConfigError, match=r"learner.fce_steps=.* must be an integer >= 1"):
        MatchingNetwork(Conv4(hidden=8), optimizer=torch.optim.Adam, fce=True, fce_steps=steps)


def test_fce_on_a_backbone_without_embedding_dim_asks_for_the_key():
    with pytest.raises(ConfigError, match=r"learner.embedding_dim=None is not allowed"):
        MatchingNetwork(torch.nn.Flatten(), optimizer=torch.optim.Adam, fce=True)
    assert MatchingNetwork(torch.nn.Flatten(), optimizer=torch.optim.Adam, fce=True, embedding_dim=4).fce is not None


def test_bad_fce_steps_on_the_command_line_is_one_error_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "train.py", "learner=matching", "learner.fce_steps=0", f"hydra.run.dir={tmp_path}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2, result.stderr[-2000:]
    assert errors == [
        "error: learner.fce_steps=0 is not allowed: learner.fce_steps must be an integer >= 1 "
        "(the K processing steps of the query's attention LSTM)"
    ], result.stderr[-2000:]


@needs_omniglot
@pytest.mark.parametrize("fce", ["false", "true"])
def test_tiny_run_writes_its_metrics(tmp_path, fce):
    train(compose_run(tmp_path, TINY_PROTONET + ["learner=matching", f"learner.fce={fce}", "learner.fce_steps=2"]))
    metrics = json.loads((tmp_path / "metrics.json").read_text())["metrics"]
    assert metrics["test/5w1s/episodes"] == 6 and 0.0 <= metrics["test/5w1s/acc"] <= 100.0


@needs_omniglot
@pytest.mark.parametrize("shape", ["5w1s", "5w5s", "20w1s", "20w5s"])
def test_experiment_builds_its_optimizer_and_budget_schedule(shape, tmp_path):
    """The experiment's learner, optimiser and learning-rate schedule are built as the run builds them
    (the schedule only at fit time: a stray key from the learner's defaults would fail only there)."""
    from hydra import compose, initialize_config_dir

    from metalab.budget import AnnealToHorizon
    from metalab.run import build_run

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=[
                f"+experiment=omniglot/matching_{shape}",
                f"paths.output_dir={tmp_path}",
                f"paths.log_dir={tmp_path}",
            ],
        )
    learner = build_run(cfg).learner
    assert isinstance(learner, MatchingNetwork) and learner.fce is None
    assert isinstance(learner.configure_optimizers()["lr_scheduler"]["scheduler"], AnnealToHorizon)
    assert cfg.targets[shape].paper - cfg.targets[shape].goal == pytest.approx(1.0)
