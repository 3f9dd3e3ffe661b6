"""5-sigma checks that samples are i.i.d. N(mean, std²)."""

import numpy as np


def assert_normal(samples, std, mean=0.0):
    x = np.asarray(samples, np.float64).ravel()
    n = x.size
    assert abs(x.mean() - mean) <= 5 * std / np.sqrt(n), (x.mean(), mean)
    # the sample variance of n normals has standard error std² · sqrt(2 / (n - 1))
    assert abs(x.var(ddof=1) - std**2) <= 5 * std**2 * np.sqrt(2 / (n - 1)), (x.std(ddof=1), std)
