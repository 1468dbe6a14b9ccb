"""The statistics of an evaluation, pure and doctested: intervals for an accuracy, the mean over several
samples per item, and the paired test of two systems on the same items."""

from __future__ import annotations

import math


def wilson(successes: float, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """95% Wilson score interval for a binomial proportion (successes may be a mean times n): statsmodels'
    `proportion_confint(method="wilson")`.

    >>> [round(x, 3) for x in wilson(8, 10)]
    [0.49, 0.943]
    """
    if n == 0:
        return (0.0, 1.0)
    from statsmodels.stats.proportion import proportion_confint

    low, high = proportion_confint(successes, n, alpha=alpha, method="wilson")
    return (max(0.0, float(low)), min(1.0, float(high)))


def proportion(successes: int, n: int) -> dict:
    low, high = wilson(successes, n)
    return {"value": successes / n if n else None, "n": n, "ci95": [round(low, 4), round(high, 4)]}


def mean_over_samples(per_item: list[list[bool]]) -> dict:
    """Accuracy when each item has k sampled completions: the mean of the per-item means. Its 95%
    interval is Wilson's over the items (the independent draws; an item's k samples are not), which is
    conservative: a per-item mean in [0, 1] varies at most as a single yes/no would, and the interval
    never collapses to a point when every item scores the same.

    >>> mean_over_samples([[True, True], [True, False], [False, False], [True, True]])
    {'value': 0.625, 'n': 4, 'samples': 2, 'ci95': [0.2194, 0.9081]}
    """
    k = max((len(x) for x in per_item), default=1)
    means = [sum(x) / len(x) for x in per_item if x]
    value = sum(means) / len(means) if means else None
    low, high = wilson(sum(means), len(means))
    return {"value": value, "n": len(means), "samples": k, "ci95": [round(low, 4), round(high, 4)]}


def paired_test(a: list[list[bool]], b: list[list[bool]], seed: int = 0, scores: bool = False) -> dict:
    """Is system b better or worse than system a on the same items? One right-or-wrong completion per item:
    McNemar's exact test on the discordant items. Several, or `scores` (a rubric's, not right-or-wrong): a paired
    permutation test (signs of the per-item
    differences flipped) and a paired-bootstrap 95% interval of the difference of the per-item means.

    >>> r = paired_test([[False]] * 20, [[True]] * 12 + [[False]] * 8)
    >>> (r["test"], r["difference"], r["p_value"] < 0.001)
    ('McNemar exact', 0.6, True)
    >>> paired_test([[0.5]] * 10, [[0.75]] * 10, scores=True)["test"]
    'paired permutation (bootstrap CI)'
    """
    import numpy as np

    x = np.array([sum(v) / len(v) for v in a], dtype=float)
    y = np.array([sum(v) / len(v) for v in b], dtype=float)
    diff = float(y.mean() - x.mean()) if len(x) else 0.0
    if not scores and all(len(v) == 1 for v in a + b):
        from statsmodels.stats.contingency_tables import mcnemar

        table = [[int(((x == 1) & (y == 1)).sum()), int(((x == 1) & (y == 0)).sum())],
                 [int(((x == 0) & (y == 1)).sum()), int(((x == 0) & (y == 0)).sum())]]
        p = 1.0 if table[0][1] + table[1][0] == 0 else float(mcnemar(table, exact=True).pvalue)
        return {"test": "McNemar exact", "difference": round(diff, 4), "p_value": round(p, 4), "n": len(x),
                "discordant": [table[0][1], table[1][0]]}
    from scipy import stats

    def mean_diff(u, v, axis=-1):
        return np.mean(v - u, axis=axis)

    if np.all(x == y):
        p, ci = 1.0, (0.0, 0.0)
    else:
        p = float(stats.permutation_test((x, y), mean_diff, permutation_type="samples", n_resamples=9999,
                                         random_state=seed).pvalue)
        boot = stats.bootstrap((x, y), mean_diff, paired=True, n_resamples=9999, random_state=seed, method="percentile")
        ci = (float(boot.confidence_interval.low), float(boot.confidence_interval.high))
    return {"test": "paired permutation (bootstrap CI)", "difference": round(diff, 4), "p_value": round(p, 4),
            "n": len(x), "ci95": [round(ci[0], 4), round(ci[1], 4)]}


def stderr(per_item: dict) -> float:
    """lm-evaluation-harness's standard error of a mean (sample standard deviation over sqrt(n)),
    from a proportion's value and n."""
    n, v = per_item["n"], per_item["value"] or 0.0
    return math.sqrt(v * (1 - v) * n / (n - 1) / n) if n > 1 else 0.0


def clipped_mean(values: list[float], seed: int = 0) -> dict:
    """HealthBench's figure for a set of per-item rubric scores (simple-evals' `_compute_clipped_stats`): the mean
    clipped to [0, 1], with a 95% percentile-bootstrap interval and the bootstrap's standard deviation (1,000
    resamples of the items, each resample's mean clipped too). One item, or items that all score the same, leave
    nothing to resample: the interval is then the whole range for one item and the value itself otherwise.

    >>> r = clipped_mean([1.0, 0.5, 0.25, -0.5, 0.75, 1.0])
    >>> r["value"], r["n"], r["ci95"][0] < r["value"] < r["ci95"][1]
    (0.5, 6, True)
    >>> clipped_mean([-0.5, -0.25])["value"], clipped_mean([0.5])["ci95"]
    (0.0, [0.0, 1.0])
    """
    import numpy as np

    x = np.asarray(values, dtype=float)
    if not len(x):
        return {"value": None, "n": 0, "ci95": [0.0, 1.0], "std": None}
    value = float(np.clip(x.mean(), 0, 1))
    if len(x) == 1 or np.all(x == x[0]):
        ci, std = ([0.0, 1.0] if len(x) == 1 else [value, value]), 0.0
    else:
        from scipy import stats

        def statistic(v, axis=-1):
            return np.clip(np.mean(v, axis=axis), 0, 1)

        boot = stats.bootstrap((x,), statistic, n_resamples=1000, method="percentile", random_state=seed)
        ci = [float(boot.confidence_interval.low), float(boot.confidence_interval.high)]
        std = float(boot.standard_error)
    return {"value": round(value, 4), "n": len(x), "ci95": [round(ci[0], 4), round(ci[1], 4)], "std": round(std, 4)}


def macro_f1(predicted: list[bool], labels: list[list[bool]]) -> dict:
    """A grader's agreement with labelled criteria, HealthBench's meta-evaluation way (`pairwise_model_f1_balanced`):
    each of its verdicts against each label of the same row (a physician's), pooled; the F1 of "met" and the F1 of
    "not met" (2·TP / (2·TP + FP + FN) of each class), and their mean (macro-F1). `n`: the pairs compared. Counted
    here rather than by scikit-learn's `f1_score`, which gives the same figures, so that the CPU end's vLLM
    environment need not carry scikit-learn for four sums; the example is simple-evals' own test case.

    >>> r = macro_f1([True, False, True], [[True, True, False], [True, False], [False]])
    >>> round(r["f1_met"], 4), round(r["f1_not_met"], 4), round(r["macro_f1"], 4), r["n"]
    (0.5714, 0.4, 0.4857, 6)
    """
    pairs = [(bool(p), bool(label)) for p, ls in zip(predicted, labels, strict=True) for label in ls]
    if not pairs:
        return {"macro_f1": None, "f1_met": None, "f1_not_met": None, "n": 0}

    def f1(cls: bool) -> float:
        tp = sum(p == cls and t == cls for p, t in pairs)
        wrong = sum(p != t for p, t in pairs if cls in (p, t))  # FP + FN of this class
        return 2 * tp / (2 * tp + wrong) if tp or wrong else 0.0

    met, not_met = f1(True), f1(False)
    return {"macro_f1": round((met + not_met) / 2, 4), "f1_met": round(met, 4), "f1_not_met": round(not_met, 4),
            "n": len(pairs)}
