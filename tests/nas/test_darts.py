"""First-order DARTS: the architecture gradient against finite differences (float64), and the learner's
architecture step against that gradient at the weights it started from, on the validation batch."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from metalab.data.cifar10 import PairDataset, PairedBatchSampler
from metalab.data.streams import identity_collate
from metalab.errors import ConfigError
from metalab.learners.nas import DartsLearner
from metalab.nas.darts import architecture_gradient, auxiliary_skip_beta, classification_loss
from metalab.nas.network import SuperNetwork


def tiny_batch(seed: int, n: int = 6, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 8, 8, generator=g, dtype=dtype), torch.randint(0, 10, (n,), generator=g)


@pytest.mark.parametrize("beta", [0.0, 0.5])
def test_architecture_gradient_matches_central_differences_in_float64(beta):
    torch.manual_seed(0)
    supernet = SuperNetwork(channels=2, init_scale=0.5).double()
    x, y = tiny_batch(1, dtype=torch.float64)
    gradient = architecture_gradient(supernet, x, y, skip_beta=beta)
    step, numeric = 1e-6, torch.zeros_like(gradient)
    with torch.no_grad():
        for index in [(e, k) for e in range(6) for k in range(5)]:
            original = supernet.arch_logits[index].item()
            supernet.arch_logits[index] = original + step
            up = classification_loss(supernet, x, y, beta)[0].item()
            supernet.arch_logits[index] = original - step
            down = classification_loss(supernet, x, y, beta)[0].item()
            supernet.arch_logits[index] = original
            numeric[index] = (up - down) / (2 * step)
    torch.testing.assert_close(gradient, numeric, rtol=1e-5, atol=1e-8)
    assert all(p.grad is None for p in supernet.weight_parameters())  # no weight gradient accumulated


def test_darts_minus_beta_decays_linearly_to_zero_and_the_switch_turns_it_off():
    assert [auxiliary_skip_beta("dartsminus", s, 4) for s in range(5)] == [1.0, 0.75, 0.5, 0.25, 0.0]
    assert auxiliary_skip_beta("none", 0, 4) == 0.0
    with pytest.raises(ConfigError, match="learner.guard='skip_limit' is not allowed"):
        auxiliary_skip_beta("skip_limit", 0, 4)


class OneBatch(L.LightningDataModule):
    def __init__(self, train, valid):
        super().__init__()
        self.pairs = PairDataset(train, valid)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(
            self.pairs, batch_sampler=PairedBatchSampler(len(self.pairs.train[1]), 6, 0, 0), collate_fn=identity_collate
        )


@pytest.mark.parametrize("guard", ["dartsminus", "none"])
def test_one_learner_step_moves_alpha_against_the_validation_gradient_at_the_starting_weights(guard, tmp_path):
    """Adam's first step is ``-lr * sign(g + wd * alpha)``: the learner's alpha update must match the
    gradient computed here on the *validation* batch, before the weight step (first order), with the
    guard's beta (1 at step 0 for DARTS-)."""
    torch.manual_seed(3)
    supernet = SuperNetwork(channels=2, init_scale=0.5)
    train, valid = tiny_batch(4), tiny_batch(5)
    learner = DartsLearner(supernet, guard=guard, arch_lr=1e-2, arch_weight_decay=0.0)
    start = supernet.arch_logits.detach().clone()
    reference = architecture_gradient(supernet, *valid, skip_beta=1.0 if guard == "dartsminus" else 0.0)
    start_weights = [p.detach().clone() for p in supernet.weight_parameters()]
    trainer = L.Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        precision="32-true",
        default_root_dir=tmp_path,
    )
    trainer.fit(learner, datamodule=OneBatch(train, valid))
    moved = supernet.arch_logits.detach() - start
    clear = reference.abs() > 1e-4  # Adam's eps blurs the sign of near-zero entries
    torch.testing.assert_close(moved[clear], -1e-2 * reference[clear].sign(), rtol=1e-3, atol=1e-6)
    assert any(not torch.equal(p, q) for p, q in zip(supernet.weight_parameters(), start_weights))
