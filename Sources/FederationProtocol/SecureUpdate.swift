import Foundation
import SecureAggregation
import SecureCrypto
import SystemIO
import Wire

/// How a client's update becomes the words it masks, and how the coordinator turns the unmasked sum
/// back into FedAvg's weighted mean (see `SecureRoundSetup` for the layout of the words).
///
/// Weighting: client i contributes `wᵢ·Δᵢ` and `wᵢ`, with `wᵢ = min(nᵢ, W) / W` (nᵢ its training
/// examples, W the round's weight bound), so the coordinator learns only `Σ wᵢΔᵢ` and `Σ wᵢ`, never a
/// single client's count or delta; `Σ wᵢΔᵢ / Σ wᵢ` is the example-weighted mean of the plain rounds
/// for every client with at most W examples (larger ones weigh as W).
///
/// Scale: `wᵢΔᵢ` is clipped to ±B (B the setup's update clip) and `wᵢ` lies in (0, 1]; each is encoded
/// with the finest scale 2^f for which the cohort's n inputs sum within 31 bits (n · ⌈B·2^f⌉ ≤ 2^31 − 1,
/// `FixedPointEncoding`), so no sum of survivors can wrap and the decoded sums are exact sums of the
/// encoded integers. The decoded mean is off from the clipped plain mean by at most
/// n · 2^-f / Σ wᵢ per value (stochastic rounding, each client's error below one unit 2^-f).
public enum SecureUpdate {
    /// The default update clip B for a plan, when the policy sets none: 8 · steps · learning rate.
    /// AdamW (β1 = 0.9, β2 = 0.999, no weight decay in federated rounds) moves a parameter by at most
    /// η · (1 − β1) / √((1 − β2)(1 − β1²/β2)) ≈ 7.25 η per step (Cauchy–Schwarz on the moment sums,
    /// bias corrections included), so a client's delta stays within ±B and is never clipped.
    public static func defaultClip(plan: TrainingPlan) -> Double { 8 * Double(plan.steps) * plan.learningRate }

    /// The default weight bound W: example counts above it weigh as it.
    public static let defaultWeightBound = 10_000.0

    /// The number of words an update of `layout` takes: every parameter and the weight.
    public static func vectorLength(layout: AdapterLayout) -> Int {
        layout.shapes.values.reduce(1) { $0 + $1.reduce(1, *) }
    }

    /// A client's weight: min(examples, W) / W, in (0, 1].
    public static func weight(examples: Int, bound: Double) -> Double { min(Double(max(examples, 1)), bound) / bound }

    /// The words a client masks: `w·Δ` for every value of `delta` (tensors in name order), then `w`.
    /// - Returns: the words and how many values were clipped to ±B.
    /// - Throws: `FederationError.adapterShape` if `delta` does not have the layout's tensors, or
    ///   `SecureAggregationError.invalidEncoding` for a non-finite value.
    public static func encode(delta: AdapterTensors, examples: Int, setup: SecureRoundSetup, layout: AdapterLayout,
                              rounding: FixedPointEncoding.Rounding = .stochastic) throws -> (words: [UInt32], clipped: Int) {
        try layout.check(delta, from: "the update to mask")
        let w = weight(examples: examples, bound: setup.weightBound)
        var weighted: [Float] = []
        weighted.reserveCapacity(Int(setup.vectorLength))
        for name in delta.keys.sorted() {
            guard let values = delta[name] else { continue }
            for value in values { weighted.append(Float(w * Double(value))) }
        }
        guard weighted.count + 1 == Int(setup.vectorLength) else {
            throw FederationError.adapterShape("the update has \(weighted.count) values; the secure round expects \(setup.vectorLength - 1)")
        }
        let values = try setup.valueEncoding().encode(weighted, rounding: rounding)
        let weightWord = try setup.weightEncoding().encode([Float(w)], rounding: rounding)
        return (values.words + weightWord.words, values.clippedCount)
    }

    /// The example-weighted mean delta `Σ wΔ / Σ w` from the unmasked sum of `survivors` inputs, and `Σ w`.
    /// - Throws: `FederationError.adapterShape` for a sum of the wrong length, `SecureAggregationError`
    ///   for a survivor count the encoding cannot decode, `FederationError.round` for a zero weight.
    public static func decodeMean(sum: [UInt32], survivors: Int, setup: SecureRoundSetup,
                                  layout: AdapterLayout) throws -> (mean: AdapterTensors, totalWeight: Double) {
        guard sum.count == Int(setup.vectorLength), let weightWord = sum.last else {
            throw FederationError.adapterShape("the unmasked sum has \(sum.count) words; the round expects \(setup.vectorLength)")
        }
        let totalWeight = try setup.weightEncoding().decodeSum([weightWord], clientCount: survivors)[0]
        guard totalWeight > 0 else {
            throw FederationError.round(setup.round, "the unmasked total weight is \(totalWeight), not positive")
        }
        let values = try setup.valueEncoding().decodeSum(Array(sum.dropLast()), clientCount: survivors)
        var mean: AdapterTensors = [:]
        var offset = 0
        for name in layout.shapes.keys.sorted() {
            let count = layout.shapes[name]!.reduce(1, *)
            mean[name] = values[offset..<(offset + count)].map { Float($0 / totalWeight) }
            offset += count
        }
        guard offset == values.count else {
            throw FederationError.adapterShape("the unmasked sum has \(values.count) values; the layout has \(offset)")
        }
        return (mean, totalWeight)
    }
}
