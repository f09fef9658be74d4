#!/usr/bin/env python3
# Enumerates, with exact integer binomials and no code shared with Swift, the neighbour graph and
# threshold DropoutTolerance.graphAndThreshold must choose (collusion floor 2t >= m + 1 + max(1, ceil(m/20)))
# and the colluders withstood, 2t - m - 1. DropoutToleranceTests quotes its output.
# Run: python3 Tests/SecureAggregationTests/Reference/dropout_policy.py
from fractions import Fraction
from math import comb, ceil, log2
def tail(m, p, t):  # P(Bin(m,p) < t), p Fraction
    return sum(comb(m, i) * p**i * (1-p)**(m-i) for i in range(0, min(t, m+1)))
def default_degree(n):
    if n <= 2: return max(n-1, 0)
    l = ceil(log2(n)); k = 3*l
    if k % 2: k += 1
    return min(k, n-1)
def minimum(m): return max(1, (m + 19)//20)
def floor_t(m): return -(-(m + 1 + minimum(m)) // 2)
def threshold(n, k, delta, eps):
    m = n if k is None or k >= n-1 else k+1
    distinct = 1 if m == n else n
    p = 1 - Fraction(delta).limit_denominator(10**6)
    eps = Fraction(eps).limit_denominator(10**12)
    for t in range(m, floor_t(m)-1, -1):
        if distinct * tail(m, p, t) <= eps: return t
    return None
def choose(n, delta, eps):
    k = max(2, default_degree(n))
    if k % 2: k += 1
    while k < n-1 and k+1 <= 255:
        t = threshold(n, k, delta, eps)
        if t is not None: return ('harary', k, t, 2*t-(k+1)-1)
        k += 2
    if n > 255: return None
    t = threshold(n, None, delta, eps)
    return ('complete', None, t, None if t is None else 2*t-n-1)
for case in [(500,0.3,1e-4),(100,0.3,1e-4),(100,0.1,1e-6),(100,0.3,1e-6),(500,0.3,1e-6),(300,0.2,1e-5),(50,0.0,1e-6),(60,0.2,1e-6)]:
    print(case, choose(*case))
