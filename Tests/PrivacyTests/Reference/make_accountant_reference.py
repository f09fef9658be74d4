#!/usr/bin/env python3
"""Reference values for the Swift accountants (Tests/PrivacyTests/*AccountantTests, CalibrationTests).

Computed with other people's code only: Google's dp_accounting, Microsoft's prv-accountant and autodp
(Zhu and Wang's implementation). Nothing here imports or mirrors the Swift code. Writes
accountant_reference.json next to this file; the library versions are stored in it.

    pip install dp-accounting==0.6.0 prv-accountant==0.2.0 autodp==0.2.3.1
    python3 Tests/PrivacyTests/Reference/make_accountant_reference.py [SECTION ...]

With section names (rdp, pld_small_delta, calibration, discrete) only those are recomputed. The whole
run takes about half an hour on two shared cores.
"""
import json
import math
import os
import platform
import sys
from importlib import metadata

import numpy as np
import dp_accounting
from dp_accounting import dp_event
from dp_accounting.pld import privacy_loss_distribution
from dp_accounting.rdp import rdp_privacy_accountant
from autodp import rdp_acct, rdp_bank

# The RDP orders the Swift RDPAccountant uses: dp_accounting's DEFAULT_RDP_ORDERS made denser above 63
# and extended to 4096. The Swift test checks its list equals this one.
ORDERS = ([1 + x / 10.0 for x in range(1, 100)] + list(range(11, 64))
          + [64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 448, 512, 640, 768, 896, 1024, 1536, 2048, 3072,
             4096])
assert list(rdp_privacy_accountant.DEFAULT_RDP_ORDERS) == [o for o in ORDERS if o in
                                                           set(rdp_privacy_accountant.DEFAULT_RDP_ORDERS)]


def event(q, sigma, steps):
    return dp_event.SelfComposedDpEvent(
        dp_event.PoissonSampledDpEvent(q, dp_event.GaussianDpEvent(sigma)), steps)


def eps_rdp(q, sigma, steps, delta, orders=ORDERS):
    acc = rdp_privacy_accountant.RdpAccountant(orders)
    acc.compose(event(q, sigma, steps))
    eps, order = acc.get_epsilon_and_optimal_order(delta)
    return float(eps), float(order)


def eps_pld(q, sigma, steps, delta, discretization, pessimistic=True):
    """dp_accounting's PLD of the Poisson-subsampled Gaussian (connect-the-dots), self-composed by FFT.
    pessimistic=False gives its optimistic estimate, a lower bound on the true epsilon."""
    pld = privacy_loss_distribution.from_gaussian_mechanism(
        standard_deviation=sigma, sensitivity=1, pessimistic_estimate=pessimistic,
        value_discretization_interval=discretization, sampling_prob=q, use_connect_dots=True)
    return float(pld.self_compose(steps).get_epsilon_for_delta(delta))


def eps_prv(q, sigma, steps, delta):
    from prv_accountant import PRVAccountant
    from prv_accountant.privacy_random_variables import PoissonSubsampledGaussianMechanism
    prv = PoissonSubsampledGaussianMechanism(sampling_probability=q, noise_multiplier=sigma)
    acc = PRVAccountant(prvs=[prv], max_self_compositions=[steps], eps_error=0.01, delta_error=delta / 1000)
    low, est, up = acc.compute_epsilon(delta=delta, num_self_compositions=[steps])
    return float(low), float(est), float(up)


INTEGER_ORDERS = [o for o in ORDERS if float(o).is_integer()]


def rdp_grid():
    """dp_accounting's RDP epsilon over ORDERS, and over their integer orders alone. At integer orders
    dp_accounting sums MTZ's binomial series exactly; at fractional ones (_compute_log_a_frac) it adds
    the absolute values of the Section 3.3 series' terms, an upper bound that can be well above the
    true value (q=0.2, sigma=2, alpha=1.5: 0.01437 against 0.00828 by quadrature), and where that
    does not converge it drops the order (listed in excluded_orders). The Swift test compares over the
    integer orders within 0.5%, and checks its fractional values against rdp_quadrature."""
    records = []
    for q in [0.001, 0.01, 0.05, 0.2, 1.0]:
        for sigma in [0.6, 1.0, 2.0, 5.0, 50.0]:
            per_step = rdp_privacy_accountant._compute_rdp_poisson_subsampled_gaussian(q, sigma, ORDERS)
            excluded = [o for o, r in zip(ORDERS, np.atleast_1d(per_step)) if not np.isfinite(r)]
            for steps in [1, 1000, 10000]:
                for delta in [1e-5, 1e-9]:
                    eps, order = eps_rdp(q, sigma, steps, delta)
                    eps_int, order_int = eps_rdp(q, sigma, steps, delta, INTEGER_ORDERS)
                    records.append({"q": q, "sigma": sigma, "steps": steps, "delta": delta,
                                    "eps_rdp": eps, "best_order": order, "excluded_orders": excluded,
                                    "eps_rdp_integer_orders": eps_int, "best_integer_order": order_int})
    return records


def rdp_quadrature():
    """RDP of one step at fractional orders where dp_accounting's series gives up, by direct numerical
    integration (mpmath, 50 digits) of A = E_{z ~ N(0, s^2)}[((1 - q) + q exp((2z - 1)/(2 s^2)))^alpha]
    (Mironov, Talwar, Zhang 2019, Section 3.1): an independent check of the Swift series there."""
    import mpmath
    mpmath.mp.dps = 50
    records = []
    for q, sigma in [(0.2, 0.6), (0.05, 0.6), (0.2, 1.0)]:
        for alpha in [1.3, 2.5, 5.5, 10.5]:
            qq, s, a = mpmath.mpf(q), mpmath.mpf(sigma), mpmath.mpf(alpha)
            def integrand(z):
                density = mpmath.exp(-z * z / (2 * s * s)) / (s * mpmath.sqrt(2 * mpmath.pi))
                return density * ((1 - qq) + qq * mpmath.exp((2 * z - 1) / (2 * s * s))) ** a
            z0 = s * s * mpmath.log(1 / qq - 1) + mpmath.mpf(1) / 2
            points = [-mpmath.inf, -20 * s, 0, z0, 1, a + 1, 40 * s + a, mpmath.inf]
            value = mpmath.quad(integrand, sorted(set(points), key=lambda x: float(x)))
            records.append({"q": q, "sigma": sigma, "order": alpha,
                            "rdp": float(mpmath.log(value) / (a - 1))})
    return records


def pld_small_delta():
    cases = [(0.01, 1.0, 1000), (0.05, 2.0, 500), (0.001, 0.8, 10000)]
    deltas = [1e-6, 1e-8, 1e-10, 1e-12, 1e-14]
    records = []
    for q, sigma, steps in cases:
        for delta in deltas:
            record = {"q": q, "sigma": sigma, "steps": steps, "delta": delta,
                      "eps_pld_pessimistic_1e-4": eps_pld(q, sigma, steps, delta, 1e-4, True),
                      "eps_pld_pessimistic_2e-5": eps_pld(q, sigma, steps, delta, 2e-5, True),
                      "eps_pld_optimistic_2e-5": eps_pld(q, sigma, steps, delta, 2e-5, False),
                      "eps_rdp": eps_rdp(q, sigma, steps, delta)[0]}
            try:
                low, est, up = eps_prv(q, sigma, steps, delta)
                record.update({"eps_prv_lower": low, "eps_prv_estimate": est, "eps_prv_upper": up})
            except Exception as error:  # prv-accountant refuses some small deltas; say so in the file
                record["prv_error"] = str(error)[:200]
            # dp_accounting's composition is trusted only where it is consistent with itself and with
            # RDP, a valid upper bound: optimistic <= pessimistic <= RDP (it is not at delta = 1e-14).
            record["dp_accounting_consistent"] = (
                record["eps_pld_optimistic_2e-5"] <= record["eps_pld_pessimistic_2e-5"] + 1e-9
                and record["eps_pld_pessimistic_1e-4"] <= record["eps_rdp"])
            if delta <= 1e-12:
                record["eps_tilted_optimistic_1e-5"] = tilted_optimistic_epsilon(q, sigma, steps, delta,
                                                                                 eps_guess=record["eps_rdp"])
            print("pld", record, file=sys.stderr)
            records.append(record)
    return records


def tilted_optimistic_epsilon(q, sigma, steps, delta, h=1e-5, eps_guess=None):
    """A lower bound on epsilon where dp_accounting's own composition fails (delta below about 1e-12, where
    its FFT rounding, absolute and about 1e-13, swamps delta): dp_accounting's optimistic single-step
    PMF (privacy buckets, every loss rounded down, so delta and epsilon come out low, by at most
    steps * h in epsilon), composed with numpy's FFT after exponential tilting towards the answer
    (p(l) e^(lambda l) / M(lambda); tilting commutes with convolution), so that rounding is relative
    near the losses that decide delta. The larger of the two directions; eps_guess starts the tilt."""
    pld = privacy_loss_distribution.from_gaussian_mechanism(
        standard_deviation=sigma, pessimistic_estimate=False, value_discretization_interval=h,
        sampling_prob=q, use_connect_dots=False)
    worst = 0.0
    for pmf in (pld._pmf_remove, pld._pmf_add):
        dense = pmf.to_dense_pmf()
        probs = np.asarray(dense._probs, dtype=np.float64)
        lower = int(dense._lower_loss)
        inf_mass = float(dense._infinity_mass)
        losses = (lower + np.arange(len(probs))) * h
        eps = eps_guess
        for _ in range(3):
            # Chernoff tilt at eps.
            lambdas = 0.05 * 1.25 ** np.arange(48)
            logp = np.log(np.maximum(probs, 1e-300))
            def logM(lam):
                a = logp + lam * losses
                m = a.max()
                return m + math.log(np.exp(a - m).sum())
            exps = [steps * logM(l) - l * eps for l in lambdas]
            lam = float(lambdas[int(np.argmin(exps))])
            lm = logM(lam)
            tilted = np.exp(logp + lam * losses - lm) * (probs > 0)
            mean = float((tilted * losses).sum())
            var = float((tilted * (losses - mean) ** 2).sum())
            centre = steps * mean
            half = 40 * math.sqrt(steps * var) + 50 * h
            size = 1 << int(math.ceil(math.log2(2 * half / h + len(probs))))
            x = np.zeros(size)
            np.add.at(x, np.arange(len(probs)) % size, tilted)
            spectrum = np.fft.rfft(x) ** steps
            composed = np.fft.irfft(spectrum, n=size)
            # Index k of the circle holds losses (steps*lower + k + m*size)*h; pick m nearest the centre.
            base = steps * lower
            ks = np.arange(size)
            m = np.round((centre / h - base - ks) / size)
            idx = base + ks + m * size
            ls = idx * h
            keep = np.abs(ls - centre) <= half
            logw = steps * lm - lam * ls
            r = np.where(keep & (composed > 0), composed, 0.0) * np.exp(np.minimum(logw, 700))
            extra = -math.expm1(steps * math.log1p(-inf_mass)) if inf_mass > 0 else 0.0
            order = np.argsort(ls)
            ls, r = ls[order], r[order]
            def delta_of(e):
                sel = ls > e
                return extra + float((r[sel] * -np.expm1(e - ls[sel])).sum())
            lo, hi = 0.0, max(eps * 2, 1.0)
            while delta_of(hi) > delta:
                hi *= 2
            for _ in range(60):
                mid = (lo + hi) / 2
                if delta_of(mid) > delta:
                    lo = mid
                else:
                    hi = mid
            if abs(hi - eps) < 1e-6:
                eps = hi
                break
            eps = hi
        worst = max(worst, eps)
    return worst


def smallest_sigma(fits, low=0, high=1000):
    """Smallest sigma on the 0.001 grid (as an integer index) with fits(sigma); fits is monotone."""
    while not fits(high / 1000):
        low, high = high, high * 2
    while high - low > 1:
        middle = (low + high) // 2
        if fits(middle / 1000):
            high = middle
        else:
            low = middle
    return high / 1000


def calibration():
    records = []
    for target in [0.5, 1.0, 4.0, 8.0]:
        for q, steps in [(0.01, 1000), (0.02, 40), (0.001, 10000)]:
            delta = 1e-5
            record = {"target_eps": target, "q": q, "steps": steps, "delta": delta}
            # Every sigma below this one has a lower bound on its true epsilon (the larger of
            # dp_accounting's optimistic PLD and prv-accountant's lower bound) above the target: a
            # calibration returning less is unsound.
            def lower(s):
                return max(eps_pld(q, s, steps, delta, 1e-4, False), eps_prv(q, s, steps, delta)[0])
            record["sigma_unsound_below"] = smallest_sigma(lambda s: lower(s) <= target)
            record["sigma_pld_pessimistic"] = smallest_sigma(
                lambda s: eps_pld(q, s, steps, delta, 1e-4, True) <= target)
            record["sigma_rdp"] = smallest_sigma(lambda s: eps_rdp(q, s, steps, delta)[0] <= target)
            print("calibration", record, file=sys.stderr)
            records.append(record)
    return records


def discrete():
    records = []
    orders = [2, 3, 4, 6, 8, 16, 32, 64, 128, 256]
    for q, sigma in [(0.01, 1.0), (0.05, 2.0), (0.2, 0.8), (0.001, 5.0), (0.01, 50.0)]:
        func = lambda a, s=sigma: rdp_bank.RDP_gaussian({'sigma': s}, a)
        acct = rdp_acct.anaRDPacct(m=300)
        acct.compose_poisson_subsampled_mechanisms1(func, q, coeff=1)
        acct.build_zeroth_oracle()
        general = [float(acct.evalRDP(a)) for a in orders]
        continuous = [float(rdp_privacy_accountant._compute_rdp_poisson_subsampled_gaussian(q, sigma, [a])[0])
                      for a in orders]
        records.append({"q": q, "sigma": sigma, "orders": orders, "autodp_general_rdp": general,
                        "mtz_continuous_rdp": continuous})
    return records


def main():
    versions = {name: metadata.version(name) for name in ["dp-accounting", "prv-accountant", "autodp", "numpy", "scipy"]}
    versions["python"] = platform.python_version()
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "accountant_reference.json")
    sections = {"rdp": rdp_grid, "rdp_quadrature": rdp_quadrature, "pld_small_delta": pld_small_delta,
                "calibration": calibration, "discrete": discrete}
    # With section names as arguments only those are recomputed and the rest kept from the file.
    wanted = sys.argv[1:] or list(sections)
    old = json.load(open(path)) if sys.argv[1:] else {}
    out = {
        "meta": {
            "generator": "Tests/PrivacyTests/Reference/make_accountant_reference.py",
            "versions": versions,
            "adjacency": "add/remove one record; Poisson sampling rate q; noise std = sigma * clip",
            "rdp_orders": "the Swift RDPAccountant.defaultOrders: dp_accounting DEFAULT_RDP_ORDERS, denser above 63, to 4096",
            "rdp": "dp_accounting RdpAccountant over rdp_orders (Mironov-Talwar-Zhang 2019, Balle et al. 2020 Thm 21)",
            "pld_small_delta": "dp_accounting PLD (connect-the-dots pessimistic, privacy-buckets optimistic) at the stated "
                               "discretisation, trusted only where dp_accounting_consistent; prv-accountant 0.2.0 bounds "
                               "(eps_error 0.01) where it accepts delta; for delta <= 1e-12 eps_tilted_optimistic_1e-5, "
                               "a lower bound computed by exponentially tilted FFT from dp_accounting's optimistic PMF",
            "calibration": "smallest sigma on a 0.001 grid meeting target_eps at delta by each accountant; "
                           "sigma_unsound_below uses max(optimistic PLD, prv-accountant lower bound), a lower bound on "
                           "the true epsilon, so every smaller sigma is unsound",
            "discrete": "per-step RDP at integer orders: autodp's assumption-free Poisson-subsampling bound "
                        "(anaRDPacct.compose_poisson_subsampled_mechanisms1, Zhu and Wang 2019) applied to the "
                        "Gaussian RDP alpha/(2 sigma^2), which bounds the discrete Gaussian's (Canonne, Kamath, "
                        "Steinke 2020); and dp_accounting's continuous MTZ value",
        },
        "rdp_orders": ORDERS,
    }
    for name, compute in sections.items():
        out[name] = compute() if name in wanted or name not in old else old[name]
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print("wrote", path, file=sys.stderr)


if __name__ == "__main__":
    main()
