"""torchmetrics-based metrics that report a mean with its 95% confidence interval."""

from metalab.metrics.fewshot import MeanWithCI

__all__ = ["MeanWithCI"]
