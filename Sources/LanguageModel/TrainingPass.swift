import Foundation
import Kernels
import ModelFormats

/// Scratch memory for one training pass, released all at once.
///
/// Buffers are carved from chunks of at least 8 MB. With `slabs`, the chunks go back to the model at the
/// end of the pass and the next pass carves from the same memory: a pass's scratch (about 90 MB for
/// SmolLM2-135M at 128 tokens) allocated afresh each time comes from mmap, and the kernel zeroes every page
/// of it again on first touch (3% of a training step on the AVX2 tier, in a profile).
final class Arena {
    private var chunks: [ScratchSlabs.Chunk]
    private let slabs: ScratchSlabs?
    private var current = 0, used = 0
    /// Floats handed out so far (what a pass keeps, for the memory tests).
    private(set) var allocatedFloats = 0

    init(slabs: ScratchSlabs? = nil) {
        self.slabs = slabs
        chunks = slabs?.take() ?? []
    }

    /// `count` floats that live as long as the arena: zeroed, or (`zeroed: false`, for buffers written
    /// whole before they are read) left as they come.
    func floats(_ count: Int, zeroed: Bool = true) -> UnsafeMutablePointer<Float> {
        let count = max(count, 1), rounded = (count + 15) / 16 * 16  // 64-byte steps
        while current < chunks.count && used + rounded > chunks[current].floats {
            current += 1
            used = 0
        }
        if current == chunks.count {
            chunks.append(ScratchSlabs.Chunk(floats: max(rounded, ScratchSlabs.chunkFloats)))
            used = 0
        }
        let pointer = chunks[current].pointer + used
        used += rounded
        if zeroed { pointer.initialize(repeating: 0, count: count) }
        allocatedFloats += count
        return pointer
    }

    deinit { slabs?.give(chunks) }
}

/// The chunks that training passes reuse (see `Arena`): those of at most two finished passes are kept.
final class ScratchSlabs: @unchecked Sendable {
    /// 8 MB: above glibc's largest mmap threshold, so chunks never come from (and never pin) the heap.
    static let chunkFloats = 1 << 21

    final class Chunk {
        let pointer: UnsafeMutablePointer<Float>
        let floats: Int
        init(floats: Int) {
            self.floats = floats
            pointer = UnsafeMutableRawPointer.allocate(byteCount: 4 * floats, alignment: 64)
                .bindMemory(to: Float.self, capacity: floats)
        }
        deinit { pointer.deallocate() }
    }

    private var kept: [[Chunk]] = []
    private let lock = NSLock()

    /// The chunks of a finished pass, or none.
    func take() -> [Chunk] {
        lock.lock()
        defer { lock.unlock() }
        return kept.popLast() ?? []
    }

    /// Keeps a finished pass's chunks for the next one (or lets them go, past two sets).
    func give(_ chunks: [Chunk]) {
        lock.lock()
        defer { lock.unlock() }
        if kept.count < 2 { kept.append(chunks) }
    }
}

extension LlamaModel {
    /// The mean next-token loss of one sequence over its counted tokens, and `weight` times its gradient
    /// with respect to the LoRA parameters added into `gradient` (which has `lora.count` entries).
    ///
    /// The base weights stay frozen in their stored (possibly quantized) form; no float32 copy is made.
    /// Labels follow HF: position t is scored against labels[t + 1]; −100 is not counted.
    /// The layers run forward with `layerForward`, keeping O(n·d) per layer (`trainingForward`), and back
    /// with `layerBackward`, which recomputes the attention probabilities layer by layer.
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
        // The whole sequence is the session: LongRoPE's long factors when it is longer than the original context.
        let frequencies = try frequencies(context: n, tokens: n)
        for token in tokens where token < 0 || token >= c.vocabSize {
            throw LanguageModelError.tokenOutOfRange(token: token, vocabularySize: c.vocabSize)
        }
        let counted = (0..<max(0, n - 1)).filter { labels[$0 + 1] != -100 }
        for t in counted where labels[t + 1] < 0 || labels[t + 1] >= c.vocabSize {
            throw LanguageModelError.tokenOutOfRange(token: labels[t + 1], vocabularySize: c.vocabSize)
        }
        guard !counted.isEmpty else { return (.nan, 0) }

        let arena = Arena(slabs: scratchSlabs)
        let positions = Array(0..<n)
        return lora.parameters.withUnsafeBufferPointer { parameters in
            positions.withUnsafeBufferPointer { positions in
                let projections = TrainingProjections(model: self, lora: lora, parameters: parameters.baseAddress!,
                                                      gradient: gradient, weight: weight, tokens: n,
                                                      precision: precision, arena: arena)
                let (saved, x) = trainingForward(tokens: tokens, positions: positions.baseAddress!,
                                                 frequencies: frequencies, projections: projections, arena: arena)
                let (loss, dx) = lossHead(x, tokens: n, labels: labels, counted: counted, precision: precision, arena: arena)
                let scratch = LayerGradients(configuration: c, tokens: n, arena: arena)
                for layer in stride(from: c.numHiddenLayers - 1, through: 0, by: -1) {
                    layerBackward(layer, saved[layer], gradient: dx, tokens: n, positions: positions.baseAddress!,
                                  frequencies: frequencies, projections: projections, scratch: scratch)
                }
                return (loss / Double(counted.count), counted.count)
            }
        }
    }

    /// The layers forward from the embeddings, each layer keeping what its backward pass reads (input, q,
    /// k, v, attention output, middle residual, gate, up: O(n·d)); the norms' outputs, the activation and
    /// the attention probabilities are recomputed there, so one scratch set serves every layer.
    /// - Returns: the kept buffers per layer and the last layer's output (n, d).
    func trainingForward(tokens: [Int], positions: UnsafePointer<Int>, frequencies: [Float],
                         projections: TrainingProjections, arena: Arena)
        -> (saved: [LayerBuffers], output: UnsafeMutablePointer<Float>) {
        let c = configuration, n = tokens.count, d = c.hiddenSize, ff = c.intermediateSize
        let qWidth = c.numAttentionHeads * c.headDim, kvWidth = c.numKeyValueHeads * c.headDim
        // Every buffer is written whole before it is read.
        func written(_ count: Int) -> UnsafeMutablePointer<Float> { arena.floats(count, zeroed: false) }
        let attentionIn = written(n * d), feedForwardIn = written(n * d), projected = written(n * d)
        let activated = written(n * ff)
        let fusedWidth = block.fusedWidth(c), fused = fusedWidth > 0 ? written(n * fusedWidth) : nil
        var x = arena.floats(n * d)
        embed(tokens, into: x)
        var saved: [LayerBuffers] = []
        for layer in 0..<c.numHiddenLayers {
            let k = written(n * kvWidth), v = written(n * kvWidth)
            var buffers = LayerBuffers(
                input: x, attentionIn: attentionIn, q: written(n * qWidth), k: k, v: v, attention: written(n * qWidth),
                projected: projected, middle: written(n * d), feedForwardIn: feedForwardIn, gate: written(n * ff),
                up: written(n * ff), activated: activated, output: written(n * d), fused: fused)
            if block.headNorms != nil {  // the per-head norms' backward reads their inputs
                buffers.qPreNorm = written(n * qWidth)
                buffers.kPreNorm = written(n * kvWidth)
            }
            if block.postNorms != nil {  // the post-norms' backward reads their inputs
                buffers.attentionProjected = written(n * d)
                buffers.feedForwardProjected = written(n * d)
            }
            layerForward(layer, buffers, tokens: n,
                         context: AttentionContext(keys: k, values: v, start: 0, positions: positions, frequencies: frequencies),
                         projections: projections)
            saved.append(buffers)
            x = buffers.output
        }
        return (saved, x)
    }

    /// The output head and the loss over the counted rows, chunk by chunk; dlogits = (softmax − onehot)/count,
    /// pushed straight back through the head and the final norm.
    /// - Returns: the summed loss and ∂L/∂x (n, d) for the last layer's output `x`.
    func lossHead(_ x: UnsafePointer<Float>, tokens n: Int, labels: [Int], counted: [Int], precision: ActivationPrecision,
                  arena: Arena) -> (loss: Double, gradient: UnsafeMutablePointer<Float>) {
        let d = configuration.hiddenSize, vocabulary = configuration.vocabSize
        let finalIn = arena.floats(n * d)
        normForward(x, weight: weights.finalNorm, tokens: n, out: finalIn)
        let dFinalIn = arena.floats(n * d)
        let chunk = 32
        let rowsIn = arena.floats(chunk * d, zeroed: false), logits = arena.floats(chunk * vocabulary, zeroed: false)
        let rowsOut = arena.floats(chunk * d, zeroed: false)
        let cap = configuration.finalLogitSoftcap.map(Float.init)
        let capped = cap == nil ? nil : arena.floats(chunk * vocabulary, zeroed: false)
        let rowLosses = UnsafeMutablePointer<Double>.allocate(capacity: chunk)
        defer { rowLosses.deallocate() }
        var totalLoss = 0.0
        let inverseCount = 1 / Float(counted.count)
        var index = 0
        while index < counted.count {
            let rows = Array(counted[index..<min(index + chunk, counted.count)])
            for (i, t) in rows.enumerated() { (rowsIn + i * d).update(from: finalIn + t * d, count: d) }
            forwardThrough(weights.output, key: "output", input: rowsIn, tokens: rows.count, output: logits, precision: precision)
            if let cap, let capped {  // Gemma 2's final soft-capping: the loss reads the capped logits
                Softcap.apply(logits, rows.count * vocabulary, cap: cap)
                capped.update(from: logits, count: rows.count * vocabulary)
            }
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
            if let cap, let capped { Softcap.backward(logits, capped: capped, rows.count * vocabulary, cap: cap) }
            backwardThrough(weights.output, key: "output", gradOutput: logits, tokens: rows.count, gradInput: rowsOut,
                            accumulate: false, precision: precision)
            for (i, t) in rows.enumerated() { (dFinalIn + t * d).update(from: rowsOut + i * d, count: d) }
            index += chunk
        }
        let dx = arena.floats(n * d)
        normBackward(x, weight: weights.finalNorm, gradOutput: dFinalIn, tokens: n, gradInput: dx)
        return (totalLoss, dx)
    }

    /// One decoder block backward, the mirror of `layerForward`: `gradient` holds ∂L/∂(layer output) on
    /// entry and ∂L/∂(layer input) on return; LoRA gradients go through `projections`. What the forward
    /// did not keep (the norms' outputs where an adapter reads them, the activation, the attention
    /// probabilities) is recomputed here into `scratch`, with the same kernels, so the numbers are the same.
    func layerBackward(_ layer: Int, _ a: LayerBuffers, gradient dx: UnsafeMutablePointer<Float>, tokens n: Int,
                       positions: UnsafePointer<Int>, frequencies: [Float], projections: TrainingProjections,
                       scratch g: LayerGradients) {
        let c = configuration, block = self.block, lw = weights.layers[layer]
        let d = c.hiddenSize, ff = c.intermediateSize, heads = c.numAttentionHeads, kvHeads = c.numKeyValueHeads
        let qWidth = heads * c.headDim
        if projections.adapts([block.feedForwardOutput], layer: layer) {
            activate(gate: a.gate, up: a.up, out: a.activated, tokens: n)
        }
        g.dActivated.initialize(repeating: 0, count: n * ff)
        let dFeedForwardOut = postNormBackward(lw.postFeedForwardNorm, input: a.feedForwardProjected, gradient: dx, tokens: n,
                                               scratch: g.dPostNorm)
        projections.backward(block.feedForwardOutput, layer: layer, input: a.activated, gradOutput: dFeedForwardOut,
                             gradInput: g.dActivated)
        switch block.feedForward {
        case .swiglu:
            Activation.swigluBackward(gate: a.gate, up: a.up, gradOutput: g.dActivated, gradGate: g.dGate, gradUp: g.dUp, n * ff)
        case .geglu:
            GemmaActivation.gegluBackward(gate: a.gate, up: a.up, gradOutput: g.dActivated, gradGate: g.dGate, gradUp: g.dUp,
                                          n * ff)
        }
        if projections.adapts(block.feedForwardInputs, layer: layer) {
            normForward(a.middle, weight: lw.feedForwardNorm, tokens: n, out: a.feedForwardIn)
        }
        g.dFeedForwardIn.initialize(repeating: 0, count: n * d)
        backwardParts(block.feedForwardInputs, gradients: [(g.dGate, ff), (g.dUp, ff)], fused: g.dFused, layer: layer,
                      input: a.feedForwardIn, tokens: n, projections: projections, gradInput: g.dFeedForwardIn)
        g.dMiddle.update(from: dx, count: n * d)
        normBackward(a.middle, weight: lw.feedForwardNorm, gradOutput: g.dFeedForwardIn, tokens: n, gradInput: g.dMiddle)
        g.dAttention.initialize(repeating: 0, count: n * qWidth)
        let dAttentionOut = postNormBackward(lw.postAttentionNorm, input: a.attentionProjected, gradient: g.dMiddle,
                                             tokens: n, scratch: g.dPostNorm)
        projections.backward(block.attentionOutput, layer: layer, input: a.attention, gradOutput: dAttentionOut,
                             gradInput: g.dAttention)
        TrainingAttention.backward(q: a.q, k: a.k, v: a.v, gradOutput: g.dAttention, tokens: n, heads: heads,
                                   kvHeads: kvHeads, headDimension: c.headDim, scale: c.attentionScale,
                                   softcap: c.attentionSoftcap.map(Float.init), window: c.attentionWindow(layer: layer),
                                   gradQ: g.dQ, gradK: g.dK, gradV: g.dV, scratch: g.attention, pool: pool)
        if block.rotary {
            let table = layerFrequencies(layer, session: frequencies)
            rotate(g.dQ, tokens: n, heads: heads, positions: positions, frequencies: table, inverse: true)
            rotate(g.dK, tokens: n, heads: kvHeads, positions: positions, frequencies: table, inverse: true)
        }
        var dQ = g.dQ, dK = g.dK  // ∂L/∂(q, k as projected): through the per-head norms where the block has them
        if let queryNorm = lw.queryNorm, let keyNorm = lw.keyNorm, let qIn = a.qPreNorm, let kIn = a.kPreNorm {
            g.dQPreNorm.initialize(repeating: 0, count: n * qWidth)
            g.dKPreNorm.initialize(repeating: 0, count: n * kvHeads * c.headDim)
            headNormBackward(qIn, weight: queryNorm, gradOutput: g.dQ, rows: n * heads, gradInput: g.dQPreNorm)
            headNormBackward(kIn, weight: keyNorm, gradOutput: g.dK, rows: n * kvHeads, gradInput: g.dKPreNorm)
            (dQ, dK) = (g.dQPreNorm, g.dKPreNorm)
        }
        if projections.adapts(block.attentionInputs, layer: layer) {
            normForward(a.input, weight: lw.attentionNorm, tokens: n, out: a.attentionIn)
        }
        g.dAttentionIn.initialize(repeating: 0, count: n * d)
        let kvWidth = kvHeads * c.headDim
        backwardParts(block.attentionInputs, gradients: [(dQ, qWidth), (dK, kvWidth), (g.dV, kvWidth)], fused: g.dFused,
                      layer: layer, input: a.attentionIn, tokens: n, projections: projections, gradInput: g.dAttentionIn)
        dx.update(from: g.dMiddle, count: n * d)
        normBackward(a.input, weight: lw.attentionNorm, gradOutput: g.dAttentionIn, tokens: n, gradInput: dx)
    }
}

extension LlamaModel {
    /// ∂L/∂(an output projection's result) from ∂L/∂(what the residual adds): through the block's post-norm `weight`
    /// (Gemma 2) at its kept `input`, into `scratch` (n, d); `gradient` itself where the block has no post-norm.
    func postNormBackward(_ weight: [Float]?, input: UnsafePointer<Float>?, gradient: UnsafeMutablePointer<Float>,
                          tokens n: Int, scratch: UnsafeMutablePointer<Float>) -> UnsafeMutablePointer<Float> {
        guard let weight, let input else { return gradient }
        scratch.initialize(repeating: 0, count: n * configuration.hiddenSize)
        normBackward(input, weight: weight, gradOutput: gradient, tokens: n, gradInput: scratch)
        return scratch
    }

    /// The mirror of `projectParts`: gradInput += each part's projection's transpose times the part's gradient
    /// (with the LoRA gradients); for a fused projection, the parts' gradients joined by columns into `fused`
    /// (n, Σ widths) first, then one pass back through it.
    func backwardParts(_ modules: [ProjectionModule], gradients parts: [(gradient: UnsafeMutablePointer<Float>, width: Int)],
                       fused: UnsafeMutablePointer<Float>, layer: Int, input: UnsafePointer<Float>, tokens n: Int,
                       projections: TrainingProjections, gradInput: UnsafeMutablePointer<Float>) {
        guard modules.count == 1, parts.count > 1 else {
            for (module, part) in zip(modules, parts) {
                projections.backward(module, layer: layer, input: input, gradOutput: part.gradient, gradInput: gradInput)
            }
            return
        }
        let total = parts.reduce(0) { $0 + $1.width }
        var offset = 0
        for (gradient, width) in parts {
            for t in 0..<n { (fused + t * total + offset).update(from: gradient + t * width, count: width) }
            offset += width
        }
        projections.backward(modules[0], layer: layer, input: input, gradOutput: fused, gradInput: gradInput)
    }
}

/// Gradient scratch for `layerBackward`, one set for all layers (shapes for n tokens).
struct LayerGradients {
    let dActivated, dGate, dUp: UnsafeMutablePointer<Float>   // (n, ff)
    let dFeedForwardIn, dMiddle, dAttentionIn: UnsafeMutablePointer<Float> // (n, d)
    /// ∂L/∂ an output projection's result through a post-norm (Gemma 2): (n, d); one float otherwise.
    let dPostNorm: UnsafeMutablePointer<Float>
    let dAttention, dQ: UnsafeMutablePointer<Float>           // (n, heads·hd)
    let dK, dV: UnsafeMutablePointer<Float>                   // (n, kvHeads·hd)
    /// ∂L/∂q, ∂L/∂k before the per-head norms (Qwen3): (n, heads·hd), (n, kvHeads·hd); one float otherwise.
    let dQPreNorm, dKPreNorm: UnsafeMutablePointer<Float>
    /// The attention backward's probabilities and score gradients: `TrainingAttention.backwardScratch`.
    let attention: UnsafeMutablePointer<Float>
    /// A fused projection's output gradient, its parts' joined (Phi-3): (n, `BlockDescription.fusedWidth`).
    let dFused: UnsafeMutablePointer<Float>

    init(configuration c: LlamaConfiguration, tokens n: Int, arena: Arena) {
        let d = c.hiddenSize, ff = c.intermediateSize
        let qWidth = c.numAttentionHeads * c.headDim, kvWidth = c.numKeyValueHeads * c.headDim
        func written(_ count: Int) -> UnsafeMutablePointer<Float> { arena.floats(count, zeroed: false) }
        dActivated = written(n * ff); dGate = written(n * ff); dUp = written(n * ff)
        dFeedForwardIn = written(n * d); dMiddle = written(n * d); dAttentionIn = written(n * d)
        dAttention = written(n * qWidth); dQ = written(n * qWidth); dK = written(n * kvWidth); dV = written(n * kvWidth)
        let block = BlockDescription.of(c.architecture)
        dFused = written(max(1, n * block.fusedWidth(c)))
        dPostNorm = written(block.postNorms != nil ? n * d : 1)
        let headNorms = block.headNorms != nil
        dQPreNorm = written(headNorms ? n * qWidth : 1); dKPreNorm = written(headNorms ? n * kvWidth : 1)
        attention = written(TrainingAttention.backwardScratch(tokens: n, heads: c.numAttentionHeads,
                                                              kvHeads: c.numKeyValueHeads, headDimension: c.headDim))
    }
}

/// Training's projections: the frozen base as the pass's precision says, plus the trainable LoRA, whose
/// A x it keeps per layer for the backward pass, where it also adds the LoRA gradients.
final class TrainingProjections: LayerProjections {
    let model: LlamaModel
    let lora: TrainableLoRA
    let parameters: UnsafePointer<Float>
    let gradient: UnsafeMutablePointer<Float>
    let weight: Float
    let tokens: Int
    let precision: ActivationPrecision
    let arena: Arena
    /// Per layer, per adapted module: A x (tokens, rank).
    private var hidden: [[ProjectionModule: UnsafeMutablePointer<Float>]]
    private let forwardScratch: UnsafeMutablePointer<Float>
    private let backwardScratch: UnsafeMutablePointer<Float>

    init(model: LlamaModel, lora: TrainableLoRA, parameters: UnsafePointer<Float>, gradient: UnsafeMutablePointer<Float>,
         weight: Float, tokens: Int, precision: ActivationPrecision, arena: Arena) {
        self.model = model
        self.lora = lora
        self.parameters = parameters
        self.gradient = gradient
        self.weight = weight
        self.tokens = tokens
        self.precision = precision
        self.arena = arena
        let c = model.configuration
        // A fused projection (Phi-3's qkv_proj, gate_up_proj) is wider than any single one.
        let widest = max(c.hiddenSize, c.numAttentionHeads * c.headDim, c.intermediateSize,
                         BlockDescription.of(c.architecture).fusedWidth(c))
        hidden = Array(repeating: [:], count: c.numHiddenLayers)
        forwardScratch = arena.floats(lora.rank * widest, zeroed: false)
        backwardScratch = arena.floats(LoRAKernels.backwardScratch(rank: lora.rank, tokens: tokens, widest: widest),
                                       zeroed: false)
    }

    func adapts(_ modules: [ProjectionModule], layer: Int) -> Bool {
        modules.contains { lora.slot(layer: layer, module: $0) != nil }
    }

    func project(_ targets: [(module: ProjectionModule, output: UnsafeMutablePointer<Float>)], layer: Int,
                 input: UnsafePointer<Float>, width: Int) {
        model.trainingProducts(targets, layer: layer, input: input, tokens: tokens, precision: precision)
        for (module, output) in targets {
            guard let slot = lora.slot(layer: layer, module: module) else { continue }
            let u = arena.floats(tokens * lora.rank, zeroed: false)
            LoRAKernels.forward(a: parameters + slot.aOffset, b: parameters + slot.bOffset, rank: lora.rank,
                                inFeatures: slot.inFeatures, outFeatures: slot.outFeatures, scaling: lora.scaling,
                                input: input, tokens: tokens, hidden: u, output: output, scratch: forwardScratch,
                                pool: model.pool)
            hidden[layer][module] = u
        }
    }

    /// gradInput += Wᵀ gradOutput (+ the adapter's part), and weight·∂L/∂A, weight·∂L/∂B into the gradient.
    func backward(_ module: ProjectionModule, layer: Int, input: UnsafePointer<Float>, gradOutput: UnsafePointer<Float>,
                  gradInput: UnsafeMutablePointer<Float>) {
        model.backwardThrough(model.weights.layers[layer].projection(module), key: "\(layer).\(module.rawValue)",
                              gradOutput: gradOutput, tokens: tokens, gradInput: gradInput, accumulate: true,
                              precision: precision)
        guard let slot = lora.slot(layer: layer, module: module), let u = hidden[layer][module] else { return }
        LoRAKernels.backward(a: parameters + slot.aOffset, b: parameters + slot.bOffset, rank: lora.rank,
                             inFeatures: slot.inFeatures, outFeatures: slot.outFeatures, scaling: lora.scaling,
                             weight: weight, input: input, hidden: u, gradOutput: gradOutput, tokens: tokens,
                             gradA: gradient + slot.aOffset, gradB: gradient + slot.bOffset, gradInput: gradInput,
                             scratch: backwardScratch, pool: model.pool)
    }
}

/// The backward pass of causal attention, recomputing its probabilities rather than keeping them from
/// the forward pass (as flash attention does): the forward keeps O(n·d) per layer, not (heads, n, n).
enum TrainingAttention {
    /// Floats of scratch that `backward` needs: probabilities and score gradients for the query heads of
    /// one key/value head at a time, 2 · (heads / kvHeads) · n · n, and that head's keys and values transposed, 2 · hd · n.
    static func backwardScratch(tokens n: Int, heads: Int, kvHeads: Int, headDimension hd: Int) -> Int {
        2 * (heads / kvHeads) * n * n + 2 * hd * n
    }

    /// P = softmax(cap(s·Q·Kᵀ)) recomputed with the forward's steps (`Attention.causal`'s blocks), so it is
    /// the same P; dS = P ∘ (dP − rowsum(P ∘ dP)) ∘ cap′ with dP = dO·Vᵀ; dQ = s·dS·K, dK = s·dSᵀ·Q, dV = Pᵀ·dO.
    /// s is 1/√hd unless `scale` says otherwise; the cap c·tanh(x/c) (Gemma 2) has cap′ = 1 − (capped/c)², else 1.
    /// With a sliding `window`, row t reads keys `Attention.firstKey(t, window)`...t only, and key j is read by
    /// rows j..<j + window only: the masked entries weigh nothing.
    ///
    /// Overwrites gradQ, gradK, gradV. One key/value head at a time, two passes each, balanced over the
    /// pool, each over blocks of `Attention.blockRows` rows, every product a `Vector.tileProduct`: blocks of query
    /// rows (head, t...) of its group give P, dS and dQ; blocks of key rows j... then sum dK and dV over the
    /// group's heads and the rows t that see them. scratch: `backwardScratch` floats, P and dS in (n, n) layout per
    /// head; a block reads a rectangle that reaches up to `blockRows` − 1 entries past a row's band on either side,
    /// so the query pass writes zeros there (the margins), and entries further out are never touched.
    static func backward(q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
                         gradOutput: UnsafePointer<Float>, tokens n: Int, heads: Int, kvHeads: Int, headDimension hd: Int,
                         scale: Float? = nil, softcap: Float? = nil, window: Int? = nil, gradQ: UnsafeMutablePointer<Float>,
                         gradK: UnsafeMutablePointer<Float>, gradV: UnsafeMutablePointer<Float>,
                         scratch: UnsafeMutablePointer<Float>, pool: ThreadPool) {
        let group = heads / kvHeads, qWidth = heads * hd, kvWidth = kvHeads * hd
        let scale = scale ?? 1 / Float(hd).squareRoot()
        let block = Attention.blockRows, blocks = (n + block - 1) / block
        nonisolated(unsafe) let q = q, k = k, v = v, gradOutput = gradOutput
        nonisolated(unsafe) let gradQ = gradQ, gradK = gradK, gradV = gradV
        nonisolated(unsafe) let probabilities = scratch, gradScores = scratch + group * n * n
        nonisolated(unsafe) let keysT = gradScores + group * n * n, valuesT = keysT + hd * n
        for kvHead in 0..<kvHeads {
            Vector.transpose(k + kvHead * hd, stride: kvWidth, count: n, width: hd, into: keysT, outStride: n)
            Vector.transpose(v + kvHead * hd, stride: kvWidth, count: n, width: hd, into: valuesT, outStride: n)
            pool.parallelFor(group * blocks) { range in
                let capped = softcap == nil ? nil : UnsafeMutablePointer<Float>.allocate(capacity: block * n)
                defer { capped?.deallocate() }
                for task in range {
                    let local = task / blocks, t0 = task % blocks * block, head = kvHead * group + local
                    let rows = min(block, n - t0), last = t0 + rows - 1
                    let first0 = Attention.firstKey(position: t0, window: window), width = last + 1 - first0
                    // Rows t0...last of the (n, n) layout, from key first0 on: the rectangle the block's products write.
                    let pRows = probabilities + (local * n + t0) * n, sRows = gradScores + (local * n + t0) * n
                    Vector.tileProduct(rows: rows, columns: width, depth: hd, scale: scale, a: q + t0 * qWidth + head * hd,
                                       aRowStride: qWidth, aDepthStride: 1, b: keysT + first0, bStride: n,
                                       into: pRows + first0, outStride: n, accumulate: false)
                    Vector.tileProduct(rows: rows, columns: width, depth: hd, a: gradOutput + t0 * qWidth + head * hd,
                                       aRowStride: qWidth, aDepthStride: 1, b: valuesT + first0, bStride: n,
                                       into: sRows + first0, outStride: n, accumulate: false)
                    for r in 0..<rows {
                        let t = t0 + r, first = Attention.firstKey(position: t, window: window), count = t + 1 - first
                        let p = pRows + r * n + first, dS = sRows + r * n + first
                        if let softcap, let capped {
                            Softcap.apply(p, count, cap: softcap)
                            (capped + r * n).update(from: p, count: count)
                        }
                        Activation.softmax(p, count)
                        var dot: Float = 0
                        for j in 0..<count { dot += p[j] * dS[j] }
                        for j in 0..<count { dS[j] = p[j] * (dS[j] - dot) * scale }
                        if let softcap, let capped { Softcap.backward(dS, capped: capped + r * n, count, cap: softcap) }
                        // The margins: up to block − 1 masked entries before the band and after the diagonal.
                        let before = min(first, block - 1), after = min(n - 1 - t, block - 1)
                        (p - before).initialize(repeating: 0, count: before)
                        (dS - before).initialize(repeating: 0, count: before)
                        (p + count).initialize(repeating: 0, count: after)
                        (dS + count).initialize(repeating: 0, count: after)
                    }
                    Vector.tileProduct(rows: rows, columns: hd, depth: width, a: sRows + first0, aRowStride: n,
                                       aDepthStride: 1, b: k + first0 * kvWidth + kvHead * hd, bStride: kvWidth,
                                       into: gradQ + t0 * qWidth + head * hd, outStride: qWidth, accumulate: false)
                }
            }
            pool.parallelFor(blocks) { range in
                for b in range {
                    let j0 = b * block, keys = min(block, n - j0)
                    // The query rows j0..<j0 + depth that see some key of the block (key j: rows j..<j + window).
                    let depth = min(n, j0 + keys - 1 + (window ?? n)) - j0
                    let dK = gradK + j0 * kvWidth + kvHead * hd, dV = gradV + j0 * kvWidth + kvHead * hd
                    for local in 0..<group {
                        let head = kvHead * group + local
                        let corner = (local * n + j0) * n + j0  // [local, t = j0, j0]; row t + 1 follows at stride n
                        Vector.tileProduct(rows: keys, columns: hd, depth: depth, a: probabilities + corner, aRowStride: 1,
                                           aDepthStride: n, b: gradOutput + j0 * qWidth + head * hd, bStride: qWidth,
                                           into: dV, outStride: kvWidth, accumulate: local != 0)
                        Vector.tileProduct(rows: keys, columns: hd, depth: depth, a: gradScores + corner, aRowStride: 1,
                                           aDepthStride: n, b: q + j0 * qWidth + head * hd, bStride: qWidth,
                                           into: dK, outStride: kvWidth, accumulate: local != 0)
                    }
                }
            }
        }
    }
}
