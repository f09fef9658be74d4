#!/usr/bin/env python3
"""Reference values for the distributed-DP accountants (Tests/PrivacyTests/DistributedDiscreteGaussianTests,
ModularWrapTests, ClientLevelDPTests).

Computed with other people's code only, never the Swift code:
- the authors' own accounting code of Kairouz, Liu, Steinke 2021 ("The Distributed Discrete Gaussian
  Mechanism for Federated Learning with Secure Aggregation", ICML, arXiv:2102.06387): the file
  distributed_dp/accounting_utils.py of github.com/google-research/federated, loaded from a checkout given on
  the command line (it is not copied here). Its one TensorFlow dependency, tensorflow_privacy's
  get_privacy_spent, is supplied by dp_accounting's compute_epsilon (the same RDP-to-(eps, delta) conversion,
  Canonne-Kamath-Steinke 2020 Proposition 12 = Balle et al. 2020 Theorem 21);
- Google's dp_accounting (Gaussian and zCDP events: the continuous limit; client-level DP-FedAvg by RDP
  and PLD);
- numpy (exact tails of sums of discrete Gaussians by direct convolution) and mpmath (moment generating
  functions), for the wrap bound.

    pip install dp-accounting==0.6.0 autodp==0.2.3.1 numpy scipy mpmath
    git clone https://github.com/google-research/federated  (the file's blob id is checked below)
    python3 Tests/PrivacyTests/Reference/make_distributed_reference.py PATH/federated/distributed_dp/accounting_utils.py

Writes distributed_reference.json next to this file; takes under a minute.
"""
import hashlib
import importlib.util
import json
import math
import os
import platform
import sys
import types
from importlib import metadata

import mpmath
import numpy as np
from dp_accounting import dp_event
from dp_accounting.pld import privacy_loss_distribution
from dp_accounting.rdp import rdp_privacy_accountant
from autodp import rdp_acct

# git's blob id of accounting_utils.py at google-research/federated a5af8c4 ("Fix the file loading code in OSS colab.")
AUTHORS_BLOB = "29a7ee83b7400b5a145f335a2968e4ea0b467d21"
# The Swift accountant's orders: RDPAccountant.defaultOrders' integer ones.
SWIFT_INTEGER_ORDERS = list(range(2, 64)) + [64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 448, 512, 640, 768,
                                             896, 1024, 1536, 2048, 3072, 4096]


def load_authors_code(path):
    data = open(path, "rb").read()
    blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    if blob != AUTHORS_BLOB:
        sys.exit(f"{path}: git blob {blob}, expected {AUTHORS_BLOB} (google-research/federated a5af8c4)")

    def get_privacy_spent(orders, rdp, target_delta):
        eps, order = rdp_privacy_accountant.compute_epsilon(orders, rdp, target_delta)
        return eps, target_delta, order

    tfp = types.ModuleType("tensorflow_privacy")
    tfp.get_privacy_spent = get_privacy_spent
    sys.modules["tensorflow_privacy"] = tfp
    spec = importlib.util.spec_from_file_location("accounting_utils", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tau_formula(n, sigma):
    """KLS 2021 Theorem 1 eq. (3), as written in the paper and in the authors' ddgauss_epsilon."""
    return 10 * sum(math.exp(-2 * math.pi ** 2 * sigma ** 2 * k / (k + 1)) for k in range(1, n))


def subsampled_reference(au, q, l1_scale, l2_scale, tau, d, orders):
    """Per-step RDP of the subsampled sum as the Swift accountant bounds it, from other people's code only:
    min(max(authors' Zhu-Wang bound [compute_rdp_dgaussian, itself capped by the unsampled RDP], autodp 0.2.3.1's
    assumption-free Poisson bound [anaRDPacct.compose_poisson_subsampled_mechanisms1] applied to the authors'
    Proposition 14 function), the authors' unsampled RDP). Also returns the authors' own value alone."""
    def base(a):
        if math.isinf(a):
            return math.inf
        if a <= 1:
            return 0.0
        return float(au.compute_rdp_dgaussian(1.0, l1_scale, l2_scale, tau, d, 1, [math.ceil(a)])[0])
    authors = [float(x) for x in au.compute_rdp_dgaussian(q, l1_scale, l2_scale, tau, d, 1, orders)]
    if q == 1.0:
        return authors, authors
    acct = rdp_acct.anaRDPacct(m=300)
    acct.compose_poisson_subsampled_mechanisms1(base, q, coeff=1)
    acct.build_zeroth_oracle()
    combined = [min(max(a, float(acct.evalRDP(o))), base(o)) for a, o in zip(authors, orders)]
    return authors, combined


def authors_end_to_end(au):
    """The authors' ddgauss_epsilon end to end: real-valued gamma (grid step), local stddev, clip, beta, d, q, T,
    delta; the per-order RDP of one step from compute_rdp_dgaussian with the authors' rounded bounds."""
    cases = [
        # n, d, clip, gamma, local stddev (real), beta, q, steps, delta
        (100, 2 ** 16, 1.0, 2.0 ** -12, 0.1, math.exp(-0.5), 1.0, 100, 1e-5),
        (10, 2 ** 20, 1.0, 2.0 ** -14, 1.2 / math.sqrt(10), math.exp(-0.5), 0.01, 1000, 1e-5),
        (8, 2 ** 18, 0.5, 2.0 ** -13, 0.7 / math.sqrt(8), math.exp(-0.5), 0.05, 300, 1e-6),
        (4, 1000, 1.0, 2.0 ** -6, 1.0 / 2, 0.0, 0.2, 50, 1e-5),
        (1000, 2 ** 12, 1.0, 2.0 ** -8, 1.0 / math.sqrt(1000), math.exp(-0.5), 1.0, 10, 1e-5),
        (3, 2 ** 16, 1.0, 2.0 ** -10, 0.9 / math.sqrt(3), 0.01, 0.001, 10000, 1e-7),
    ]
    records = []
    for n, d, clip, gamma, local, beta, q, steps, delta in cases:
        scale = 1.0 / gamma
        eps, order = au.ddgauss_epsilon(gamma, local, n, clip, beta, d, q, steps, delta, orders=au.RDP_ORDERS)
        l2 = au.rounded_l2_norm_bound(clip * scale, beta, d)
        l1 = au.rounded_l1_norm_bound(l2, d)
        sigma = local * scale
        tau = tau_formula(n, sigma)
        rdp1, combined = subsampled_reference(au, q, l1 / (math.sqrt(n) * sigma), l2 / (math.sqrt(n) * sigma), tau, d,
                                              list(au.RDP_ORDERS))
        combined_eps, _ = rdp_privacy_accountant.compute_epsilon(au.RDP_ORDERS, [steps * x for x in combined], delta)
        records.append({"combined_step_rdp": combined, "combined_epsilon": float(combined_eps),"shares": n, "dimension": d, "clip": clip, "fractional_bits": int(round(-math.log2(gamma))),
                        "share_sigma_grid": sigma, "beta": beta, "q": q, "steps": steps, "delta": delta,
                        "authors_l2": float(l2), "authors_l1": float(l1), "tau_formula": tau,
                        "authors_orders": list(au.RDP_ORDERS), "authors_step_rdp": [float(x) for x in rdp1],
                        "authors_epsilon": float(eps), "authors_order": float(order)})
        print("end_to_end", records[-1]["authors_epsilon"], file=sys.stderr)
    return records


def authors_small_sigma(au):
    """Where tau matters: share sigma near 1/2, many shares, small d, integer sensitivity given directly."""
    records = []
    for n in [2, 10, 100, 1000]:
        for sigma in [0.6, 1.0, 1.5, 2.0]:
            for d, l2, l1 in [(1, 1.0, 1.0), (16, 2.0, 4.0)]:
                for q in [1.0, 0.1]:
                    tau = tau_formula(n, sigma)
                    scale_den = math.sqrt(n) * sigma
                    rdp1, combined = subsampled_reference(au, q, l1 / scale_den, l2 / scale_den, tau, d, list(au.RDP_ORDERS))
                    records.append({"combined_step_rdp": combined,"shares": n, "share_sigma_grid": sigma, "dimension": d, "l2": l2, "l1": l1, "q": q,
                                    "tau_formula": tau, "authors_orders": list(au.RDP_ORDERS),
                                    "authors_step_rdp": [float(x) for x in rdp1]})
    return records


def continuous_limit():
    """Large share sigma: tau underflows to 0 and the sum behaves as the Gaussian mechanism with noise multiplier
    sqrt(n)*sigma/Delta2. dp_accounting's Poisson-subsampled Gaussian over the Swift integer orders; and, for
    q = 1, dp_accounting's zCDP event with rho = Delta2^2/(2 n sigma^2) over its default orders."""
    records = []
    for n, sigma, l2, d in [(10, 200.0, 100.0, 10000), (1, 2.0, 1.0, 1), (50, 60.0, 300.0, 65536), (1, 0.8, 1.0, 1)]:
        z = math.sqrt(n) * sigma / l2
        for q in [1.0, 0.1, 0.01]:
            for steps in [1, 100, 1000]:
                for delta in [1e-5, 1e-8]:
                    acc = rdp_privacy_accountant.RdpAccountant(SWIFT_INTEGER_ORDERS)
                    acc.compose(dp_event.SelfComposedDpEvent(
                        dp_event.PoissonSampledDpEvent(q, dp_event.GaussianDpEvent(z)), steps))
                    eps, order = acc.get_epsilon_and_optimal_order(delta)
                    record = {"shares": n, "share_sigma_grid": sigma, "l2": l2, "dimension": d, "q": q, "steps": steps,
                              "delta": delta, "noise_multiplier": z, "tau_formula": tau_formula(n, sigma),
                              "dp_accounting_gaussian_integer_orders": float(eps)}
                    if q == 1.0:
                        zc = rdp_privacy_accountant.RdpAccountant()
                        zc.compose(dp_event.SelfComposedDpEvent(dp_event.ZCDpEvent(l2 ** 2 / (2 * n * sigma ** 2)), steps))
                        record["dp_accounting_zcdp"] = float(zc.get_epsilon(delta))
                    records.append(record)
    return records


def discrete_gaussian_pmf(sigma, half_width):
    xs = np.arange(-half_width, half_width + 1)
    w = np.exp(-xs.astype(np.float64) ** 2 / (2 * sigma ** 2))
    return w / w.sum()


def wrap_tails():
    """Exact P[|S| >= a] for S a sum of n independent N_Z(0, sigma^2), by direct convolution (sums of positive
    terms, no cancellation), against which the Swift sub-Gaussian bound 2 exp(-a^2/(2 n sigma^2)) must not be
    lower; and mpmath's E[exp(lambda X)] for X ~ N_Z(0, sigma^2) against exp(lambda^2 sigma^2 / 2)."""
    tails = []
    for sigma in [0.7, 2.0, 10.0]:
        half = int(40 * sigma) + 20
        pmf = discrete_gaussian_pmf(sigma, half)
        for n in [1, 3, 10]:
            total = np.array([1.0])
            for _ in range(n):
                total = np.convolve(total, pmf)
            offset = (len(total) - 1) // 2
            sd = math.sqrt(n) * sigma
            for k in [1.0, 2.0, 4.0, 6.0]:
                a = int(math.ceil(k * sd))
                mass = float(total[:offset - a + 1].sum() + total[offset + a:].sum())
                tails.append({"share_sigma": sigma, "shares": n, "a": a, "exact_two_sided_tail": mass})
    mpmath.mp.dps = 40
    mgfs = []
    for sigma in [0.3, 0.7, 2.0, 10.0]:
        for lam in [0.05, 0.5, 1.0, 3.0]:
            s, lm = mpmath.mpf(sigma), mpmath.mpf(lam)
            width = int(40 * sigma + 40 * lam * sigma * sigma) + 40
            num = mpmath.fsum(mpmath.exp(-mpmath.mpf(x) ** 2 / (2 * s * s) + lm * x) for x in range(-width, width + 1))
            den = mpmath.fsum(mpmath.exp(-mpmath.mpf(x) ** 2 / (2 * s * s)) for x in range(-width, width + 1))
            mgf = num / den
            bound = mpmath.exp(lm * lm * s * s / 2)
            # Equal to 40 digits once sigma >= 2 (the gap is of order exp(-2 pi^2 sigma^2)): allow 1e-30 relative.
            assert mgf <= bound * (1 + mpmath.mpf(10) ** -30), (sigma, lam)
            mgfs.append({"share_sigma": sigma, "lambda": lam, "log_mgf": float(mpmath.log(mgf)),
                         "log_subgaussian_bound": float(mpmath.log(bound))})
    return {"tails": tails, "mgf": mgfs}


def client_level():
    """DP-FedAvg at the client level (McMahan et al. 2018): dp_accounting's RDP over the Swift integer orders
    and its PLD (connect-the-dots, 1e-4) pessimistic and optimistic bounds, for FL-typical (q, z, T)."""
    records = []
    for q, z, steps in [(0.01, 1.0, 1000), (0.05, 0.8, 200), (0.1, 1.2, 500), (0.002, 1.1, 5000), (1.0, 5.0, 20)]:
        for delta in [1e-5, 1e-6]:
            event = dp_event.SelfComposedDpEvent(dp_event.PoissonSampledDpEvent(q, dp_event.GaussianDpEvent(z)), steps)
            acc = rdp_privacy_accountant.RdpAccountant(SWIFT_INTEGER_ORDERS)
            acc.compose(event)
            pessimistic = privacy_loss_distribution.from_gaussian_mechanism(
                standard_deviation=z, pessimistic_estimate=True, value_discretization_interval=1e-4,
                sampling_prob=q, use_connect_dots=True).self_compose(steps)
            optimistic = privacy_loss_distribution.from_gaussian_mechanism(
                standard_deviation=z, pessimistic_estimate=False, value_discretization_interval=1e-4,
                sampling_prob=q, use_connect_dots=True).self_compose(steps)
            records.append({"q": q, "noise_multiplier": z, "rounds": steps, "delta": delta,
                            "dp_accounting_rdp_integer_orders": float(acc.get_epsilon(delta)),
                            "dp_accounting_pld_pessimistic": float(pessimistic.get_epsilon_for_delta(delta)),
                            "dp_accounting_pld_optimistic": float(optimistic.get_epsilon_for_delta(delta))})
            print("client_level", records[-1], file=sys.stderr)
    return records


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    au = load_authors_code(sys.argv[1])
    versions = {name: metadata.version(name) for name in ["dp-accounting", "autodp", "numpy", "mpmath"]}
    versions["python"] = platform.python_version()
    out = {
        "meta": {
            "generator": "Tests/PrivacyTests/Reference/make_distributed_reference.py",
            "versions": versions,
            "authors_code": "google-research/federated a5af8c4, distributed_dp/accounting_utils.py, git blob " + AUTHORS_BLOB,
            "combined": "combined_step_rdp / combined_epsilon: min(max(authors' Zhu-Wang bound, autodp's assumption-free "
                        "Poisson bound on the authors' Proposition 14 function), the unsampled RDP), the three-way hedge the "
                        "Swift SubsampledRDP takes; authors_step_rdp / authors_epsilon are the authors' code alone",
            "units": "sigma, l2, l1 in grid units (clip x 2^f); tau_formula is KLS 2021 Theorem 1 eq. (3)",
        },
        "end_to_end": authors_end_to_end(au),
        "small_sigma": authors_small_sigma(au),
        "continuous_limit": continuous_limit(),
        "wrap": wrap_tails(),
        "client_level": client_level(),
    }
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "distributed_reference.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    print("wrote", path, file=sys.stderr)


if __name__ == "__main__":
    main()
