"""Deciding a ratio without flakes: the exact binomial test and the sample size for it.

A check that asks "does about 10 % of the traffic go to v2?" counts K of N requests and
must decide. Fixed buckets ("between 5 % and 15 %") fail a correct configuration now
and then, and let some wrong ones through. Instead:

- `binomial_test(k, n, p)` is the exact two-sided test: the p-value is the probability,
  if the true share were P, of a count at most as likely as K (the "minimum likelihood"
  rule of R's binom.test and scipy's binomtest). We fail the check when it is below
  ALPHA = 1e-6, so a correct configuration fails once in a million runs at most.
- `sample_size(p, wrong)` is the smallest N (found by search) for which that test, at
  level ALPHA, also rejects each plausible WRONG share with probability at least
  1 - BETA (BETA = 1e-6 too): a 50/50, 100/0 or 80/20 split for a 90/10 target.
- `clopper_pearson(k, n)` is the exact confidence interval printed with the verdict.

Pure Python (log-gamma and sums; N is at most a few thousand here): scipy would add a
60 MB dependency for three functions we can test against known values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from meshlab.grading.failures import CheckFailed

ALPHA = 1e-6   # the chance that a correct configuration fails the check
BETA = 1e-6    # the chance that a configuration with one of the named wrong shares passes
_RELATIVE = 1 + 1e-7  # counts as likely as K, despite rounding (as R and scipy do)


def _log_pmf(k: int, n: int, p: float) -> float:
    if p <= 0.0:
        return 0.0 if k == 0 else -math.inf
    if p >= 1.0:
        return 0.0 if k == n else -math.inf
    return (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
            + k * math.log(p) + (n - k) * math.log1p(-p))


def pmf(k: int, n: int, p: float) -> float:
    """P(X = K) for X ~ Binomial(N, P)."""
    return math.exp(_log_pmf(k, n, p)) if 0 <= k <= n else 0.0


def _pmfs(n: int, p: float) -> list[float]:
    return [pmf(k, n, p) for k in range(n + 1)]


def cdf(k: int, n: int, p: float) -> float:
    """P(X <= K)."""
    return min(1.0, math.fsum(pmf(i, n, p) for i in range(0, min(k, n) + 1)))


def sf(k: int, n: int, p: float) -> float:
    """P(X >= K)."""
    return min(1.0, math.fsum(pmf(i, n, p) for i in range(max(k, 0), n + 1)))


def p_value(k: int, n: int, p: float) -> float:
    """Two-sided exact p-value of K successes in N trials if the true share is P."""
    probabilities = _pmfs(n, p)
    threshold = probabilities[k] * _RELATIVE
    return min(1.0, math.fsum(q for q in probabilities if q <= threshold))


def acceptance_region(n: int, p: float, alpha: float = ALPHA) -> tuple[int, int]:
    """The counts (LOW, HIGH) the test at level ALPHA accepts for share P: every K in
    between has p_value(K, N, P) >= ALPHA (an interval: the binomial is unimodal)."""
    probabilities = _pmfs(n, p)
    order = sorted(range(n + 1), key=probabilities.__getitem__)
    ascending = [probabilities[k] for k in order]
    # The p-value of a count is the mass of all counts at most as likely as it: a
    # prefix of ASCENDING, which grows as we walk up.
    accepted, mass, end = [], 0.0, 0
    for index, k in enumerate(order):
        while end <= n and ascending[end] <= ascending[index] * _RELATIVE:
            mass += ascending[end]
            end += 1
        if mass >= alpha:
            accepted = order[index:]
            break
    return min(accepted), max(accepted)


def clopper_pearson(k: int, n: int, confidence: float = 1 - ALPHA) -> tuple[float, float]:
    """The exact (Clopper-Pearson) interval for the share, from K successes in N."""
    tail = (1 - confidence) / 2
    low = 0.0 if k == 0 else _bisect(lambda q: sf(k, n, q) - tail)          # grows with q
    high = 1.0 if k == n else _bisect(lambda q: tail - cdf(k, n, q))         # cdf falls with q
    return low, high


def _bisect(increasing, low: float = 0.0, high: float = 1.0, steps: int = 60) -> float:
    for _ in range(steps):
        middle = (low + high) / 2
        if increasing(middle) < 0:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def power_against(n: int, p: float, wrong: float, alpha: float = ALPHA) -> float:
    """The chance that the test of share P with N trials rejects when the true share is WRONG."""
    low, high = acceptance_region(n, p, alpha)
    accepted = math.fsum(pmf(k, n, wrong) for k in range(low, high + 1))
    return max(0.0, 1.0 - accepted)


@lru_cache(maxsize=64)
def sample_size(p: float, wrong: tuple[float, ...], alpha: float = ALPHA, beta: float = BETA,
                limit: int = 20000) -> int:
    """The smallest N (by doubling, then bisection) at which the test of share P at level
    ALPHA rejects every share in WRONG with probability at least 1 - BETA."""
    def enough(n: int) -> bool:
        return all(power_against(n, p, q, alpha) >= 1 - beta for q in wrong)

    high = 8
    while not enough(high):
        high *= 2
        if high > limit:
            raise ValueError(f"no sample of at most {limit} separates {p} from {wrong}")
    low = high // 2
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if enough(middle) else (middle, high)
    # Power is not quite monotone in N (the counts are whole numbers): make sure.
    while not enough(high):
        high += 1
    return high


@dataclass(frozen=True)
class ShareVerdict:
    """The outcome of testing K of N against the expected share P."""

    k: int
    n: int
    p: float
    p_value: float
    interval: tuple[float, float]
    alpha: float = ALPHA

    @property
    def passed(self) -> bool:
        return self.p_value >= self.alpha

    @property
    def observed(self) -> float:
        return self.k / self.n if self.n else 0.0

    def describe(self) -> str:
        low, high = self.interval
        return (f"{self.k} of {self.n} = {_pct(self.observed)} (exact {_pct(1 - self.alpha, 4)} interval "
                f"{_pct(low)}-{_pct(high)}; p-value {self.p_value:.2g} against {_pct(self.p)})")


def binomial_test(k: int, n: int, p: float, alpha: float = ALPHA) -> ShareVerdict:
    if not 0 <= k <= n or n == 0:
        raise ValueError(f"need 0 <= k <= n and n > 0, got k={k}, n={n}")
    return ShareVerdict(k, n, p, p_value(k, n, p), clopper_pearson(k, n, 1 - alpha), alpha)


def expect_share(k: int, n: int, p: float, *, what: str, noun: str = "requests", hint: str | None = None,
                 alpha: float = ALPHA) -> ShareVerdict:
    """Fail the check unless K of N NOUN that WHAT (like "went to v2") is consistent
    with the share P; the message gives observed, expected and the exact interval."""
    verdict = binomial_test(k, n, p, alpha)
    if not verdict.passed:
        low, high = acceptance_region(n, p, alpha)
        raise CheckFailed(
            f"{k} of {n} {noun} {what}: {_pct(verdict.observed)}, not about {_pct(p)}",
            expected=f"about {_pct(p)}: between {low} and {high} of {n} {noun} {what} (exact binomial test; "
                     f"a correct setup falls outside once in {1 / alpha:,.0f} runs)",
            received=verdict.describe(), hint=hint)
    return verdict


def _pct(share: float, digits: int = 1) -> str:
    text = f"{100 * share:.{digits}f}".rstrip("0").rstrip(".")
    return f"{text} %"
