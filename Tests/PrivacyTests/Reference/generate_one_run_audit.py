#!/usr/bin/env python3
"""Reference values for the one-run privacy audit (Steinke, Nasr and Jagielski, "Privacy Auditing with One (1)
Training Run", NeurIPS 2023), computed independently of the Swift code with SciPy's binomial distribution.

For an (eps, delta)-DP run audited with m canaries (each included with probability 1/2), r guesses and v right,
the paper's main theorem for approximate DP bounds

    P[W >= v] <= f(v) + 2 m delta * max_{i = 1..m} (f(v - i) - f(v)) / i,   f(u) = P[Binomial(r, e^eps/(1 + e^eps)) >= u]

(public implementations of the paper compute the same as p_value_DP_audit / get_eps_audit). The lower bound is the largest eps
whose right-hand side is at most beta. Here it is found on a grid fine enough to see any non-monotonicity,
then refined by bisection between the last rejected and the first accepted grid point; the Swift code
bisects on [0, 40] directly, so the two searches share nothing but the formula.

Also written: the noise multiplier sigma at which one Gaussian mechanism of sensitivity 1 is exactly
(eps, delta)-DP (Balle and Wang, "Improving the Gaussian Mechanism for Differential Privacy", ICML 2018,
Theorem 8: delta(eps) = Phi(1/(2 sigma) - eps sigma) - e^eps Phi(-1/(2 sigma) - eps sigma)), for the audit's
stand-in mechanism tests.

Run from the repository root:  python3 Tests/PrivacyTests/Reference/generate_one_run_audit.py
(SciPy 1.17.1 wrote the committed file.)
"""
import json
import math
import os

import numpy as np
import scipy
from scipy.optimize import brentq
from scipy.stats import binom, norm


def p_value(m, r, v, eps, delta):
    q = 1.0 / (1.0 + math.exp(-eps))
    tail = 1.0 if v <= 0 else float(binom.sf(v - 1, r, q))
    if delta == 0 or v == 0:
        return min(1.0, tail)
    # f(v - i) - f(v) = P[v - i <= W < v]; i > v gives (1 - f(v)) / i, below the i = v term, so i = 1..v
    # covers the maximum over 1..m.
    i = np.arange(1, v + 1)
    mass = np.cumsum(binom.pmf(v - i, r, q))
    slope = float(np.max(mass / i))
    return min(1.0, tail + 2 * m * delta * slope)


def lower_bound(m, r, v, delta, beta, top=40.0):
    rejected = lambda e: p_value(m, r, v, e, delta) <= beta
    if r == 0 or not rejected(0.0):
        return 0.0
    grid = np.arange(0.0, top + 1e-12, 0.02)
    last = 0.0
    for e in grid:
        if rejected(float(e)):
            last = float(e)
        else:
            break
    else:
        return top
    low, high = last, min(top, last + 0.02)
    for _ in range(60):
        mid = (low + high) / 2
        if rejected(mid):
            low = mid
        else:
            high = mid
    return low


def gaussian_sigma(eps, delta):
    def excess(sigma):
        return norm.cdf(1 / (2 * sigma) - eps * sigma) - math.exp(eps) * norm.cdf(-1 / (2 * sigma) - eps * sigma) - delta
    return brentq(excess, 1e-3, 1e3, xtol=1e-14)


def main():
    cases = []
    for (m, r) in [(40, 40), (100, 100), (200, 60), (200, 200), (1000, 100), (1000, 1000), (500, 100)]:
        for delta in [0.0, 1e-5, 1e-3]:
            for beta in [0.05, 0.01]:
                for v in sorted({r, r - 1, (9 * r) // 10, (4 * r) // 5, (2 * r) // 3, r // 2}):
                    cases.append({"canaries": m, "guesses": r, "correct": v, "delta": delta, "significance": beta,
                                  "epsilon_lower_bound": lower_bound(m, r, v, delta, beta)})
    p_values = []
    for (m, r, v, eps, delta) in [(200, 60, 50, 1.0, 1e-5), (1000, 100, 95, 2.0, 1e-5), (1000, 1000, 700, 0.5, 1e-3),
                                  (40, 16, 14, 0.7, 1e-3), (100, 100, 100, 3.0, 0.0)]:
        p_values.append({"canaries": m, "guesses": r, "correct": v, "epsilon": eps, "delta": delta,
                         "p_value": p_value(m, r, v, eps, delta)})
    gaussian = [{"epsilon": e, "delta": d, "noise_multiplier": gaussian_sigma(e, d)} for (e, d) in [(1.0, 1e-5), (2.0, 1e-5)]]
    out = {"source": "Tests/PrivacyTests/Reference/generate_one_run_audit.py, SciPy " + scipy.__version__,
           "bounds": cases, "p_values": p_values, "gaussian_mechanism": gaussian}
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "one_run_audit.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print(f"wrote {len(cases)} bounds to {path}")


if __name__ == "__main__":
    main()
