import Audit
@testable import CoordinatorService
import FederationProtocol
import Foundation
import SystemIO
import TestSupport
import Wire
import XCTest

/// A test case over one coordinator state directory made by `init` (in a fresh temporary directory,
/// removed after each test) and a one-client plain configuration on the tiny model, for tests of what
/// `serve` does with the state it finds at start.
class CoordinatorStateTestCase: XCTestCase {
    var directory: URL!
    var paths: CoordinatorPaths!
    var configuration: CoordinatorConfiguration!

    /// The temporary directory's label and the federation's name; subclasses name their own.
    class var stateLabel: String { "coordinator-state" }

    override func setUpWithError() throws {
        directory = try Fixtures.temporaryDirectory(Self.stateLabel)
        paths = CoordinatorPaths(root: directory.appendingPathComponent("coordinator"))
        try CoordinatorSetup.initialize(paths: paths, name: Self.stateLabel, host: "127.0.0.1", port: 1, validityDays: 30)
        let plan = TrainingPlan(steps: 2, learningRate: 0.01, samplingRate: 0.25, noiseMultiplier: 1.0, clipNorm: 1.0,
                                delta: 1e-5, maxLength: 64, rank: 2, alpha: 4, targets: ["q_proj", "v_proj"])
        configuration = CoordinatorConfiguration(
            model: Fixtures.url("tiny-llama").path, listen: "127.0.0.1",
            rounds: RoundPolicy(minClients: 1, maxClients: 1, fraction: 1.0, aggregation: .fedavg, secureAggregation: false,
                                inviteTimeout: 20, roundTimeout: 60, waitForClients: 30, plan: plan))
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: directory)
    }

    /// `serve`'s server over the state directory, logging to `serve.log` beside it.
    func start() throws -> CoordinatorServer {
        try CoordinatorServer(paths: paths, configuration: configuration,
                              log: OperatorLog(url: directory.appendingPathComponent("serve.log")))
    }
}
