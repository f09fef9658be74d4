@testable import FederationDemo
import FederationProtocol
import Foundation
import TestSupport
import Wire
import XCTest

/// The overrides issue 17's notes benchmark passes the demo's federation: a client-level plan's federation budget and
/// sampled cohorts, and the clients' per-round releases on a few of their held-out notes.
final class DemoOverrideTests: XCTestCase {
    /// A client-level (DP-FedAvg) plan runs only with the federation's budget, and its cohort is the coordinator's
    /// Poisson sample: the rounds' fewest clients is 2, the least secure aggregation needs, not all but one of the
    /// clients (a sample of 5 of 8 would wait for a 7th forever). Control: without the budget the policy is refused
    /// by name.
    func testAClientLevelPlanGetsTheFederationsBudgetAndSampledCohorts() throws {
        let plan = TrainingPlan(steps: 4, learningRate: 0.01, samplingRate: 0.01, noiseMultiplier: 1.5, clipNorm: 0.1, delta: 1e-5,
                                maxLength: 320, rank: 4, alpha: 8, targets: ["q_proj", "v_proj"], privacyUnit: .client,
                                noisePlacement: .distributed, clientSamplingRate: 0.75, accuracyRecords: 0)
        var demo = DemoConfiguration(clients: 8, rounds: 10, model: "/models/m.gguf", aggregation: .fedadam, canaries: 0, probe: false)
        demo.planOverride = plan
        demo.policyOverride = ClientPolicy(maxEpsilon: 1000, delta: 1e-5, maxStepsPerRound: 1000, assumeHonest: 4)
        demo.clientEpsilonBudgetOverride = 8
        let rounds = demo.coordinator.rounds
        XCTAssertEqual(rounds.clientEpsilonBudget, 8)
        XCTAssertEqual(rounds.minClients, 2)
        XCTAssertNoThrow(try rounds.validate(path: "demo"))
        XCTAssertNil(demo.clientConfiguration(0, folder: URL(fileURLWithPath: "/c")).policy.objection(to: plan, secureAggregation: true))

        demo.clientEpsilonBudgetOverride = nil
        XCTAssertThrowsError(try demo.coordinator.rounds.validate(path: "demo")) { error in
            XCTAssertTrue("\(error)".contains("client_epsilon_budget"), "\(error)")
        }
        // Other plans keep the demo's rounds, the budget ignored.
        var distributed = DemoConfiguration(clients: 8, model: "/models/m.gguf")
        distributed.clientEpsilonBudgetOverride = 8
        XCTAssertEqual(distributed.coordinator.rounds.minClients, 7)
        XCTAssertNil(distributed.coordinator.rounds.clientEpsilonBudget)
    }

    /// A benchmark's longer round timeout reaches the coordinator's rounds; without it the demo keeps its 900 s.
    func testTheRoundTimeoutOverride() {
        var demo = DemoConfiguration(clients: 8, model: "/models/m.gguf")
        XCTAssertEqual(demo.coordinator.rounds.roundTimeout, 900)
        demo.roundTimeoutOverride = 3600
        XCTAssertEqual(demo.coordinator.rounds.roundTimeout, 3600)
    }

    /// With `monitoredHeldOutOverride` a client's per-round release reads `notes.monitor.jsonl`, the first M records of
    /// its held-out notes (all of them when it has fewer); without it, all of `notes.heldout.jsonl`.
    func testTheClientsMonitorTheFirstOfTheirHeldOutNotes() throws {
        let directory = try Fixtures.temporaryDirectory("demo-monitor")
        defer { try? FileManager.default.removeItem(at: directory) }
        var demo = DemoConfiguration(model: "/models/m.gguf")
        XCTAssertEqual(demo.clientConfiguration(0, folder: directory).evalData, directory.appendingPathComponent("notes.heldout.jsonl").path)
        demo.monitoredHeldOutOverride = 3
        let monitor = directory.appendingPathComponent(Demo.monitoredHeldOutFileName)
        XCTAssertEqual(demo.clientConfiguration(0, folder: directory).evalData, monitor.path)

        let heldOut = directory.appendingPathComponent("notes.heldout.jsonl")
        let records = (1...5).map { "{\"prompt\": \"note \($0)\", \"completion\": \"a\"}" }
        try Data((records.joined(separator: "\n") + "\n").utf8).write(to: heldOut)
        try Demo.writeFirstLines(3, of: heldOut, to: monitor)
        XCTAssertEqual(try String(contentsOf: monitor, encoding: .utf8), records.prefix(3).joined(separator: "\n") + "\n")
        try Demo.writeFirstLines(9, of: heldOut, to: monitor)
        XCTAssertEqual(try String(contentsOf: monitor, encoding: .utf8), records.joined(separator: "\n") + "\n")
    }
}
