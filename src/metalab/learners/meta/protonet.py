"""Prototypical Networks (Snell, Swersky & Zemel, NeurIPS 2017)."""

from __future__ import annotations

import torch
from einops import rearrange, reduce

from metalab.learners.meta.episodic import Batch, EpisodicLearner, way_of


def squared_euclidean(queries: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """``"task q d", "task way d" -> "task q way"``: ||q||^2 - 2 q.p + ||p||^2 (one batched matmul)."""
    q2 = queries.pow(2).sum(-1, keepdim=True)
    p2 = prototypes.pow(2).sum(-1).unsqueeze(-2)
    return q2 - 2 * queries @ prototypes.transpose(-1, -2) + p2


class ProtoNet(EpisodicLearner):
    """Classify each query by the nearest class mean of the support embeddings.

    Support and query images of all tasks go through the backbone in one batch (as in the reference
    implementation, so batch norm sees both); logits are negative squared Euclidean distances, which
    Snell et al. found clearly better than cosine.
    """

    def query_logits(self, batch: Batch) -> torch.Tensor:
        support, query = batch["support"], batch["query"]  # "task n c h w"
        tasks, n_support = support.shape[:2]
        images = torch.cat([support.flatten(0, 1), query.flatten(0, 1)])
        # Distances are differences of large squared norms: under bf16 autocast they would lose
        # most of their digits, so the embeddings leave the backbone as fp32 and the rest runs fp32.
        z = self.backbone(self.prepare(images)).float()  # "(task n) d" for support then query
        with torch.autocast(z.device.type, enabled=False):
            return self._logits_from_embeddings(z, tasks, n_support, way_of(batch))

    @staticmethod
    def _logits_from_embeddings(z: torch.Tensor, tasks: int, n_support: int, way: int) -> torch.Tensor:
        z_support = rearrange(z[: tasks * n_support], "(t w s) d -> t w s d", t=tasks, w=way)
        prototypes = reduce(z_support, "t w s d -> t w d", "mean")
        z_query = rearrange(z[tasks * n_support :], "(t q) d -> t q d", t=tasks)
        return -squared_euclidean(z_query, prototypes)
