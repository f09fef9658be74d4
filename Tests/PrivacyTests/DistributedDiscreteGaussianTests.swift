import Foundation
import XCTest
@testable import Privacy

/// Reference/distributed_reference.json, written by Reference/make_distributed_reference.py from the
/// authors' own accounting code of Kairouz, Liu, Steinke 2021 (google-research/federated,
/// distributed_dp/accounting_utils.py, loaded from a checkout), dp_accounting, numpy and mpmath; never from
/// this project's code.
enum DistributedReference {
    static let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("Reference/distributed_reference.json")

    static func root() throws -> [String: Any] {
        let data = try Data(contentsOf: url)
        guard let root = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw CocoaError(.fileReadCorruptFile, userInfo: [NSLocalizedDescriptionKey: "\(url.path): not an object"])
        }
        return root
    }

    static func records(_ key: String, in section: String? = nil) throws -> [[String: Any]] {
        var object = try root()
        if let section { object = try XCTUnwrap(object[section] as? [String: Any], "no section \(section)") }
        guard let records = object[key] as? [[String: Any]], !records.isEmpty else {
            throw CocoaError(.fileReadCorruptFile, userInfo: [NSLocalizedDescriptionKey: "\(url.path): no \(key) records"])
        }
        return records
    }
}

extension Dictionary where Key == String, Value == Any {
    func numbers(_ key: String) throws -> [Double] {
        guard let values = self[key] as? [Any] else {
            throw CocoaError(.fileReadCorruptFile, userInfo: [NSLocalizedDescriptionKey: "reference record lacks \(key)"])
        }
        return try values.map { value in
            guard let number = value as? Double ?? (value as? Int).map(Double.init) else {
                throw CocoaError(.fileReadCorruptFile, userInfo: [NSLocalizedDescriptionKey: "\(key) holds a non-number"])
            }
            return number
        }
    }
}

final class DistributedDiscreteGaussianTests: XCTestCase {
    /// The end-to-end cases as Swift steps, with Swift's own rounded bounds.
    private func endToEndSteps(_ record: [String: Any]) throws -> DistributedDiscreteGaussianSteps {
        let clip = try record.number("clip"), bits = Int(try record.number("fractional_bits"))
        let sensitivity = try RoundedSensitivity.conditionalRounding(
            scaledClip: clip * Double(sign: .plus, exponent: bits, significand: 1), dimension: Int(try record.number("dimension")),
            beta: try record.number("beta"))
        return DistributedDiscreteGaussianSteps(
            samplingRate: try record.number("q"), shares: Int(try record.number("shares")),
            shareSigma: try record.number("share_sigma_grid"), dimension: Int(try record.number("dimension")),
            sensitivity: sensitivity, steps: Int(try record.number("steps")))
    }

    /// Conditional randomized rounding's L2 and L1 bounds equal the authors' `rounded_l2_norm_bound` and
    /// `rounded_l1_norm_bound` (KLS 2021 Theorem 1 eq. (2)), β = 0 included.
    func testRoundedBoundsMatchTheAuthorsCode() throws {
        for record in try DistributedReference.records("end_to_end") {
            let steps = try endToEndSteps(record)
            let l2 = try record.number("authors_l2"), l1 = try record.number("authors_l1")
            XCTAssertEqual(steps.sensitivity.l2, l2, accuracy: 1e-12 * l2, "Δ₂ vs authors \(l2)")
            XCTAssertEqual(steps.sensitivity.l1, l1, accuracy: 1e-12 * l1, "Δ₁ vs authors \(l1)")
        }
        // Positive control: the worst-case bound c̃ + √d is larger than the conditional one at β > 0.
        let conditional = try RoundedSensitivity.conditionalRounding(scaledClip: 4096, dimension: 1 << 16, beta: exp(-0.5))
        let worst = try RoundedSensitivity.roundedSum(scaledClip: 4096, dimension: 1 << 16)
        XCTAssertGreaterThan(worst.l2, conditional.l2 + 100)
    }

    /// Per-order RDP of one step against other people's code (KLS 2021 Proposition 14 with τ of Theorem 1
    /// eq. (3)): equal at q = 1 to the authors' `compute_rdp_dgaussian`; at q < 1 never below it, and equal
    /// (1e-9) to the hedge `SubsampledRDP` takes, assembled in the reference from the authors' Zhu–Wang bound and
    /// autodp's assumption-free Poisson bound on the authors' base function (see the generator).
    func testStepRDPAgainstTheAuthorsCodeAndAutodp() throws {
        var worst = 0.0
        let records = try DistributedReference.records("end_to_end") + DistributedReference.records("small_sigma")
        for record in records {
            var steps: DistributedDiscreteGaussianSteps
            if record["authors_l2"] != nil {
                steps = try endToEndSteps(record)
            } else {
                steps = DistributedDiscreteGaussianSteps(
                    samplingRate: try record.number("q"), shares: Int(try record.number("shares")),
                    shareSigma: try record.number("share_sigma_grid"), dimension: Int(try record.number("dimension")),
                    sensitivity: try RoundedSensitivity(l2: try record.number("l2"), l1: try record.number("l1")), steps: 1)
            }
            try steps.validate()
            let tau = try record.number("tau_formula")
            XCTAssertEqual(steps.tau, tau, accuracy: 1e-12 * tau + 1e-300, "τ vs the paper's formula")
            let orders = try record.numbers("authors_orders"), authors = try record.numbers("authors_step_rdp")
            let combined = try record.numbers("combined_step_rdp")
            for (order, (reference, hedge)) in zip(orders, zip(authors, combined)) {
                let ours = steps.stepRDP(order: Int(order))
                let label = "n=\(steps.shares) σ=\(steps.shareSigma) q=\(steps.samplingRate) α=\(order): \(ours) vs authors \(reference), hedge \(hedge)"
                XCTAssertGreaterThanOrEqual(ours, reference * (1 - 1e-9), label)
                XCTAssertEqual(ours, hedge, accuracy: 1e-9 * hedge + 1e-15, label)
                if steps.samplingRate == 1 { XCTAssertEqual(ours, reference, accuracy: 1e-9 * reference, label) }
                worst = max(worst, ours / reference - 1)
            }
        }
        print("distributed DG: largest per-order RDP excess over the authors' code alone \(worst)")
    }

    /// ε end to end against the authors' `ddgauss_epsilon` (their RDP converted by dp_accounting), over their
    /// orders 2…128, 256: never below; equal at q = 1; equal (1e-6) to the hedge's ε from the reference.
    func testEpsilonAgainstTheAuthorsCode() throws {
        for record in try DistributedReference.records("end_to_end") {
            let steps = try endToEndSteps(record)
            let orders = try record.numbers("authors_orders").map { Int($0) }
            let expected = try record.number("authors_epsilon"), hedge = try record.number("combined_epsilon")
            let ours = try DistributedDiscreteGaussianAccountant.epsilon([steps], delta: try record.number("delta"), orders: orders)
            let label = "n=\(steps.shares) q=\(steps.samplingRate) T=\(steps.steps): ε \(ours.epsilon) vs authors \(expected), hedge \(hedge)"
            print(label)
            XCTAssertGreaterThanOrEqual(ours.epsilon, expected * (1 - 1e-9), label)
            XCTAssertEqual(ours.epsilon, hedge, accuracy: 1e-6 * hedge, label)
            if steps.samplingRate == 1 { XCTAssertEqual(ours.epsilon, expected, accuracy: 1e-9 * expected, label) }
            // Our default orders reach further (to 4096): never worse than the authors' orders alone.
            XCTAssertLessThanOrEqual(try DistributedDiscreteGaussianAccountant.epsilon([steps], delta: try record.number("delta")).epsilon,
                                     ours.epsilon * (1 + 1e-12), label)
        }
    }

    /// Large σ: τ underflows to 0 and the sum of n shares is the Gaussian mechanism with noise multiplier
    /// √n·σ/Δ₂: equal to dp_accounting's Gaussian RDP at q = 1 over the same integer orders, never below it with
    /// subsampling (where the hedge of `SubsampledRDP` costs more, printed); the ledger's zCDP form never below
    /// dp_accounting's ZCDpEvent and within 2% where ε ≤ 20.
    func testContinuousLimitAgainstDPAccounting() throws {
        var worst = 0.0
        for record in try DistributedReference.records("continuous_limit") {
            let l2 = try record.number("l2"), d = Int(try record.number("dimension"))
            let steps = DistributedDiscreteGaussianSteps(
                samplingRate: try record.number("q"), shares: Int(try record.number("shares")),
                shareSigma: try record.number("share_sigma_grid"), dimension: d,
                sensitivity: try RoundedSensitivity(l2: l2, l1: l2 * Double(d).squareRoot()), steps: Int(try record.number("steps")))
            XCTAssertEqual(steps.tau, 0)
            let delta = try record.number("delta"), expected = try record.number("dp_accounting_gaussian_integer_orders")
            let ours = try DistributedDiscreteGaussianAccountant.epsilon([steps], delta: delta).epsilon
            let label = "n=\(steps.shares) σ=\(steps.shareSigma) q=\(steps.samplingRate) T=\(steps.steps) δ=\(delta): \(ours) vs \(expected)"
            XCTAssertGreaterThanOrEqual(ours, expected * (1 - 1e-9), label)
            if steps.samplingRate == 1 { XCTAssertEqual(ours, expected, accuracy: 1e-9 * expected, label) }
            worst = max(worst, ours / expected - 1)
            if let zcdp = record["dp_accounting_zcdp"] as? Double {
                let ledger = try PrivacyAccounting.epsilon(steps: [steps.ledgerMechanism], delta: delta, accountant: .rdp)
                XCTAssertGreaterThanOrEqual(ledger, zcdp * (1 - 1e-9), label + ", ledger \(ledger) vs zCDP \(zcdp)")
                // Integer orders only: where ε is in the tens or more the best order is below 2 and they cannot follow.
                if zcdp <= 20 { XCTAssertLessThan(ledger, zcdp * 1.02, label + ", ledger \(ledger) vs zCDP \(zcdp)") }
            }
        }
        print("distributed DG, continuous limit: largest excess over dp_accounting's Gaussian \(worst)")
    }

    /// The ledger's discrete-Gaussian stand-in (noise multiplier 1/√(2ρ), Theorem 1's zCDP) never reports less
    /// than the full Proposition 14 accountant, here where τ matters (σ = 0.6 per share, 100 shares).
    func testLedgerMechanismNeverBelowTheFullAccountant() throws {
        for q in [1.0, 0.1, 0.01] {
            let steps = DistributedDiscreteGaussianSteps(samplingRate: q, shares: 100, shareSigma: 0.6, dimension: 16,
                                                         sensitivity: try RoundedSensitivity(l2: 2, l1: 4), steps: 50)
            let full = try DistributedDiscreteGaussianAccountant.epsilon([steps], delta: 1e-5).epsilon
            let ledger = try PrivacyAccounting.epsilon(steps: [steps.ledgerMechanism], delta: 1e-5, accountant: .rdp)
            XCTAssertGreaterThanOrEqual(ledger, full * (1 - 1e-12), "q=\(q): ledger \(ledger) vs full \(full)")
        }
    }

    /// Positive control: treating the sum as one discrete Gaussian of variance n·σ² (no τ) — the tempting
    /// mistake — gives less than the authors' bound where σ is small, so the comparisons above can fail.
    func testIgnoringTauWouldFailTheReference() throws {
        let record = try XCTUnwrap(try DistributedReference.records("small_sigma").first {
            (try? $0.number("shares")) == 1000 && (try? $0.number("share_sigma_grid")) == 0.6 && (try? $0.number("q")) == 1
                && (try? $0.number("dimension")) == 16
        })
        let l2 = try record.number("l2"), sigma = try record.number("share_sigma_grid"), n = try record.number("shares")
        let orders = try record.numbers("authors_orders"), expected = try record.numbers("authors_step_rdp")
        let naive = orders[0] * l2 * l2 / (2 * n * sigma * sigma)
        XCTAssertLessThan(naive, expected[0] / 2, "the naive bound \(naive) must fall below the authors' \(expected[0])")
        let steps = DistributedDiscreteGaussianSteps(samplingRate: 1, shares: Int(n), shareSigma: sigma, dimension: 16,
                                                     sensitivity: try RoundedSensitivity(l2: l2, l1: try record.number("l1")), steps: 1)
        XCTAssertGreaterThanOrEqual(steps.stepRDP(order: Int(orders[0])), expected[0] * (1 - 1e-9))
    }

    /// Parameters out of range are refused with the parameter named.
    func testRefusesParametersOutOfRange() throws {
        let sensitivity = try RoundedSensitivity(l2: 1, l1: 1)
        let small = DistributedDiscreteGaussianSteps(samplingRate: 1, shares: 2, shareSigma: 0.4, dimension: 1, sensitivity: sensitivity, steps: 1)
        XCTAssertThrowsError(try small.validate()) { XCTAssertTrue("\($0)".contains("share sigma")) }
        // One share is the discrete Gaussian itself: any σ > 0.
        XCTAssertNoThrow(try DistributedDiscreteGaussianSteps(samplingRate: 1, shares: 1, shareSigma: 0.4, dimension: 1,
                                                              sensitivity: sensitivity, steps: 1).validate())
        XCTAssertThrowsError(try RoundedSensitivity.conditionalRounding(scaledClip: 10, dimension: 4, beta: 1))
        XCTAssertThrowsError(try RoundedSensitivity.conditionalRounding(scaledClip: -1, dimension: 4, beta: 0.5))
        XCTAssertThrowsError(try RoundedSensitivity(l2: 2, l1: 1))
        XCTAssertThrowsError(try DistributedDiscreteGaussianAccountant.epsilon([small], delta: 0))
        // A decoded sensitivity of zero is refused by validate(), not divided through.
        let decoded = try JSONDecoder().decode(DistributedDiscreteGaussianSteps.self, from: Data(
            #"{"samplingRate": 1, "shares": 1, "shareSigma": 1, "dimension": 1, "sensitivity": {"l2": 0, "l1": 0}, "steps": 1}"#.utf8))
        XCTAssertThrowsError(try decoded.validate()) { XCTAssertTrue("\($0)".contains("sensitivity")) }
    }
}
