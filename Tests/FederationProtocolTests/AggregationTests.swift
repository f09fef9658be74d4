import Foundation
import ModelFormats
import SystemIO
import TestSupport
import Wire
import XCTest
@testable import FederationProtocol

/// FedAdam, Reddi et al. (ICLR 2021) Algorithm 2, transcribed from the paper in plain Doubles with no
/// reference to the code under test: m₋₁ = 0, v₋₁ = τ², Δ the (weighted) mean of client deltas,
/// m ← β1 m + (1−β1) Δ, v ← β2 v + (1−β2) Δ², x ← x + η m / (√v + τ).
private struct PaperFedAdam {
    let eta: Double, beta1: Double, beta2: Double, tau: Double
    var m: [Double] = []
    var v: [Double] = []

    mutating func round(x: [Double], deltas: [[Double]], weights: [Double]) -> [Double] {
        if m.isEmpty {
            m = Array(repeating: 0, count: x.count)
            v = Array(repeating: tau * tau, count: x.count)
        }
        let total = weights.reduce(0, +)
        var out = x
        for j in x.indices {
            var delta = 0.0
            for (d, w) in zip(deltas, weights) { delta += w * d[j] }
            delta /= total
            m[j] = beta1 * m[j] + (1 - beta1) * delta
            v[j] = beta2 * v[j] + (1 - beta2) * delta * delta
            out[j] = x[j] + eta * m[j] / (v[j].squareRoot() + tau)
        }
        return out
    }
}

final class AggregationTests: XCTestCase {
    private let global: [String: [Float]] = [
        "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": [1, 2],
        "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": [0.5],
    ]
    private let a = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
    private let b = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"

    private func updates(_ weights: (Double, Double)) -> [WeightedUpdate] {
        [WeightedUpdate(client: "clinic-1", weight: weights.0, delta: [a: [0.5, -1], b: [0.25]]),
         WeightedUpdate(client: "clinic-2", weight: weights.1, delta: [a: [1.5, 1], b: [-0.75]])]
    }

    // MARK: FedAvg

    func testFedAvgEqualWeightsIsThePlainMean() throws {
        var strategy = FedAvg()
        XCTAssertEqual(strategy.name, "fedavg")
        let result = try strategy.aggregate(global: global, updates: updates((10, 10)))
        // mean Δ: a = [(0.5+1.5)/2, (−1+1)/2] = [1, 0]; b = (0.25−0.75)/2 = −0.25.
        XCTAssertEqual(result, [a: [2, 2], b: [0.25]])
    }

    func testFedAvgUnequalWeights() throws {
        var strategy = FedAvg()
        let result = try strategy.aggregate(global: global, updates: updates((1, 3)))
        // a: (1·0.5 + 3·1.5)/4 = 1.25, (1·(−1) + 3·1)/4 = 0.5; b: (1·0.25 + 3·(−0.75))/4 = −0.5.
        XCTAssertEqual(result, [a: [2.25, 2.5], b: [0]])

        // Three clients with weights 1, 2, 7 (examples) on one value: (1·0.3 + 2·(−0.6) + 7·0.9)/10 = 0.54.
        let single = ["t": [Float(0.25)]]
        let three = [WeightedUpdate(client: "x", weight: 1, delta: ["t": [0.3]]),
                     WeightedUpdate(client: "y", weight: 2, delta: ["t": [-0.6]]),
                     WeightedUpdate(client: "z", weight: 7, delta: ["t": [0.9]])]
        let mixed = try strategy.aggregate(global: single, updates: three)
        XCTAssertEqual(try XCTUnwrap(mixed["t"]?.first), 0.79, accuracy: 1e-7)
    }

    // MARK: FedAdam

    func testFedAdamFirstRoundByHand() throws {
        var strategy = try FedAdam()
        XCTAssertEqual(strategy.name, "fedadam")
        XCTAssertEqual([strategy.learningRate, strategy.beta1, strategy.beta2, strategy.tau], [0.01, 0.9, 0.99, 1e-3])
        let result = try strategy.aggregate(global: ["t": [1, 1, 1]],
                                            updates: [WeightedUpdate(client: "c", weight: 5, delta: ["t": [0.1, -0.2, 0]])])
        // Δ = 0.1: m = 0.1·0.1 = 0.01, v = 0.99·1e-6 + 0.01·0.01 = 1.0099e-4,
        //          x = 1 + 0.01·0.01/(√1.0099e-4 + 1e-3) = 1.0090502831…
        // Δ = −0.2: m = −0.02, v = 0.99e-6 + 0.01·0.04 = 4.0099e-4, x = 1 − 0.01·0.02/(0.0200247… + 0.001) = 0.9904873948…
        // Δ = 0: m = 0, x unchanged.
        let t = try XCTUnwrap(result["t"])
        XCTAssertEqual(t[0], 1.0090502831, accuracy: 1e-6)
        XCTAssertEqual(t[1], 0.9904873948, accuracy: 1e-6)
        XCTAssertEqual(t[2], 1)
        XCTAssertEqual(strategy.rounds, 1)
        XCTAssertEqual(Double(try XCTUnwrap(strategy.secondMoment["t"])[2]), 0.99e-6, accuracy: 1e-12)
    }

    func testFedAdamTwoRoundsMatchAlgorithm2() throws {
        let eta = 0.05, beta1 = 0.8, beta2 = 0.95, tau = 1e-2
        var strategy = try FedAdam(learningRate: eta, beta1: beta1, beta2: beta2, tau: tau)
        var paper = PaperFedAdam(eta: eta, beta1: beta1, beta2: beta2, tau: tau)
        var x: [String: [Float]] = ["w": [0.5, -0.25, 0.125, 2]]
        var reference: [Double] = x["w"]!.map(Double.init)
        let rounds: [[(Double, [Float])]] = [
            [(3, [0.02, -0.01, 0.0, 0.3]), (1, [-0.04, 0.05, 0.001, 0.1])],
            [(2, [0.01, 0.01, -0.02, -0.2]), (2, [0.03, -0.07, 0.0, 0.05]), (4, [-0.01, 0.02, 0.005, 0.0])],
        ]
        for (index, round) in rounds.enumerated() {
            let updates = round.enumerated().map { WeightedUpdate(client: "c\($0.offset)", weight: $0.element.0, delta: ["w": $0.element.1]) }
            x = try strategy.aggregate(global: x, updates: updates)
            reference = paper.round(x: reference, deltas: round.map { $0.1.map(Double.init) }, weights: round.map(\.0))
            let got = try XCTUnwrap(x["w"])
            for j in got.indices {
                XCTAssertEqual(Double(got[j]), reference[j], accuracy: 1e-6, "round \(index + 1), element \(j)")
            }
            // Keep the reference on the same float32 parameters the strategy hands back.
            reference = got.map(Double.init)
        }
        XCTAssertEqual(strategy.rounds, 2)
        for j in 0..<4 {
            XCTAssertEqual(Double(strategy.firstMoment["w"]![j]), paper.m[j], accuracy: 1e-7)
            XCTAssertEqual(Double(strategy.secondMoment["w"]![j]), paper.v[j], accuracy: 1e-9)
        }
    }

    func testFedAdamStateRoundTripsAndAThirdRoundAfterReloadIsIdentical() throws {
        let directory = try Fixtures.temporaryDirectory("aggregation")
        defer { try? FileManager.default.removeItem(at: directory) }
        let url = directory.appendingPathComponent("optimizer.safetensors")
        var strategy = try FedAdam(learningRate: 0.02, beta1: 0.85, beta2: 0.97, tau: 3e-3)
        var x = global
        x = try strategy.aggregate(global: x, updates: updates((2, 5)))
        x = try strategy.aggregate(global: x, updates: updates((7, 1)))
        try strategy.write(to: url)

        var status = stat()
        XCTAssertEqual(stat(url.path, &status), 0)
        XCTAssertEqual(status.st_mode & 0o777, 0o600)
        let file = try SafetensorsFile(url: url)
        XCTAssertEqual(Set(file.tensors.keys), ["m.\(a)", "v.\(a)", "m.\(b)", "v.\(b)"])
        XCTAssertEqual(file.metadata["rounds"], "2")
        XCTAssertEqual(file.metadata["learning_rate"], "0.02")

        var reloaded = try FedAdam.read(from: url)
        XCTAssertEqual(reloaded.rounds, 2)
        XCTAssertEqual([reloaded.learningRate, reloaded.beta1, reloaded.beta2, reloaded.tau], [0.02, 0.85, 0.97, 3e-3])
        XCTAssertEqual(reloaded.firstMoment, strategy.firstMoment)
        XCTAssertEqual(reloaded.secondMoment, strategy.secondMoment)

        let third = [WeightedUpdate(client: "clinic-3", weight: 4, delta: [a: [-0.3, 0.2], b: [0.05]])]
        let continued = try strategy.aggregate(global: x, updates: third)
        let resumed = try reloaded.aggregate(global: x, updates: third)
        XCTAssertEqual(continued, resumed)
        XCTAssertNotEqual(continued, x)
        XCTAssertEqual(reloaded.rounds, 3)

        // A fresh state (no round yet) round-trips too.
        try FedAdam().write(to: url)
        XCTAssertEqual(try FedAdam.read(from: url).rounds, 0)
    }

    /// The configured kind picks the strategy; FedAdam resumes the state saved beside the adapter it
    /// wrote, and starts fresh (with the configured η) where there is none.
    func testAggregationKindMakesOrResumesItsStrategy() throws {
        let directory = try Fixtures.temporaryDirectory("aggregation-kind")
        defer { try? FileManager.default.removeItem(at: directory) }
        XCTAssertEqual(try AggregationKind.fedavg.strategy(serverLearningRate: 0.5, resumingFrom: directory).name, "fedavg")
        let fresh = try XCTUnwrap(try AggregationKind.fedadam.strategy(serverLearningRate: 0.05, resumingFrom: directory) as? FedAdam)
        XCTAssertEqual([fresh.learningRate, Double(fresh.rounds)], [0.05, 0])
        XCTAssertEqual((try AggregationKind.fedadam.strategy(serverLearningRate: nil, resumingFrom: directory) as? FedAdam)?.learningRate,
                       0.01)

        var strategy: any AggregationStrategy = fresh
        _ = try strategy.aggregate(global: global, updates: updates((2, 5)))
        try strategy.writeState(into: directory)
        try FedAvg().writeState(into: directory.appendingPathComponent("nothing"))  // stateless: writes nothing
        XCTAssertFalse(FileManager.default.fileExists(atPath: directory.appendingPathComponent("nothing").path))
        let resumed = try XCTUnwrap(try AggregationKind.fedadam.strategy(serverLearningRate: 0.9, resumingFrom: directory) as? FedAdam)
        XCTAssertEqual(resumed.rounds, 1)
        XCTAssertEqual(resumed.learningRate, 0.05, "a saved state keeps its own η")
        XCTAssertEqual(resumed.firstMoment, (strategy as? FedAdam)?.firstMoment)
        XCTAssertEqual(AggregationKind.allCases.map(\.rawValue), ["fedavg", "fedadam"])
    }

    func testFedAdamStateFileIsChecked() throws {
        let directory = try Fixtures.temporaryDirectory("aggregation")
        defer { try? FileManager.default.removeItem(at: directory) }
        let url = directory.appendingPathComponent("optimizer.safetensors")
        let metadata = ["format": "conclave.fedadam.v1", "learning_rate": "0.01", "beta1": "0.9", "beta2": "0.99",
                        "tau": "0.001", "rounds": "1"]
        func refusal(_ tensors: [(name: String, shape: [Int], values: [Float])], _ metadata: [String: String]) throws -> String {
            try SafetensorsWriter.write(tensors, metadata: metadata, to: url)
            do {
                _ = try FedAdam.read(from: url)
                return "accepted"
            } catch {
                return "\(error)"
            }
        }
        XCTAssertEqual(try refusal([("m.t", [1], [0])], metadata), "\(url.path): tensor 'm.t' has no 'v.t'")
        XCTAssertEqual(try refusal([("m.t", [1], [0]), ("v.t", [2], [0, 0])], metadata),
                       "\(url.path): tensor 'm.t' has 1 values but 'v.t' has 2")
        XCTAssertEqual(try refusal([("m.t", [1], [0]), ("v.t", [1], [-1])], metadata), "\(url.path): tensor 'v.t' value 0 is negative")
        XCTAssertEqual(try refusal([("m.t", [1], [.nan]), ("v.t", [1], [0])], metadata), "\(url.path): tensor 'm.t' value 0 is nan")
        XCTAssertEqual(try refusal([("x.t", [1], [0])], metadata), "\(url.path): tensor 'x.t' is neither 'm.<name>' nor 'v.<name>'")
        XCTAssertEqual(try refusal([], metadata), "\(url.path): 1 rounds recorded but no moments")
        var bad = metadata
        bad["beta2"] = "1"
        XCTAssertEqual(try refusal([("m.t", [1], [0]), ("v.t", [1], [0])], bad), "\(url.path): metadata 'beta2' must be in [0, 1), got 1.0")
        bad = metadata
        bad["format"] = nil
        XCTAssertEqual(try refusal([], bad), "\(url.path): metadata 'format' is missing, expected 'conclave.fedadam.v1'")
    }

    func testFedAdamRefusesBadHyperparameters() {
        XCTAssertThrowsError(try FedAdam(learningRate: 0)) { error in
            XCTAssertEqual(error as? FederationError,
                           .configuration(path: "fedadam", field: "learning_rate", "must be positive and finite, got 0.0"))
        }
        XCTAssertThrowsError(try FedAdam(beta1: 1))
        XCTAssertThrowsError(try FedAdam(tau: -1))
        XCTAssertThrowsError(try FedAdam(tau: .infinity))
    }

    // MARK: Refusals

    private func refusal(_ updates: [WeightedUpdate]) -> String {
        var fedAvg = FedAvg()
        guard var fedAdam = try? FedAdam() else { return "cannot create FedAdam" }
        var messages: [String] = []
        for attempt in [{ _ = try fedAvg.aggregate(global: self.global, updates: updates) },
                        { _ = try fedAdam.aggregate(global: self.global, updates: updates) }] {
            do {
                try attempt()
                messages.append("accepted")
            } catch let error as FederationError {
                guard case .adapterShape = error else { return "wrong case: \(error)" }
                messages.append("\(error)")
            } catch {
                messages.append("unexpected error \(error)")
            }
        }
        if messages[1] != "accepted" {
            XCTAssertEqual(fedAdam.rounds, 0, "a refused round must leave the FedAdam state alone")
            XCTAssertTrue(fedAdam.firstMoment.isEmpty && fedAdam.secondMoment.isEmpty)
        }
        XCTAssertEqual(messages[0], messages[1], "FedAvg and FedAdam disagree")
        return messages[0]
    }

    func testRefusesNoUpdates() {
        XCTAssertEqual(refusal([]), "adapter shape: no updates to aggregate")
    }

    func testRefusesAMissingTensor() {
        XCTAssertEqual(refusal([WeightedUpdate(client: "clinic-1", weight: 1, delta: [a: [0, 0]])]),
                       "adapter shape: client 'clinic-1': tensor '\(b)' is missing from the update")
    }

    func testRefusesAnExtraTensor() {
        let update = WeightedUpdate(client: "clinic-1", weight: 1, delta: [a: [0, 0], b: [0], "lm_head.lora_A.weight": [1]])
        XCTAssertEqual(refusal(updates((1, 1))), "accepted")
        XCTAssertEqual(refusal([update]), "adapter shape: client 'clinic-1': tensor 'lm_head.lora_A.weight' is not in the global adapter")
    }

    func testRefusesAWrongElementCount() {
        let update = WeightedUpdate(client: "clinic-2", weight: 1, delta: [a: [0, 0, 0], b: [0]])
        XCTAssertEqual(refusal(updates((1, 1)).prefix(1) + [update]),
                       "adapter shape: client 'clinic-2': tensor '\(a)' has 3 values, the global adapter has 2")
    }

    func testRefusesNonFiniteValues() {
        for bad in [Float.nan, .infinity, -.infinity] {
            let update = WeightedUpdate(client: "clinic-2", weight: 1, delta: [a: [0, bad], b: [0]])
            XCTAssertEqual(refusal([update]), "adapter shape: client 'clinic-2': tensor '\(a)' value 1 is \(bad)")
        }
    }

    func testRefusesBadWeights() {
        for bad in [0, -3, Double.nan, .infinity] {
            let update = WeightedUpdate(client: "clinic-1", weight: bad, delta: [a: [0, 0], b: [0]])
            XCTAssertEqual(refusal([update]), "adapter shape: client 'clinic-1': weight \(bad) must be positive and finite")
        }
        XCTAssertEqual(refusal(updates((.greatestFiniteMagnitude, .greatestFiniteMagnitude))),
                       "adapter shape: the sum of the weights overflows (inf)")
    }

    func testRefusesTwoUpdatesFromOneClient() {
        let twice = [updates((1, 1))[0], updates((1, 1))[0]]
        XCTAssertEqual(refusal(twice), "adapter shape: client 'clinic-1' sent more than one update")
    }

    func testFedAdamRefusesAGlobalAdapterThatNoLongerMatchesItsMoments() throws {
        var strategy = try FedAdam()
        _ = try strategy.aggregate(global: global, updates: updates((1, 1)))
        let resized: [String: [Float]] = [a: [1, 2, 3], b: [0.5]]
        let update = WeightedUpdate(client: "clinic-1", weight: 1, delta: [a: [0, 0, 0], b: [0]])
        XCTAssertThrowsError(try strategy.aggregate(global: resized, updates: [update])) { error in
            XCTAssertEqual(error as? FederationError,
                           .adapterShape("optimizer state: tensor '\(a)' has 2 values, the global adapter has 3"))
        }
        XCTAssertEqual(strategy.rounds, 1)
    }
}
