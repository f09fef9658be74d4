import Foundation
import Privacy

extension LoRATrainer {
    /// One client's part of a distributed DP-SGD step (issue 17): Poisson-samples its units at the configured
    /// rate (libsodium), and sums each sampled unit's gradient at the current adapter, clipped to L2 norm
    /// `clipNorm` (a record alone, or a user's records in the step together, as `stepSums` does). No noise:
    /// the client adds its share on the integer grid (`DistributedRound.noisedShare`).
    /// - Returns: the clipped sum (the trainable parameters' layout), the units sampled and the summed loss
    ///   of the records that had a token to learn (the client's own log only).
    /// - Throws: `TrainingError` for a record whose loss or gradient is not finite.
    public func clippedStepSum(clipNorm: Double) throws -> (sum: [Double], units: Int, loss: Double, examples: Int) {
        precondition(clipNorm.isFinite && clipNorm > 0, "clip norm must be positive")
        let batch = DPSGDStep.poissonSample(count: units.count, rate: samplingRate)
        let count = lora.count
        var total = [Double](repeating: 0, count: count)
        var unitSum = [Float](repeating: 0, count: count)
        var single = [Float](repeating: 0, count: count)
        var loss = 0.0, examplesSeen = 0
        for unit in batch {
            for i in 0..<count { unitSum[i] = 0 }
            for index in stepRecords(ofUnit: unit) {
                let example = examples[index]
                for i in 0..<count { single[i] = 0 }
                let (recordLoss, counted) = try single.withUnsafeMutableBufferPointer { gradient in
                    try model.lossAndGradient(tokens: example.ids, labels: example.labels, lora: lora,
                                              gradient: gradient.baseAddress!, precision: model.precision)
                }
                guard counted > 0 else { continue }
                guard recordLoss.isFinite else { throw TrainingError("the loss of the record on line \(example.line) is \(recordLoss)") }
                loss += recordLoss
                examplesSeen += 1
                for i in 0..<count { unitSum[i] += single[i] }
            }
            var squared = 0.0
            for g in unitSum { squared += Double(g) * Double(g) }
            let norm = squared.squareRoot()
            guard norm.isFinite else {
                throw TrainingError("the gradient of the unit whose first record is on line \(examples[units[unit][0]].line) is not finite")
            }
            let factor = norm > clipNorm ? clipNorm / norm : 1
            for i in 0..<count { total[i] += Double(unitSum[i]) * factor }
        }
        return (total, batch.count, loss, examplesSeen)
    }
}
