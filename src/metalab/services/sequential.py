"""Sequential test of a difference in means that stays valid when looked at after every outcome.

The mixture sequential probability ratio test (mSPRT) of Johari, Koomen, Pekelis and Walsh,
"Peeking at A/B tests" (KDD 2017) and "Always valid inference" (Operations Research 70(3), 2022):
with the effect ``theta`` mixed over a normal prior N(0, tau^2) and the difference of sample means
``d`` having (plug-in) variance ``v``, the likelihood ratio of H1 to H0 (theta = 0) is

    Lambda = sqrt(v / (v + tau^2)) * exp(tau^2 d^2 / (2 v (v + tau^2))),

a nonnegative martingale under H0, so by Ville's inequality P(sup_n Lambda_n >= 1/alpha) <= alpha and
``p_n = min(1, min_{m<=n} 1/Lambda_m)`` is an always-valid p-value. Inverting the same ratio gives the
normal-mixture confidence sequence of Robbins (1970), as written in Howard, Ramdas, McAuliffe and Sekhon,
"Time-uniform, nonparametric, nonasymptotic confidence sequences" (Ann. Statist. 49(2), 2021, eq. 14):

    |d - theta| <= sqrt((v (v + tau^2) / tau^2) * (2 log(1/alpha) + log((v + tau^2) / v))).

With a plug-in variance the guarantee is asymptotic (Johari et al. 2022, section 4); the experiment
engine waits for ``min_samples_per_variant`` outcomes per arm before it acts, and
``experiments/services/sequential_ab.py`` measures the false-positive rate this gives. Every function
takes numpy arrays of any shape so simulations evaluate thousands of looks at once with this same code.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

# A variance floor so that an arm whose first outcomes are all equal does not give v = 0.
VARIANCE_FLOOR = 1e-12


def plugin_variance(count: ArrayLike, total: ArrayLike, total_squares: ArrayLike, binary: bool) -> NDArray:
    """Per-arm outcome variance from running sums; binary arms use p(1-p) with p shrunk by half a success."""
    count = np.asarray(count, dtype=float)
    total = np.asarray(total, dtype=float)
    if binary:
        p = (total + 0.5) / (count + 1.0)
        return p * (1.0 - p)
    total_squares = np.asarray(total_squares, dtype=float)
    safe = np.maximum(count, 2.0)
    variance = (total_squares - total * total / np.maximum(count, 1.0)) / (safe - 1.0)
    return np.maximum(variance, VARIANCE_FLOOR)


def difference_variance(count_a: ArrayLike, var_a: ArrayLike, count_b: ArrayLike, var_b: ArrayLike) -> NDArray:
    """Variance of mean_b - mean_a for independent arms."""
    return np.asarray(var_a) / np.maximum(count_a, 1) + np.asarray(var_b) / np.maximum(count_b, 1)


def mixture_tau2(var_a: ArrayLike, var_b: ArrayLike, mixture_scale: float) -> NDArray:
    """tau^2 of the mixing prior: ``mixture_scale`` standard deviations of a pooled outcome, squared."""
    pooled = 0.5 * (np.asarray(var_a) + np.asarray(var_b))
    return (mixture_scale**2) * pooled


def log_likelihood_ratio(difference: ArrayLike, variance: ArrayLike, tau2: ArrayLike) -> NDArray:
    """log Lambda of the normal-mixture SPRT (Johari et al. 2017, eq. 8 with a two-sample variance)."""
    d = np.asarray(difference, dtype=float)
    v = np.maximum(np.asarray(variance, dtype=float), VARIANCE_FLOOR)
    t = np.asarray(tau2, dtype=float)
    return 0.5 * np.log(v / (v + t)) + t * d * d / (2.0 * v * (v + t))


def p_value_at_look(difference: ArrayLike, variance: ArrayLike, tau2: ArrayLike) -> NDArray:
    """1/Lambda at this look (capped at 1); the always-valid p-value is its running minimum."""
    return np.minimum(1.0, np.exp(-log_likelihood_ratio(difference, variance, tau2)))


def confidence_sequence_radius(variance: ArrayLike, tau2: ArrayLike, alpha: float) -> NDArray:
    """Half-width of the (1 - alpha) normal-mixture confidence sequence for the difference."""
    v = np.maximum(np.asarray(variance, dtype=float), VARIANCE_FLOOR)
    t = np.asarray(tau2, dtype=float)
    return np.sqrt(v * (v + t) / t * (2.0 * np.log(1.0 / alpha) + np.log((v + t) / v)))
