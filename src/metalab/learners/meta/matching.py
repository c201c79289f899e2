"""Matching Networks (Vinyals, Blundell, Lillicrap, Kavukcuoglu & Wierstra, NeurIPS 2016).

A query is classified by attending over the labelled support set (sec. 2.1.1, eq. 1-2):
``P(y | x, S) = sum_i a(x, x_i) y_i`` with ``a`` the softmax over the cosine similarities of the query's
embedding ``f(x)`` and the support embeddings ``g(x_i)``, and ``y_i`` one-hot labels. Without full-context
embeddings (FCE) ``f = g =`` the backbone; with FCE (sec. 2.1.2 and appendix A) ``g`` is a bidirectional
LSTM over the support embeddings and ``f`` an LSTM with ``K`` steps of attention over ``g(S)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from metalab.errors import require
from metalab.learners.meta.episodic import Batch, EpisodicLearner, way_of


def cosine_attention_log_probs(
    queries: torch.Tensor, support: torch.Tensor, support_labels: torch.Tensor, way: int, scale: float = 1.0
) -> torch.Tensor:
    """``log P(y | x, S)`` of Vinyals et al. 2016, eq. 1-2: ``"task q d", "task n d", "task n" -> "task q way"``.

    ``a(x, x_i) = softmax_i cos(f(x), g(x_i))`` and ``P(y | x, S) = sum_i a(x, x_i) y_i``: the attention
    mass on the support images of each class. Its log is the classifier output; cross-entropy on it is the
    paper's training loss (a softmax of log-probabilities that sum to 1 gives them back unchanged).
    ``scale`` multiplies the cosines before the softmax (1: the paper; > 1 sharpens the attention, the
    "metric scaling" of Oreshkin et al. 2018, TADAM, sec. 2.2). The floor on the probabilities only guards
    the log against an attention weight that underflowed at a large scale.
    """
    cosines = F.normalize(queries, dim=-1) @ F.normalize(support, dim=-1).transpose(-1, -2)  # "task q n"
    attention = (scale * cosines).softmax(-1)
    one_hot = F.one_hot(support_labels, way).to(attention.dtype)  # "task n way"
    return torch.log((attention @ one_hot).clamp_min(torch.finfo(attention.dtype).tiny))


class AttentionLSTMCell(nn.Module):
    """One step of the query embedding's LSTM (appendix A.1): ``LSTM(f'(x), [h_{k-1}, r_{k-1}], c_{k-1})``.

    Its recurrent input is the previous output concatenated with the previous read-out, so it is twice the
    embedding's size while the cell and the output keep the embedding's size ``dim``: torch's LSTMCell
    ties those sizes together, hence this small cell (the standard gates, nothing else).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gates = nn.Linear(3 * dim, 4 * dim)

    def forward(
        self, x: torch.Tensor, recurrent: torch.Tensor, cell: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        i, f, g, o = self.gates(torch.cat([x, recurrent], -1)).chunk(4, -1)
        cell = torch.sigmoid(f) * cell + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(cell), cell


class FullContextEmbedding(nn.Module):
    """The full-context embeddings ``g(x_i, S)`` and ``f(x, S)`` of Vinyals et al. 2016, appendix A.

    - ``g`` (A.2): a bidirectional LSTM reads the support embeddings ``g'(x_i)`` in episode order;
      ``g(x_i, S) = h_fwd_i + h_bwd_i + g'(x_i)``.
    - ``f`` (A.1): ``steps`` (the paper's K) processing steps of an LSTM whose input is always ``f'(x)``:
      ``h_k, c_k = LSTM(f'(x), [h_{k-1}, r_{k-1}], c_{k-1})``, ``h_k += f'(x)``, with the read-out
      ``r_{k-1} = sum_i softmax_i(h_{k-1}^T g(x_i)) g(x_i)``; ``f(x, S) = h_K``. The paper leaves the initial
      state open: we start from an LSTM output and cell of zero, so ``h_0 = f'(x)`` and the first read
      attends by the query's own embedding.
    """

    def __init__(self, dim: int, steps: int) -> None:
        super().__init__()
        self.steps = steps
        self.support_lstm = nn.LSTM(dim, dim, batch_first=True, bidirectional=True)
        self.query_cell = AttentionLSTMCell(dim)

    def embed_support(self, support: torch.Tensor) -> torch.Tensor:
        """``"task n d" -> "task n d"``: g(x_i, S)."""
        forward, backward = self.support_lstm(support)[0].chunk(2, -1)
        return forward + backward + support

    def embed_queries(self, queries: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
        """``"task q d", g(S) "task n d" -> "task q d"``: f(x, S)."""
        h, cell = queries, torch.zeros_like(queries)
        for _ in range(self.steps):
            attention = (h @ support.transpose(-1, -2)).softmax(-1)  # "task q n"
            read = attention @ support
            out, cell = self.query_cell(queries, torch.cat([h, read], -1), cell)
            h = out + queries
        return h


class MatchingNetwork(EpisodicLearner):
    """Matching Networks on the shared episodic loop: the backbone embeds support and query images in one
    batch (as ProtoNet does, so batch norm sees both), optionally followed by full-context embeddings, and
    the query logits are the log attention-weighted label sums (:func:`cosine_attention_log_probs`).

    ``fce``: use full-context embeddings; ``fce_steps``: their K processing steps; ``scale``: the factor on
    the cosines (:func:`cosine_attention_log_probs`; 1 in the paper). The LSTMs need the
    backbone's embedding size, read from its ``embedding_dim`` (Conv4 has one) unless ``embedding_dim`` is given.
    """

    def __init__(
        self,
        backbone: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        channels_last: bool = True,
        fce: bool = False,
        fce_steps: int = 5,
        embedding_dim: int | None = None,
        scale: float = 1.0,
    ) -> None:
        super().__init__(backbone, optimizer, scheduler, channels_last)
        require(
            isinstance(scale, (int, float)) and not isinstance(scale, bool) and 0 < scale < float("inf"),
            "learner.scale",
            "a finite number > 0 (1: the paper's plain cosine)",
            scale,
        )
        self.scale = float(scale)
        require(isinstance(fce, bool), "learner.fce", "true or false", fce)
        require(
            isinstance(fce_steps, int) and not isinstance(fce_steps, bool) and fce_steps >= 1,
            "learner.fce_steps",
            "an integer >= 1 (the K processing steps of the query's attention LSTM)",
            fce_steps,
        )
        self.fce: FullContextEmbedding | None = None
        if fce:
            dim = embedding_dim if embedding_dim is not None else getattr(backbone, "embedding_dim", None)
            require(
                isinstance(dim, int) and dim >= 1,
                "learner.embedding_dim",
                "an integer >= 1 when the backbone has no embedding_dim",
                dim,
            )
            self.fce = FullContextEmbedding(dim, fce_steps)

    def query_logits(self, batch: Batch) -> torch.Tensor:
        support, query = batch["support"], batch["query"]  # "task n c h w"
        tasks, n_support = support.shape[:2]
        images = torch.cat([support.flatten(0, 1), query.flatten(0, 1)])
        # As in ProtoNet: under bf16 autocast only the backbone runs in bf16; cosines and LSTMs run fp32.
        z = self.backbone(self.prepare(images)).float()  # "(task n) d" for support then query
        with torch.autocast(z.device.type, enabled=False):
            z_support = rearrange(z[: tasks * n_support], "(t n) d -> t n d", t=tasks)
            z_query = rearrange(z[tasks * n_support :], "(t q) d -> t q d", t=tasks)
            if self.fce is not None:
                z_support = self.fce.embed_support(z_support)
                z_query = self.fce.embed_queries(z_query, z_support)
            return cosine_attention_log_probs(z_query, z_support, batch["support_labels"], way_of(batch), self.scale)
