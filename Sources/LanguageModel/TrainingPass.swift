import Foundation
import Kernels

/// Scratch memory for one training pass, released all at once.
final class Arena {
    private var blocks: [UnsafeMutablePointer<Float>] = []

    /// `count` floats that live as long as the arena: zeroed, or (`zeroed: false`, for buffers written
    /// whole before they are read) left as they come.
    func floats(_ count: Int, zeroed: Bool = true) -> UnsafeMutablePointer<Float> {
        let pointer = UnsafeMutablePointer<Float>.allocate(capacity: max(count, 1))
        if zeroed { pointer.initialize(repeating: 0, count: max(count, 1)) }
        blocks.append(pointer)
        return pointer
    }

    deinit { blocks.forEach { $0.deallocate() } }
}

/// What the forward pass keeps of one layer for the backward pass. Shapes in comments.
struct LayerActivations {
    var input: UnsafeMutablePointer<Float>        // (n, d) residual stream entering the layer
    var attentionIn: UnsafeMutablePointer<Float>  // (n, d) RMSNorm(input)·w
    var q: UnsafeMutablePointer<Float>            // (n, heads·hd) after RoPE
    var k: UnsafeMutablePointer<Float>            // (n, kvHeads·hd) after RoPE
    var v: UnsafeMutablePointer<Float>            // (n, kvHeads·hd)
    var probabilities: UnsafeMutablePointer<Float> // (heads, n, n) causal softmax; entries above the diagonal unset
    var attention: UnsafeMutablePointer<Float>    // (n, heads·hd) input of o_proj
    var middle: UnsafeMutablePointer<Float>       // (n, d) residual after attention
    var feedForwardIn: UnsafeMutablePointer<Float> // (n, d) RMSNorm(middle)·w
    var gate: UnsafeMutablePointer<Float>         // (n, ff) before SiLU
    var up: UnsafeMutablePointer<Float>           // (n, ff)
    var activated: UnsafeMutablePointer<Float>    // (n, ff) SiLU(gate)·up, input of down_proj
    var loraHidden: [ProjectionModule: UnsafeMutablePointer<Float>] // (n, rank) = A·x per adapted module
}

extension LlamaModel {
    /// The mean next-token loss of one sequence over its counted tokens, and `weight` times its gradient
    /// with respect to the LoRA parameters added into `gradient` (which has `lora.count` entries).
    ///
    /// The base weights stay frozen in their stored (possibly quantized) form; no float32 copy is made.
    /// Labels follow HF: position t is scored against labels[t + 1]; −100 is not counted.
    /// - Parameter precision: `.int8` multiplies quantized base matrices with int8 activations both ways
    ///   (forward, and backward through transposed Q8_0 copies), as QLoRA computes its frozen base in
    ///   bf16; `.float32` (the default) is exact and is what the reference gradients are checked with.
    /// - Returns: the mean loss (NaN when no token counts, and then nothing is added) and the count.
    public func lossAndGradient(tokens: [Int], labels: [Int], lora: TrainableLoRA,
                                gradient: UnsafeMutablePointer<Float>, weight: Float = 1,
                                precision: ActivationPrecision = .float32) throws
        -> (loss: Double, countedTokens: Int) {
        let c = configuration
        let n = tokens.count
        // Thrown, not a precondition: this module builds with -Ounchecked, which drops preconditions.
        guard labels.count == n else { throw LanguageModelError.labelsMismatch(tokens: n, labels: labels.count) }
        guard n <= c.maxPositionEmbeddings else {
            throw LanguageModelError.contextTooLong(tokens: n, maximum: c.maxPositionEmbeddings)
        }
        for token in tokens where token < 0 || token >= c.vocabSize {
            throw LanguageModelError.tokenOutOfRange(token: token, vocabularySize: c.vocabSize)
        }
        let counted = (0..<max(0, n - 1)).filter { labels[$0 + 1] != -100 }
        for t in counted where labels[t + 1] < 0 || labels[t + 1] >= c.vocabSize {
            throw LanguageModelError.tokenOutOfRange(token: labels[t + 1], vocabularySize: c.vocabSize)
        }
        guard !counted.isEmpty else { return (.nan, 0) }

        let d = c.hiddenSize, hd = c.headDim, heads = c.numAttentionHeads, kvHeads = c.numKeyValueHeads
        let qWidth = heads * hd, kvWidth = kvHeads * hd, ff = c.intermediateSize, r = lora.rank
        let eps = Float(c.rmsNormEps)
        let arena = Arena()
        let positions = Array(0..<n)
        let scaling = lora.scaling

        return try lora.parameters.withUnsafeBufferPointer { parameterBuffer in
            let theta = parameterBuffer.baseAddress!

            // y (n, out) += s·B(A x) for an adapted projection, keeping A x for the backward pass.
            func loraForward(_ slot: LoRASlot, input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>)
                -> UnsafeMutablePointer<Float> {
                let hidden = arena.floats(n * r, zeroed: false)
                LoRAKernels.forward(a: theta + slot.aOffset, b: theta + slot.bOffset, rank: r, inFeatures: slot.inFeatures,
                                    outFeatures: slot.outFeatures, scaling: scaling, input: input, tokens: n,
                                    hidden: hidden, output: output, scratch: arena.floats(r * slot.outFeatures, zeroed: false),
                                    pool: pool)
                return hidden
            }

            // Projections reading the same input run together (q, k, v; gate, up): in int8 on a VNNI CPU
            // they are one stacked product on the row-grouped copies inference uses too.
            func project(_ targets: [(module: ProjectionModule, output: UnsafeMutablePointer<Float>)], layer: Int,
                         input: UnsafePointer<Float>, hidden: inout [ProjectionModule: UnsafeMutablePointer<Float>]) {
                trainingProducts(targets, layer: layer, input: input, tokens: n, precision: precision)
                for (module, output) in targets {
                    if let slot = lora.slot(layer: layer, module: module) {
                        hidden[module] = loraForward(slot, input: input, output: output)
                    }
                }
            }

            // Forward, keeping activations.
            var x = arena.floats(n * d)
            for t in 0..<n { weights.embedding.dequantizedRow(tokens[t], into: x + t * d) }
            var saved: [LayerActivations] = []
            let frequencies = inverseFrequencies
            for layer in 0..<c.numHiddenLayers {
                let lw = weights.layers[layer]
                // Every buffer is written whole before it is read (probabilities: their causal half, the only part read).
                func written(_ count: Int) -> UnsafeMutablePointer<Float> { arena.floats(count, zeroed: false) }
                var a = LayerActivations(
                    input: x, attentionIn: written(n * d), q: written(n * qWidth), k: written(n * kvWidth),
                    v: written(n * kvWidth), probabilities: written(heads * n * n),
                    attention: written(n * qWidth), middle: written(n * d), feedForwardIn: written(n * d),
                    gate: written(n * ff), up: written(n * ff), activated: written(n * ff), loraHidden: [:])
                lw.attentionNorm.withUnsafeBufferPointer {
                    RMSNorm.forward(a.input, weight: $0.baseAddress!, tokens: n, width: d, eps: eps, out: a.attentionIn)
                }
                project([(.qProj, a.q), (.kProj, a.k), (.vProj, a.v)], layer: layer, input: a.attentionIn,
                        hidden: &a.loraHidden)
                positions.withUnsafeBufferPointer { p in
                    frequencies.withUnsafeBufferPointer { f in
                        RoPE.apply(a.q, tokens: n, heads: heads, headDimension: hd, positions: p.baseAddress!,
                                   inverseFrequencies: f.baseAddress!, layout: weights.ropeLayout)
                        RoPE.apply(a.k, tokens: n, heads: kvHeads, headDimension: hd, positions: p.baseAddress!,
                                   inverseFrequencies: f.baseAddress!, layout: weights.ropeLayout)
                    }
                }
                TrainingAttention.forward(q: a.q, k: a.k, v: a.v, tokens: n, heads: heads, kvHeads: kvHeads,
                                          headDimension: hd, probabilities: a.probabilities, output: a.attention, pool: pool)
                let projected = arena.floats(n * d, zeroed: false)
                project([(.oProj, projected)], layer: layer, input: a.attention, hidden: &a.loraHidden)
                for i in 0..<(n * d) { a.middle[i] = a.input[i] + projected[i] }
                lw.feedForwardNorm.withUnsafeBufferPointer {
                    RMSNorm.forward(a.middle, weight: $0.baseAddress!, tokens: n, width: d, eps: eps, out: a.feedForwardIn)
                }
                project([(.gateProj, a.gate), (.upProj, a.up)], layer: layer, input: a.feedForwardIn,
                        hidden: &a.loraHidden)
                Activation.swiglu(gate: a.gate, up: a.up, out: a.activated, n * ff)
                let down = arena.floats(n * d, zeroed: false)
                project([(.downProj, down)], layer: layer, input: a.activated, hidden: &a.loraHidden)
                let next = arena.floats(n * d, zeroed: false)
                for i in 0..<(n * d) { next[i] = a.middle[i] + down[i] }
                saved.append(a)
                x = next
            }

            // Output head and loss; dlogits = (softmax − onehot)/count, pushed straight back to dFinal.
            let finalIn = arena.floats(n * d)
            weights.finalNorm.withUnsafeBufferPointer {
                RMSNorm.forward(x, weight: $0.baseAddress!, tokens: n, width: d, eps: eps, out: finalIn)
            }
            let vocabulary = c.vocabSize
            let dFinalIn = arena.floats(n * d)
            let chunk = 32
            let rowsIn = arena.floats(chunk * d, zeroed: false), logits = arena.floats(chunk * vocabulary, zeroed: false)
            let rowsOut = arena.floats(chunk * d, zeroed: false)
            let rowLosses = UnsafeMutablePointer<Double>.allocate(capacity: chunk)
            defer { rowLosses.deallocate() }
            var totalLoss = 0.0
            let inverseCount = 1 / Float(counted.count)
            var index = 0
            while index < counted.count {
                let rows = Array(counted[index..<min(index + chunk, counted.count)])
                for (i, t) in rows.enumerated() { (rowsIn + i * d).update(from: finalIn + t * d, count: d) }
                forwardThrough(weights.output, key: "output", input: rowsIn, tokens: rows.count, output: logits, precision: precision)
                let rowLabels = rows.map { labels[$0 + 1] }
                rowLabels.withUnsafeBufferPointer { rowLabels in
                    nonisolated(unsafe) let rowLabels = rowLabels, logits = logits, rowLosses = rowLosses
                    pool.parallelFor(rowLabels.count) { range in
                        for i in range {
                            rowLosses[i] = Activation.crossEntropyGradient(logits + i * vocabulary, vocabulary,
                                                                           label: rowLabels[i], scale: inverseCount)
                        }
                    }
                }
                for i in 0..<rows.count { totalLoss += rowLosses[i] }
                backwardThrough(weights.output, key: "output", gradOutput: logits, tokens: rows.count, gradInput: rowsOut,
                                accumulate: false, precision: precision)
                for (i, t) in rows.enumerated() { (dFinalIn + t * d).update(from: rowsOut + i * d, count: d) }
                index += chunk
            }
            var dx = arena.floats(n * d)
            weights.finalNorm.withUnsafeBufferPointer {
                RMSNorm.backward(x, weight: $0.baseAddress!, gradOutput: dFinalIn, tokens: n, width: d, eps: eps, gradInput: dx)
            }

            // LoRA backward for one projection: accumulates weight·∂L/∂A, weight·∂L/∂B, and ∂L/∂x into dInput.
            func loraBackward(_ slot: LoRASlot, input: UnsafePointer<Float>, hidden: UnsafePointer<Float>,
                              gradOutput: UnsafePointer<Float>, gradInput: UnsafeMutablePointer<Float>) {
                LoRAKernels.backward(a: theta + slot.aOffset, b: theta + slot.bOffset, rank: r, inFeatures: slot.inFeatures,
                                     outFeatures: slot.outFeatures, scaling: scaling, weight: weight, input: input,
                                     hidden: hidden, gradOutput: gradOutput, tokens: n,
                                     gradA: gradient + slot.aOffset, gradB: gradient + slot.bOffset, gradInput: gradInput,
                                     scratch: loraScratch, pool: pool)
            }

            func projectBackward(_ module: ProjectionModule, layer: Int, input: UnsafePointer<Float>,
                                 hidden: [ProjectionModule: UnsafeMutablePointer<Float>],
                                 gradOutput: UnsafePointer<Float>, gradInput: UnsafeMutablePointer<Float>) {
                backwardThrough(weights.layers[layer].projection(module), key: "\(layer).\(module.rawValue)",
                                gradOutput: gradOutput, tokens: n, gradInput: gradInput, accumulate: true, precision: precision)
                if let slot = lora.slot(layer: layer, module: module), let u = hidden[module] {
                    loraBackward(slot, input: input, hidden: u, gradOutput: gradOutput, gradInput: gradInput)
                }
            }

            // Backward through the layers; dx is ∂L/∂(layer output).
            let dActivated = arena.floats(n * ff)
            let dGate = arena.floats(n * ff, zeroed: false), dUp = arena.floats(n * ff, zeroed: false)
            let dFeedForwardIn = arena.floats(n * d), dAttention = arena.floats(n * qWidth)
            let dQ = arena.floats(n * qWidth, zeroed: false), dK = arena.floats(n * kvWidth, zeroed: false)
            let dV = arena.floats(n * kvWidth, zeroed: false)
            let attentionScratch = arena.floats(TrainingAttention.backwardScratch(tokens: n, heads: heads), zeroed: false)
            let dAttentionIn = arena.floats(n * d)
            let loraScratch = arena.floats(LoRAKernels.backwardScratch(rank: r, tokens: n, widest: max(d, qWidth, ff)),
                                           zeroed: false)
            for layer in stride(from: c.numHiddenLayers - 1, through: 0, by: -1) {
                let a = saved[layer], lw = weights.layers[layer]
                dActivated.initialize(repeating: 0, count: n * ff)
                projectBackward(.downProj, layer: layer, input: a.activated, hidden: a.loraHidden, gradOutput: dx, gradInput: dActivated)
                Activation.swigluBackward(gate: a.gate, up: a.up, gradOutput: dActivated, gradGate: dGate, gradUp: dUp, n * ff)
                dFeedForwardIn.initialize(repeating: 0, count: n * d)
                projectBackward(.gateProj, layer: layer, input: a.feedForwardIn, hidden: a.loraHidden, gradOutput: dGate, gradInput: dFeedForwardIn)
                projectBackward(.upProj, layer: layer, input: a.feedForwardIn, hidden: a.loraHidden, gradOutput: dUp, gradInput: dFeedForwardIn)
                let dMiddle = arena.floats(n * d, zeroed: false)
                dMiddle.update(from: dx, count: n * d)
                lw.feedForwardNorm.withUnsafeBufferPointer {
                    RMSNorm.backward(a.middle, weight: $0.baseAddress!, gradOutput: dFeedForwardIn, tokens: n, width: d,
                                     eps: eps, gradInput: dMiddle)
                }
                dAttention.initialize(repeating: 0, count: n * qWidth)
                projectBackward(.oProj, layer: layer, input: a.attention, hidden: a.loraHidden, gradOutput: dMiddle, gradInput: dAttention)
                TrainingAttention.backward(q: a.q, k: a.k, v: a.v, probabilities: a.probabilities, gradOutput: dAttention,
                                           tokens: n, heads: heads, kvHeads: kvHeads, headDimension: hd,
                                           gradQ: dQ, gradK: dK, gradV: dV, scratch: attentionScratch, pool: pool)
                positions.withUnsafeBufferPointer { p in
                    frequencies.withUnsafeBufferPointer { f in
                        RoPE.apply(dQ, tokens: n, heads: heads, headDimension: hd, positions: p.baseAddress!,
                                   inverseFrequencies: f.baseAddress!, layout: weights.ropeLayout, inverse: true)
                        RoPE.apply(dK, tokens: n, heads: kvHeads, headDimension: hd, positions: p.baseAddress!,
                                   inverseFrequencies: f.baseAddress!, layout: weights.ropeLayout, inverse: true)
                    }
                }
                dAttentionIn.initialize(repeating: 0, count: n * d)
                projectBackward(.qProj, layer: layer, input: a.attentionIn, hidden: a.loraHidden, gradOutput: dQ, gradInput: dAttentionIn)
                projectBackward(.kProj, layer: layer, input: a.attentionIn, hidden: a.loraHidden, gradOutput: dK, gradInput: dAttentionIn)
                projectBackward(.vProj, layer: layer, input: a.attentionIn, hidden: a.loraHidden, gradOutput: dV, gradInput: dAttentionIn)
                let dInput = arena.floats(n * d, zeroed: false)
                dInput.update(from: dMiddle, count: n * d)
                lw.attentionNorm.withUnsafeBufferPointer {
                    RMSNorm.backward(a.input, weight: $0.baseAddress!, gradOutput: dAttentionIn, tokens: n, width: d,
                                     eps: eps, gradInput: dInput)
                }
                dx = dInput
            }
            return (totalLoss / Double(counted.count), counted.count)
        }
    }
}

/// Causal attention that keeps its probabilities, and its backward pass.
enum TrainingAttention {
    static func forward(q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>, tokens n: Int,
                        heads: Int, kvHeads: Int, headDimension hd: Int, probabilities: UnsafeMutablePointer<Float>,
                        output: UnsafeMutablePointer<Float>, pool: ThreadPool) {
        let group = heads / kvHeads, qWidth = heads * hd, kvWidth = kvHeads * hd
        let scale = 1 / Float(hd).squareRoot()
        nonisolated(unsafe) let q = q, k = k, v = v, probabilities = probabilities, output = output
        pool.parallelFor(heads * n, minimumChunk: 4) { range in
            for task in range {
                let head = task / n, t = task % n, kvHead = head / group
                let p = probabilities + (head * n + t) * n
                let query = q + t * qWidth + head * hd
                Vector.dotRows(query, rows: k + kvHead * hd, stride: kvWidth, count: t + 1, width: hd, scale: scale, into: p)
                Activation.softmax(p, t + 1)
                Vector.weightedRowSum(into: output + t * qWidth + head * hd, rows: v + kvHead * hd, rowStride: kvWidth,
                                      coefficients: p, coefficientStride: 1, count: t + 1, width: hd, accumulate: false)
            }
        }
    }

    /// Floats of scratch that `backward` needs: the score gradients dS, (heads, n, n).
    static func backwardScratch(tokens n: Int, heads: Int) -> Int { heads * n * n }

    /// dS = P ∘ (dP − rowsum(P ∘ dP)) with dP = dO·Vᵀ; dQ = s·dS·K, dK = s·dSᵀ·Q, dV = Pᵀ·dO.
    ///
    /// Overwrites gradQ, gradK, gradV. Two passes, each balanced over the pool: query rows (head, t) give
    /// dS and dQ; key rows (kvHead, j) then sum dK and dV over their group's heads and the rows t ≥ j.
    /// scratch: `backwardScratch(tokens:heads:)` floats; only its causal half is touched.
    static func backward(q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
                         probabilities: UnsafePointer<Float>, gradOutput: UnsafePointer<Float>, tokens n: Int,
                         heads: Int, kvHeads: Int, headDimension hd: Int, gradQ: UnsafeMutablePointer<Float>,
                         gradK: UnsafeMutablePointer<Float>, gradV: UnsafeMutablePointer<Float>,
                         scratch: UnsafeMutablePointer<Float>, pool: ThreadPool) {
        let group = heads / kvHeads, qWidth = heads * hd, kvWidth = kvHeads * hd
        let scale = 1 / Float(hd).squareRoot()
        nonisolated(unsafe) let q = q, k = k, v = v, probabilities = probabilities, gradOutput = gradOutput
        nonisolated(unsafe) let gradQ = gradQ, gradK = gradK, gradV = gradV, gradScores = scratch
        pool.parallelFor(heads * n, minimumChunk: 4) { range in
            for task in range {
                let head = task / n, t = task % n, kvHead = head / group
                let p = probabilities + (head * n + t) * n, dS = gradScores + (head * n + t) * n
                let dO = gradOutput + t * qWidth + head * hd
                Vector.dotRows(dO, rows: v + kvHead * hd, stride: kvWidth, count: t + 1, width: hd, scale: 1, into: dS)
                var dot: Float = 0
                for j in 0...t { dot += p[j] * dS[j] }
                for j in 0...t { dS[j] = p[j] * (dS[j] - dot) * scale }
                Vector.weightedRowSum(into: gradQ + t * qWidth + head * hd, rows: k + kvHead * hd, rowStride: kvWidth,
                                      coefficients: dS, coefficientStride: 1, count: t + 1, width: hd, accumulate: false)
            }
        }
        pool.parallelFor(kvHeads * n, minimumChunk: 4) { range in
            for task in range {
                let kvHead = task / n, j = task % n
                let dK = gradK + j * kvWidth + kvHead * hd, dV = gradV + j * kvWidth + kvHead * hd
                for head in (kvHead * group)..<((kvHead + 1) * group) {
                    let first = head == kvHead * group
                    let column = (head * n + j) * n + j  // [head, t = j, j]; rows t ≥ j follow at stride n
                    Vector.weightedRowSum(into: dV, rows: gradOutput + j * qWidth + head * hd, rowStride: qWidth,
                                          coefficients: probabilities + column, coefficientStride: n, count: n - j,
                                          width: hd, accumulate: !first)
                    Vector.weightedRowSum(into: dK, rows: q + j * qWidth + head * hd, rowStride: qWidth,
                                          coefficients: gradScores + column, coefficientStride: n, count: n - j,
                                          width: hd, accumulate: !first)
                }
            }
        }
    }
}
