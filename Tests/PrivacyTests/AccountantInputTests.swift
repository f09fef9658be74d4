import Foundation
import TestSupport
import XCTest
@testable import Privacy

/// Issue 13: every out-of-range input to an accountant is a thrown error naming the parameter and its
/// range, and every in-range extreme gives a number (no trap, no NaN). `privacy epsilon --sampling-rate
/// 0.01 --noise-multiplier 1e-9 --steps 1 --delta 1e-5 --accountant pld` died with signal 11 when the
/// module was built with -Ounchecked; with checks on, the same input trapped converting the loss range
/// (about 5e17 / 1e-4) to Int in `DiscretePrivacyLoss`.
final class AccountantInputTests: XCTestCase {
    func epsilon(_ q: Double, _ sigma: Double, _ steps: Int, _ delta: Double, _ kind: AccountantKind,
                 noise: MechanismNoise = .gaussian) throws -> PrivacyEstimate {
        try PrivacyAccounting.estimate(steps: [MechanismSteps(samplingRate: q, noiseMultiplier: sigma, steps: steps, noise: noise)],
                                       delta: delta, accountant: kind)
    }

    /// The issue's reproduction, and the other in-range extremes, in both accountants: a number, never NaN.
    func testExtremeInputsGiveNumbers() throws {
        let cases: [(Double, Double, Int, Double)] = [
            (0.01, 1e-9, 1, 1e-5), (0.01, 1e9, 1000, 1e-5), (1, 1e-9, 1, 1e-5), (1, 1, 1, 1e-5), (1, 1e9, 1, 1e-5),
            (0.01, 1, MechanismSteps.maximumSteps, 1e-5), (0.5, 0.05, 100_000_000, 1e-5), (0.01, 1, 1000, 1e-300),
            (0.01, 1, 1000, 0.999_999), (1e-300, 1, 1000, 1e-5), (0.999_999, 0.3, 10, 1e-5),
        ]
        for (q, sigma, steps, delta) in cases {
            for kind in AccountantKind.allCases {
                let start = Date()
                let estimate = try epsilon(q, sigma, steps, delta, kind)
                let label = "\(kind) q=\(q) σ=\(sigma) T=\(steps) δ=\(delta): \(estimate.epsilon) (\(estimate.method.rawValue))"
                print("extreme \(label) in \(Date().timeIntervalSince(start)) s")
                XCTAssertFalse(estimate.epsilon.isNaN, label)
                XCTAssertGreaterThanOrEqual(estimate.epsilon, 0, label)
                XCTAssertLessThan(Date().timeIntervalSince(start), 10, label)
            }
        }
        // The reproduction: a tiny σ leaks almost everything, and PLD says RDP answered.
        let tiny = try epsilon(0.01, 1e-9, 1, 1e-5, .pld)
        XCTAssertEqual(tiny.method, .rdpTighter)
        XCTAssertGreaterThan(tiny.epsilon, 1e6)
        // A huge σ leaks almost nothing.
        XCTAssertLessThan(try epsilon(0.01, 1e9, 1000, 1e-5, .pld).epsilon, 1e-6)
    }

    /// Each out-of-range parameter throws `PrivacyParameterError` naming it.
    func testOutOfRangeInputsThrowNamedErrors() throws {
        let cases: [(Double, Double, Int, Double, String)] = [
            (.nan, 1, 1, 1e-5, "sampling rate"), (-0.1, 1, 1, 1e-5, "sampling rate"), (1.5, 1, 1, 1e-5, "sampling rate"),
            (.infinity, 1, 1, 1e-5, "sampling rate"), (0.1, 0, 1, 1e-5, "noise multiplier"), (0.1, -1, 1, 1e-5, "noise multiplier"),
            (0.1, .nan, 1, 1e-5, "noise multiplier"), (0.1, .infinity, 1, 1e-5, "noise multiplier"), (0.1, 1, -1, 1e-5, "steps"),
            (0.1, 1, MechanismSteps.maximumSteps + 1, 1e-5, "steps"), (0.1, 1, Int.max, 1e-5, "steps"),
            (0.1, 1, 1, 0, "delta"), (0.1, 1, 1, 1, "delta"), (0.1, 1, 1, .nan, "delta"), (0.1, 1, 1, -1e-5, "delta"),
        ]
        for (q, sigma, steps, delta, name) in cases {
            for kind in AccountantKind.allCases {
                XCTAssertThrowsError(try epsilon(q, sigma, steps, delta, kind), "\(kind) \(name)") { error in
                    let parameter = error as? PrivacyParameterError
                    XCTAssertEqual(parameter?.name, name, "\(error)")
                    XCTAssertTrue("\(error)".contains("expected"), "\(error)")
                }
            }
        }
        XCTAssertThrowsError(try RDPAccountant(orders: [0.5]))
        XCTAssertThrowsError(try RDPAccountant(orders: []))
        XCTAssertThrowsError(try RDPAccountant(orders: [.nan]))
        XCTAssertThrowsError(try PLDAccountant(discretization: 0))
        XCTAssertThrowsError(try PLDAccountant(discretization: .nan))
        XCTAssertThrowsError(try RDPAccountant().epsilon(delta: 1e-5, repetitions: -1))
        var pld = PLDAccountant()
        try pld.add(samplingRate: 0.1, noiseMultiplier: 1, steps: 10)
        XCTAssertThrowsError(try pld.delta(epsilon: .nan))
        XCTAssertThrowsError(try pld.delta(epsilon: -1))
    }

    /// Calibration and the step search: bad targets throw named errors; unreachable ones throw
    /// `NoiseCalibrationError`; extremes give an answer that meets the target.
    func testCalibrationInputs() throws {
        for kind in AccountantKind.allCases {
            for target in [Double.nan, 0, -1, .infinity] {
                XCTAssertThrowsError(try PrivacyAccounting.noiseMultiplier(targetEpsilon: target, samplingRate: 0.01, steps: 100,
                                                                           delta: 1e-5, accountant: kind)) {
                    XCTAssertEqual(($0 as? PrivacyParameterError)?.name, "target epsilon")
                }
            }
            XCTAssertThrowsError(try PrivacyAccounting.noiseMultiplier(targetEpsilon: 1, samplingRate: 2, steps: 100, delta: 1e-5,
                                                                       accountant: kind)) {
                XCTAssertEqual(($0 as? PrivacyParameterError)?.name, "sampling rate")
            }
            XCTAssertThrowsError(try PrivacyAccounting.noiseMultiplier(targetEpsilon: 1, samplingRate: 0.01, steps: -5, delta: 1e-5,
                                                                       accountant: kind)) {
                XCTAssertEqual(($0 as? PrivacyParameterError)?.name, "steps")
            }
            XCTAssertThrowsError(try PrivacyAccounting.noiseMultiplier(targetEpsilon: 1, samplingRate: 0.01, steps: 100, delta: 1e-5,
                                                                       accountant: kind, noise: .none))
            // A target no σ up to 10,000 reaches.
            XCTAssertThrowsError(try PrivacyAccounting.noiseMultiplier(targetEpsilon: 1e-9, samplingRate: 1, steps: 1000, delta: 1e-5,
                                                                       accountant: kind)) { XCTAssertTrue($0 is NoiseCalibrationError) }
            // q = 1, one step: the plain Gaussian.
            let sigma = try PrivacyAccounting.noiseMultiplier(targetEpsilon: 1, samplingRate: 1, steps: 1, delta: 1e-5, accountant: kind)
            XCTAssertLessThanOrEqual(try epsilon(1, sigma, 1, 1e-5, kind).epsilon, 1)
            XCTAssertThrowsError(try PrivacyAccounting.maximumSteps(targetEpsilon: .nan, samplingRate: 0.01, noiseMultiplier: 1, delta: 1e-5,
                                                                    accountant: kind, upTo: 10))
            XCTAssertThrowsError(try PrivacyAccounting.maximumSteps(targetEpsilon: 1, samplingRate: 0.01, noiseMultiplier: 0, delta: 1e-5,
                                                                    accountant: kind, upTo: 10))
        }
        let budget = PrivacyBudget(epsilon: 1, delta: 1e-5, accountant: .pld)
        XCTAssertThrowsError(try PrivacyPlanProjection.project(MechanismSteps(samplingRate: 0.01, noiseMultiplier: 1e-9, steps: -1),
                                                               rounds: 2, after: [], budget: budget))
        let tiny = try PrivacyPlanProjection.project(MechanismSteps(samplingRate: 0.01, noiseMultiplier: 1e-9, steps: 1),
                                                     rounds: 2, after: [], budget: budget)
        XCTAssertEqual(tiny.firstRefusedRound, 1)
    }

    /// The noise kind: decoded as `.gaussian` when absent; `.none` is ε = +∞ in both accountants (and
    /// nothing when trivial); discrete-Gaussian steps make PLD use RDP for the whole composition, at an
    /// ε at least the continuous one's.
    func testNoiseKinds() throws {
        let old = #"{"samplingRate":0.01,"noiseMultiplier":1,"steps":10}"#
        let decoded = try JSONDecoder().decode(MechanismSteps.self, from: Data(old.utf8))
        XCTAssertEqual(decoded, MechanismSteps(samplingRate: 0.01, noiseMultiplier: 1, steps: 10))
        XCTAssertEqual(decoded.noise, .gaussian)
        let discrete = MechanismSteps(samplingRate: 0.01, noiseMultiplier: 1, steps: 10, noise: .discreteGaussian)
        let roundTrip = try JSONDecoder().decode(MechanismSteps.self, from: try JSONEncoder().encode(discrete))
        XCTAssertEqual(roundTrip, discrete)
        XCTAssertTrue(String(decoding: try JSONEncoder().encode(discrete), as: UTF8.self).contains("discrete_gaussian"))

        for kind in AccountantKind.allCases {
            XCTAssertEqual(try epsilon(0.01, 0, 1, 1e-5, kind, noise: .none).epsilon, .infinity)
            XCTAssertEqual(try epsilon(0.01, 0, 1, 1e-5, kind, noise: .none).method, .noNoise)
            XCTAssertEqual(try epsilon(0, 0, 100, 1e-5, kind, noise: .none).epsilon, 0)
            XCTAssertEqual(try epsilon(0.5, 0, 0, 1e-5, kind, noise: .none).epsilon, 0)
            let mixed = [MechanismSteps(samplingRate: 0.01, noiseMultiplier: 1, steps: 100),
                         MechanismSteps(samplingRate: 0.01, noiseMultiplier: 0, steps: 1, noise: .none)]
            XCTAssertEqual(try PrivacyAccounting.epsilon(steps: mixed, delta: 1e-5, accountant: kind), .infinity)
        }
        let gaussian = MechanismSteps(samplingRate: 0.01, noiseMultiplier: 1, steps: 1000)
        var discreteSteps = gaussian
        discreteSteps.noise = .discreteGaussian
        let pld = try PrivacyAccounting.estimate(steps: [gaussian, discreteSteps], delta: 1e-5, accountant: .pld)
        XCTAssertEqual(pld.method, .rdpForDiscreteNoise)
        XCTAssertEqual(pld.epsilon, try PrivacyAccounting.epsilon(steps: [gaussian, discreteSteps], delta: 1e-5, accountant: .rdp))
        XCTAssertGreaterThanOrEqual(pld.epsilon, try PrivacyAccounting.epsilon(steps: [gaussian, gaussian], delta: 1e-5, accountant: .rdp))
        XCTAssertTrue(pld.epsilon.isFinite)
        // Fractional orders are not used for the discrete Gaussian; q = 1 is CKS's α/(2σ²) itself.
        XCTAssertEqual(RDPAccountant.rdp(discreteSteps, order: 2.5), .infinity)
        XCTAssertEqual(RDPAccountant.discreteGaussianRDP(samplingRate: 1, noiseMultiplier: 2, order: 3), 3.0 / 8)
        // Calibrating for discrete noise needs at least the continuous σ.
        let continuousSigma = try PrivacyAccounting.noiseMultiplier(targetEpsilon: 2, samplingRate: 0.01, steps: 1000, delta: 1e-5,
                                                                    accountant: .rdp)
        let discreteSigma = try PrivacyAccounting.noiseMultiplier(targetEpsilon: 2, samplingRate: 0.01, steps: 1000, delta: 1e-5,
                                                                  accountant: .pld, noise: .discreteGaussian)
        XCTAssertGreaterThanOrEqual(discreteSigma, continuousSigma)
    }

    /// The ledger composes entries with their noise kind: a file written before the field reads as
    /// Gaussian; a PLD-budget ledger holding a discrete-Gaussian entry reports the RDP composition of all
    /// entries (sound), which is at least the PLD ε of the same steps as continuous Gaussians.
    func testLedgerComposesEntriesWithTheirNoise() throws {
        let parent = try Fixtures.temporaryDirectory("ledger-noise")
        defer { try? FileManager.default.removeItem(at: parent) }
        let budget = PrivacyBudget(epsilon: 50, delta: 1e-5, accountant: .pld)
        var ledger = try PrivacyLedger(directory: parent.appendingPathComponent("state"), creatingWith: budget)
        try ledger.charge(purpose: "round:1", samplingRate: 0.01, noiseMultiplier: 1, clipNorm: 1, steps: 300)
        let continuousOnly = ledger.spentEpsilon
        try ledger.charge(MechanismSteps(samplingRate: 0.01, noiseMultiplier: 1, steps: 300, noise: .discreteGaussian), clipNorm: 1,
                          purpose: "round:2")
        let reopened = try PrivacyLedger(directory: parent.appendingPathComponent("state"))
        XCTAssertEqual(reopened.entries.map(\.noise), [.gaussian, .discreteGaussian])
        let rdp = try PrivacyAccounting.epsilon(steps: reopened.entries.map(\.mechanism), delta: 1e-5, accountant: .rdp)
        XCTAssertEqual(reopened.spentEpsilon, rdp, accuracy: 1e-12)
        let asContinuous = [MechanismSteps(samplingRate: 0.01, noiseMultiplier: 1, steps: 600)]
        XCTAssertGreaterThanOrEqual(reopened.spentEpsilon, try PrivacyAccounting.epsilon(steps: asContinuous, delta: 1e-5, accountant: .pld))
        XCTAssertGreaterThan(reopened.spentEpsilon, continuousOnly)

        // An entry without "noise", as every ledger before this field, is Gaussian.
        let text = try String(contentsOf: reopened.fileURL, encoding: .utf8)
        let stripped = text.replacingOccurrences(of: #""noise"\s*:\s*"gaussian"\s*,?"#, with: "", options: .regularExpression)
        XCTAssertNotEqual(stripped, text, "the file names the noise kind")
        let entry = try JSONDecoder().decode(PrivacyLedgerEntry.self, from: Data("""
            {"id":"\(UUID().uuidString)","purpose":"run:old","date":0,"samplingRate":0.01,"noiseMultiplier":1,"clipNorm":1,
             "steps":10,"delta":1e-5,"accountant":"rdp","cumulativeEpsilon":0.1}
            """.utf8))
        XCTAssertEqual(entry.noise, .gaussian)
    }
}
