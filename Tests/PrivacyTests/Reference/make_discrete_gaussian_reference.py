#!/usr/bin/env python3
"""Writes discrete_gaussian_reference.json: the law of the discrete Gaussian N_Z(0, sigma^2) that
DiscreteGaussianTests compare their own closed-form sums with.

P[X = x] = exp(-x^2 / (2 sigma^2)) / Z,  Z = sum over all integers z of exp(-z^2 / (2 sigma^2))
(Canonne, Kamath, Steinke 2020, "The Discrete Gaussian for Differential Privacy", Definition 1).

Computed with mpmath at 50 significant digits, two independent ways that must agree:
  - direct summation over |x| <= 60 sigma + 10 (the mass beyond is below e^-1800), and
  - Poisson summation (the Jacobi theta transformation):
      sum_x exp(-x^2/(2s^2))       = s sqrt(2 pi) sum_k exp(-2 pi^2 s^2 k^2)
      sum_x x^2 exp(-x^2/(2s^2))   = s^3 sqrt(2 pi) sum_k (1 - 4 pi^2 s^2 k^2) exp(-2 pi^2 s^2 k^2)
    which also gives the variance at sigma = 1e5, where direct summation is too long.
Nothing here uses Conclave's code. Run: python3 make_discrete_gaussian_reference.py (mpmath only).
"""
import json
import os

import mpmath

mpmath.mp.dps = 50


def poisson_moments(s):
    """(Z, sum x^2 w) by Poisson summation."""
    s = mpmath.mpf(s)
    root = s * mpmath.sqrt(2 * mpmath.pi)
    z = root * mpmath.nsum(lambda k: mpmath.exp(-2 * mpmath.pi ** 2 * s ** 2 * k ** 2), [-mpmath.inf, mpmath.inf])
    m2 = s ** 2 * root * mpmath.nsum(
        lambda k: (1 - 4 * mpmath.pi ** 2 * s ** 2 * k ** 2) * mpmath.exp(-2 * mpmath.pi ** 2 * s ** 2 * k ** 2),
        [-mpmath.inf, mpmath.inf])
    return z, m2


def direct_law(s):
    """pmf over 0..radius (symmetric), Z, second and fourth moments, by direct summation."""
    s = mpmath.mpf(s)
    radius = int(60 * s) + 10
    weights = [mpmath.exp(-mpmath.mpf(x) ** 2 / (2 * s ** 2)) for x in range(radius + 1)]
    z = weights[0] + 2 * mpmath.fsum(weights[1:])
    m2 = 2 * mpmath.fsum(mpmath.mpf(x) ** 2 * w for x, w in enumerate(weights))
    m4 = 2 * mpmath.fsum(mpmath.mpf(x) ** 4 * w for x, w in enumerate(weights))
    return [w / z for w in weights], z, m2 / z, m4 / z


def record(sigma, tails):
    z_poisson, m2_poisson = poisson_moments(sigma)
    entry = {"sigma": sigma, "variance": float(m2_poisson / z_poisson)}
    if sigma < 1000:
        pmf, z, variance, fourth = direct_law(sigma)
        assert abs(z / z_poisson - 1) < mpmath.mpf(10) ** -40, (sigma, z, z_poisson)
        assert abs(variance / (m2_poisson / z_poisson) - 1) < mpmath.mpf(10) ** -40, sigma
        entry["fourth_moment"] = float(fourth)
        entry["pmf"] = [float(p) for p in pmf if p > mpmath.mpf(10) ** -30]  # P[X = 0], P[X = 1], ...
        # P[|X| >= k] = 2 * sum_{x >= k} P[X = x] for k >= 1
        entry["tails"] = [{"k": k, "p": float(2 * mpmath.fsum(pmf[k:]))} for k in tails]
    return entry


def main():
    laws = [record(0.5, [1, 2, 3]), record(0.7, [1, 2, 3]), record(2.5, [8, 10]), record(9.3, [28, 38]),
            record(1e5, [])]
    out = {
        "meta": {"generator": "Tests/PrivacyTests/Reference/make_discrete_gaussian_reference.py",
                 "mpmath": mpmath.__version__, "digits": mpmath.mp.dps,
                 "law": "Canonne, Kamath, Steinke 2020, Definition 1"},
        "laws": laws,
    }
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "discrete_gaussian_reference.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
