import Foundation
import ModelFormats
import SystemIO
import Wire

/// One client's contribution to a round: its adapter minus the round's global adapter, per PEFT
/// tensor name, and its weight.
public struct WeightedUpdate: Sendable {
    /// The weight the coordinator gives every client's update: all the same. A weight from the client's
    /// record count would need the count, which is private and never travels (issue 13); the plan's
    /// expected batch q·N is the same count in disguise.
    public static let equalWeight = 1.0
    /// The client's id, as errors name it.
    public var client: String
    /// Positive and finite; the coordinator gives every client `equalWeight`.
    public var weight: Double
    /// `local − global` for every tensor of the global adapter, by PEFT tensor name.
    public var delta: [String: [Float]]

    public init(client: String, weight: Double, delta: [String: [Float]]) {
        self.client = client
        self.weight = weight
        self.delta = delta
    }
}

/// The aggregation strategies a coordinator can run, as configurations, invitations and audit
/// records spell them.
public enum AggregationKind: String, Codable, Sendable, CaseIterable {
    case fedavg
    case fedadam

    /// The strategy of this kind, resuming the state saved beside the adapter in `directory` (by
    /// `AggregationStrategy.writeState(into:)`) when there is one.
    /// - Parameter serverLearningRate: FedAdam's η for a fresh state (default 0.01); FedAvg has none.
    /// - Throws: `FederationError.state` for a saved state that cannot be read, `.configuration` for a bad η.
    public func strategy(serverLearningRate: Double?, resumingFrom directory: URL) throws -> any AggregationStrategy {
        switch self {
        case .fedavg:
            return FedAvg()
        case .fedadam:
            let state = directory.appendingPathComponent(FedAdam.stateFileName)
            return FileManager.default.fileExists(atPath: state.path)
                ? try FedAdam.read(from: state) : try FedAdam(learningRate: serverLearningRate ?? 0.01)
        }
    }
}

/// Turns a round's updates into the next global adapter (Flower's "strategy", aggregation half).
public protocol AggregationStrategy: Sendable {
    /// What the audit record calls it: "fedavg" or "fedadam".
    var name: String { get }
    /// The next global adapter. Throws `FederationError.adapterShape` naming the client and tensor
    /// when an update does not match `global`; on a throw the strategy's state is unchanged.
    mutating func aggregate(global: [String: [Float]], updates: [WeightedUpdate]) throws -> [String: [Float]]
    /// Saves the state the next round continues from beside the adapter written to `directory`
    /// (nothing for a stateless strategy).
    func writeState(into directory: URL) throws
}

extension AggregationStrategy {
    public func writeState(into directory: URL) throws {}
}

/// Federated averaging (McMahan et al., 2017): new = global + Σ wᵢ Δᵢ / Σ wᵢ.
public struct FedAvg: AggregationStrategy {
    public var name: String { "fedavg" }

    public init() {}

    public mutating func aggregate(global: [String: [Float]], updates: [WeightedUpdate]) throws -> [String: [Float]] {
        let mean = try weightedMeanDelta(global: global, updates: updates)
        var result: [String: [Float]] = [:]
        for (name, values) in global {
            let delta = mean[name]!  // weightedMeanDelta returns every global tensor
            result[name] = try finite((0..<values.count).map { Float(Double(values[$0]) + delta[$0]) }, tensor: name)
        }
        return result
    }
}

/// FedAdam: Reddi et al., "Adaptive Federated Optimization", ICLR 2021, Algorithm 2 (the Adam
/// variant). Each round, with Δ the weighted mean of the clients' deltas:
///
///     m ← β1·m + (1 − β1)·Δ
///     v ← β2·v + (1 − β2)·Δ²
///     x ← x + η·m / (√v + τ)
///
/// As in the paper there is no bias correction (no division by 1 − βᵗ): τ bounds the step instead.
/// The paper initialises m₋₁ = 0 and requires v₋₁ ≥ τ²; we start v at τ² exactly. The paper
/// averages deltas uniformly, and so does the coordinator (every update has `WeightedUpdate.equalWeight`).
///
/// m and v persist across rounds (`write(to:)`, `read(from:)`), so a coordinator restart changes nothing.
public struct FedAdam: AggregationStrategy {
    public var name: String { "fedadam" }

    /// Server learning rate η.
    public let learningRate: Double
    /// Decay of the first moment, β1.
    public let beta1: Double
    /// Decay of the second moment, β2.
    public let beta2: Double
    /// Degree of adaptivity τ (Adam's ε): the smaller, the more adaptive.
    public let tau: Double
    /// Rounds aggregated so far.
    public private(set) var rounds: UInt64

    /// First moment m per tensor; empty before the first round.
    private(set) var firstMoment: [String: [Float]]
    /// Second moment v per tensor; empty before the first round.
    private(set) var secondMoment: [String: [Float]]

    /// Defaults: the paper keeps β1 = 0.9 and β2 = 0.99 fixed in its experiments and tunes the server
    /// learning rate η and the adaptivity τ over grids of powers of ten (Section 5, Appendix D);
    /// η = 10⁻² and τ = 10⁻³ are points of those grids.
    /// - Throws: `FederationError.configuration` naming the first parameter out of range.
    public init(learningRate: Double = 0.01, beta1: Double = 0.9, beta2: Double = 0.99, tau: Double = 1e-3) throws {
        try Self.validate(learningRate: learningRate, beta1: beta1, beta2: beta2, tau: tau, source: "fedadam")
        self.learningRate = learningRate
        self.beta1 = beta1
        self.beta2 = beta2
        self.tau = tau
        self.rounds = 0
        self.firstMoment = [:]
        self.secondMoment = [:]
    }

    private static func validate(learningRate: Double, beta1: Double, beta2: Double, tau: Double, source: String) throws {
        func check(_ ok: Bool, _ field: String, _ reason: String) throws {
            if !ok { throw FederationError.configuration(path: source, field: field, reason) }
        }
        try check(learningRate.isFinite && learningRate > 0, "learning_rate", "must be positive and finite, got \(learningRate)")
        try check(beta1 >= 0 && beta1 < 1, "beta1", "must be in [0, 1), got \(beta1)")
        try check(beta2 >= 0 && beta2 < 1, "beta2", "must be in [0, 1), got \(beta2)")
        try check(tau.isFinite && tau > 0, "tau", "must be positive and finite, got \(tau)")
    }

    public mutating func aggregate(global: [String: [Float]], updates: [WeightedUpdate]) throws -> [String: [Float]] {
        let mean = try weightedMeanDelta(global: global, updates: updates)
        if rounds > 0 {
            for (name, values) in global {
                guard let m = firstMoment[name], let v = secondMoment[name] else {
                    throw FederationError.adapterShape("optimizer state has no moments for tensor '\(name)' of the global adapter")
                }
                guard m.count == values.count, v.count == values.count else {
                    throw FederationError.adapterShape(
                        "optimizer state: tensor '\(name)' has \(m.count) values, the global adapter has \(values.count)")
                }
            }
            if let extra = firstMoment.keys.sorted().first(where: { global[$0] == nil }) {
                throw FederationError.adapterShape("optimizer state has moments for tensor '\(extra)', which the global adapter lacks")
            }
        }
        var result: [String: [Float]] = [:]
        var nextM: [String: [Float]] = [:]
        var nextV: [String: [Float]] = [:]
        for (name, x) in global {
            let delta = mean[name]!  // weightedMeanDelta returns every global tensor
            let m = rounds > 0 ? firstMoment[name]! : [Float](repeating: 0, count: x.count)
            let v = rounds > 0 ? secondMoment[name]! : [Float](repeating: Float(tau * tau), count: x.count)
            var outM = [Float](repeating: 0, count: x.count)
            var outV = [Float](repeating: 0, count: x.count)
            var outX = [Float](repeating: 0, count: x.count)
            for j in 0..<x.count {
                let d = delta[j]
                let mj = beta1 * Double(m[j]) + (1 - beta1) * d
                let vj = beta2 * Double(v[j]) + (1 - beta2) * d * d
                outM[j] = Float(mj)
                outV[j] = Float(vj)
                outX[j] = Float(Double(x[j]) + learningRate * mj / (vj.squareRoot() + tau))
            }
            nextM[name] = try finite(outM, tensor: "m.\(name)")
            nextV[name] = try finite(outV, tensor: "v.\(name)")
            result[name] = try finite(outX, tensor: name)
        }
        firstMoment = nextM
        secondMoment = nextV
        rounds += 1
        return result
    }

    static let format = "conclave.fedadam.v1"
    /// The state's file in an adapter directory.
    public static let stateFileName = "fedadam.safetensors"

    public func writeState(into directory: URL) throws {
        try write(to: directory.appendingPathComponent(Self.stateFileName))
    }

    /// Writes m and v (tensors `m.<name>`, `v.<name>`, float32) and η, β1, β2, τ and the round count
    /// (metadata) to a safetensors file, atomically and readable only by its owner.
    public func write(to url: URL) throws {
        var tensors: [(name: String, shape: [Int], values: [Float])] = []
        for (name, m) in firstMoment {
            tensors.append(("m.\(name)", [m.count], m))
            if let v = secondMoment[name] { tensors.append(("v.\(name)", [v.count], v)) }
        }
        let metadata = ["format": Self.format, "learning_rate": "\(learningRate)", "beta1": "\(beta1)",
                        "beta2": "\(beta2)", "tau": "\(tau)", "rounds": "\(rounds)"]
        do {
            try writeFileAtomically(try SafetensorsWriter.encode(tensors, metadata: metadata), to: url, permissions: 0o600)
        } catch {
            throw FederationError.state(path: url.path, "cannot write the FedAdam state: \(error)")
        }
    }

    /// Reads a state written by `write(to:)`, checking every field and tensor.
    /// - Throws: `FederationError.state` naming the file and what is wrong with it.
    public static func read(from url: URL) throws -> FedAdam {
        func fail(_ reason: String) -> FederationError { .state(path: url.path, reason) }
        let file: SafetensorsFile
        do { file = try SafetensorsFile(url: url) } catch { throw fail("cannot read the FedAdam state: \(error)") }
        let metadata = file.metadata
        guard metadata["format"] == format else {
            throw fail("metadata 'format' is \(metadata["format"].map { "'\($0)'" } ?? "missing"), expected '\(format)'")
        }
        func number(_ key: String) throws -> Double {
            guard let text = metadata[key], let value = Double(text) else {
                throw fail("metadata '\(key)' is \(metadata[key].map { "'\($0)'" } ?? "missing"), expected a number")
            }
            return value
        }
        var state = try FedAdam(learningRate: number("learning_rate"), beta1: number("beta1"), beta2: number("beta2"),
                                tau: number("tau"), validatingAs: url.path)
        guard let roundsText = metadata["rounds"], let rounds = UInt64(roundsText) else {
            throw fail("metadata 'rounds' is \(metadata["rounds"].map { "'\($0)'" } ?? "missing"), expected a round count")
        }
        var m: [String: [Float]] = [:]
        var v: [String: [Float]] = [:]
        for (key, info) in file.tensors {
            guard info.dtype == .F32 else { throw fail("tensor '\(key)' is \(info.dtype.rawValue), expected F32") }
            let values = try file.floats(key)
            if let bad = values.firstIndex(where: { !$0.isFinite }) {
                throw fail("tensor '\(key)' value \(bad) is \(values[bad])")
            }
            if key.hasPrefix("m.") {
                m[String(key.dropFirst(2))] = values
            } else if key.hasPrefix("v.") {
                if let bad = values.firstIndex(where: { $0 < 0 }) { throw fail("tensor '\(key)' value \(bad) is negative") }
                v[String(key.dropFirst(2))] = values
            } else {
                throw fail("tensor '\(key)' is neither 'm.<name>' nor 'v.<name>'")
            }
        }
        for name in Set(m.keys).union(v.keys).sorted() {
            guard let first = m[name] else { throw fail("tensor 'v.\(name)' has no 'm.\(name)'") }
            guard let second = v[name] else { throw fail("tensor 'm.\(name)' has no 'v.\(name)'") }
            guard first.count == second.count else {
                throw fail("tensor 'm.\(name)' has \(first.count) values but 'v.\(name)' has \(second.count)")
            }
        }
        guard (rounds == 0) == m.isEmpty else {
            throw fail(rounds == 0 ? "no rounds recorded but moments are present" : "\(rounds) rounds recorded but no moments")
        }
        state.rounds = rounds
        state.firstMoment = m
        state.secondMoment = v
        return state
    }

    /// The hyperparameters read from a file, checked with errors that name the file.
    private init(learningRate: Double, beta1: Double, beta2: Double, tau: Double, validatingAs path: String) throws {
        do {
            try self.init(learningRate: learningRate, beta1: beta1, beta2: beta2, tau: tau)
        } catch let FederationError.configuration(_, field, reason) {
            throw FederationError.state(path: path, "metadata '\(field)' \(reason)")
        }
    }
}

/// Checks every update against the global adapter, then returns Σ wᵢ Δᵢ / Σ wᵢ per tensor,
/// accumulated in Double (weights normalised first, so no product can overflow).
func weightedMeanDelta(global: [String: [Float]], updates: [WeightedUpdate]) throws -> [String: [Double]] {
    try checkUpdates(global: global, updates: updates)
    let names = global.keys.sorted()
    let total = updates.reduce(0.0) { $0 + $1.weight }
    guard total.isFinite else { throw FederationError.adapterShape("the sum of the weights overflows (\(total))") }
    var mean: [String: [Double]] = [:]
    for name in names {
        var sum = [Double](repeating: 0, count: global[name]!.count)
        for update in updates {
            let share = update.weight / total
            let delta = update.delta[name]!
            for j in 0..<sum.count { sum[j] += share * Double(delta[j]) }
        }
        mean[name] = sum
    }
    return mean
}

/// Throws `FederationError.adapterShape` naming the client and tensor for the first update that is not
/// one per client, of positive finite weight, with exactly the global adapter's tensors and finite values.
func checkUpdates(global: [String: [Float]], updates: [WeightedUpdate]) throws {
    guard !updates.isEmpty else { throw FederationError.adapterShape("no updates to aggregate") }
    let names = global.keys.sorted()
    var seen = Set<String>()
    for update in updates {
        let client = "client '\(update.client)'"
        guard seen.insert(update.client).inserted else {
            throw FederationError.adapterShape("\(client) sent more than one update")
        }
        guard update.weight.isFinite && update.weight > 0 else {
            throw FederationError.adapterShape("\(client): weight \(update.weight) must be positive and finite")
        }
        for name in names {
            guard let delta = update.delta[name] else {
                throw FederationError.adapterShape("\(client): tensor '\(name)' is missing from the update")
            }
            let expected = global[name]!.count
            guard delta.count == expected else {
                throw FederationError.adapterShape(
                    "\(client): tensor '\(name)' has \(delta.count) values, the global adapter has \(expected)")
            }
            if let bad = delta.firstIndex(where: { !$0.isFinite }) {
                throw FederationError.adapterShape("\(client): tensor '\(name)' value \(bad) is \(delta[bad])")
            }
        }
        if let extra = update.delta.keys.sorted().first(where: { global[$0] == nil }) {
            throw FederationError.adapterShape("\(client): tensor '\(extra)' is not in the global adapter")
        }
    }
}

/// `values` if all are finite, else an error naming the tensor (the aggregate left Float's range).
private func finite(_ values: [Float], tensor: String) throws -> [Float] {
    if let bad = values.firstIndex(where: { !$0.isFinite }) {
        throw FederationError.adapterShape("aggregate of tensor '\(tensor)' value \(bad) is \(values[bad]) (outside float32 range)")
    }
    return values
}
