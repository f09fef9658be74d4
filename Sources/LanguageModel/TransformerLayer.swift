import Kernels

/// Where one layer's forward pass reads and writes, step by step (shapes for n tokens).
///
/// The two ways of keeping state differ only in these pointers: inference points the temporaries at one
/// scratch set shared by every layer (residual updated in place, the activation written over the gate)
/// and k, v at the KV cache's slots; training gives the parts the backward pass reads their own buffers,
/// kept per layer, and recomputes the rest there (`LlamaModel.layerBackward`).
struct LayerBuffers {
    var input: UnsafeMutablePointer<Float>         // (n, d) residual stream entering the layer
    var attentionIn: UnsafeMutablePointer<Float>   // (n, d) norm(input)
    var q: UnsafeMutablePointer<Float>             // (n, heads·hd) after RoPE
    var k: UnsafeMutablePointer<Float>             // (n, kvHeads·hd) after RoPE
    var v: UnsafeMutablePointer<Float>             // (n, kvHeads·hd)
    var attention: UnsafeMutablePointer<Float>     // (n, heads·hd) the attention's output
    var projected: UnsafeMutablePointer<Float>     // (n, d) an output projection before its residual add
    var middle: UnsafeMutablePointer<Float>        // (n, d) residual after attention (may be `input`)
    var feedForwardIn: UnsafeMutablePointer<Float> // (n, d) norm(middle)
    var gate: UnsafeMutablePointer<Float>          // (n, ff) before the activation
    var up: UnsafeMutablePointer<Float>            // (n, ff)
    var activated: UnsafeMutablePointer<Float>     // (n, ff) activation(gate, up) (may be `gate`)
    var output: UnsafeMutablePointer<Float>        // (n, d) residual leaving the layer (may be `middle`)
    /// (n, heads·hd), (n, kvHeads·hd): q and k as projected (with their biases), before the block's per-head
    /// norms, where the backward pass needs them (training, Qwen3); nil: the norms run in place on q and k.
    var qPreNorm: UnsafeMutablePointer<Float>? = nil
    var kPreNorm: UnsafeMutablePointer<Float>? = nil
    /// (n, `BlockDescription.fusedWidth`): a fused projection's output before the pass splits it into its
    /// parts (Phi-3's q|k|v, gate|up); scratch, nil where the block fuses nothing.
    var fused: UnsafeMutablePointer<Float>? = nil
    /// (n, d) each: the attention's and the feed-forward's output projections before the block's post-norms
    /// (Gemma 2), where the backward pass needs them (training); nil: the post-norms run in place on `projected`.
    var attentionProjected: UnsafeMutablePointer<Float>? = nil
    var feedForwardProjected: UnsafeMutablePointer<Float>? = nil
}

/// The keys and values a layer's queries attend to: positions 0..<start + n, the layer's own n tokens
/// (its `k`, `v`) at `start`; and the positions of those tokens and the session's frequency table for RoPE.
struct AttentionContext {
    let keys: UnsafePointer<Float>
    let values: UnsafePointer<Float>
    let start: Int
    /// The position of the first row of `keys` and `values` (0 but in a windowed cache's sliding layers).
    var origin = 0
    let positions: UnsafePointer<Int>
    let frequencies: [Float]
}

/// How a pass multiplies by a layer's projections: inference (int8, row-grouped, the installed adapter)
/// or training (the frozen base as the pass's precision says, plus the trainable LoRA, keeping A x).
protocol LayerProjections {
    /// outputs (n, rows) = W input (+ adapter) for projections of `layer` that all read `input` (n, width).
    func project(_ targets: [(module: ProjectionModule, output: UnsafeMutablePointer<Float>)], layer: Int,
                 input: UnsafePointer<Float>, width: Int)
}

extension LlamaModel {
    /// One decoder block forward over n tokens, as `block` describes it: both inference and training run it.
    func layerForward(_ layer: Int, _ b: LayerBuffers, tokens n: Int, context: AttentionContext,
                      projections: some LayerProjections) {
        let c = configuration, block = self.block, lw = weights.layers[layer]
        let d = c.hiddenSize, hd = c.headDim, heads = c.numAttentionHeads, kvHeads = c.numKeyValueHeads
        let ff = c.intermediateSize, kvWidth = kvHeads * hd
        normForward(b.input, weight: lw.attentionNorm, tokens: n, out: b.attentionIn)
        let qIn = b.qPreNorm ?? b.q, kIn = b.kPreNorm ?? b.k
        projectParts(block.attentionInputs, into: [(qIn, heads * hd), (kIn, kvWidth), (b.v, kvWidth)], fused: b.fused,
                     layer: layer, input: b.attentionIn, width: d, tokens: n, projections: projections)
        if let queryNorm = lw.queryNorm, let keyNorm = lw.keyNorm {
            headNormForward(qIn, weight: queryNorm, rows: n * heads, out: b.q)
            headNormForward(kIn, weight: keyNorm, rows: n * kvHeads, out: b.k)
        }
        if block.rotary {
            let table = layerFrequencies(layer, session: context.frequencies)
            rotate(b.q, tokens: n, heads: heads, positions: context.positions, frequencies: table)
            rotate(b.k, tokens: n, heads: kvHeads, positions: context.positions, frequencies: table)
        }
        Attention.causal(queries: b.q, keys: context.keys, values: context.values, tokens: n, start: context.start,
                         origin: context.origin, heads: heads, kvHeads: kvHeads, headDimension: hd, scale: c.attentionScale,
                         softcap: c.attentionSoftcap.map(Float.init), window: c.attentionWindow(layer: layer),
                         output: b.attention, pool: pool)
        let attentionOut = b.attentionProjected ?? b.projected
        projections.project([(block.attentionOutput, attentionOut)], layer: layer, input: b.attention, width: heads * hd)
        if let post = lw.postAttentionNorm { normForward(attentionOut, weight: post, tokens: n, out: b.projected) }
        for i in 0..<(n * d) { b.middle[i] = b.input[i] + b.projected[i] }
        normForward(b.middle, weight: lw.feedForwardNorm, tokens: n, out: b.feedForwardIn)
        projectParts(block.feedForwardInputs, into: [(b.gate, ff), (b.up, ff)], fused: b.fused, layer: layer,
                     input: b.feedForwardIn, width: d, tokens: n, projections: projections)
        activate(gate: b.gate, up: b.up, out: b.activated, tokens: n)
        let feedForwardOut = b.feedForwardProjected ?? b.projected
        projections.project([(block.feedForwardOutput, feedForwardOut)], layer: layer, input: b.activated, width: ff)
        if let post = lw.postFeedForwardNorm { normForward(feedForwardOut, weight: post, tokens: n, out: b.projected) }
        for i in 0..<(n * d) { b.output[i] = b.middle[i] + b.projected[i] }
    }

    /// The parts of the projections reading one input (q, k, v; gate, up), each `width` floats a token, with
    /// their biases: each part its own projection's output, or, for a block that fuses them (one module for all
    /// the parts), the fused projection's output (n, Σ widths) in `fused`, split by columns in order.
    func projectParts(_ modules: [ProjectionModule], into parts: [(output: UnsafeMutablePointer<Float>, width: Int)],
                      fused: UnsafeMutablePointer<Float>?, layer: Int, input: UnsafePointer<Float>, width: Int,
                      tokens n: Int, projections: some LayerProjections) {
        guard modules.count == 1, parts.count > 1, let fused else {
            precondition(modules.count == parts.count, "one projection per part, or one fused projection and its scratch")
            let targets = Array(zip(modules, parts.map(\.output)))
            projections.project(targets, layer: layer, input: input, width: width)
            for (module, output) in targets { addBias(module, layer: layer, tokens: n, output: output) }
            return
        }
        projections.project([(modules[0], fused)], layer: layer, input: input, width: width)
        addBias(modules[0], layer: layer, tokens: n, output: fused)
        let total = parts.reduce(0) { $0 + $1.width }
        var offset = 0
        for (output, partWidth) in parts {
            for t in 0..<n { (output + t * partWidth).update(from: fused + t * total + offset, count: partWidth) }
            offset += partWidth
        }
    }

    /// out = norm(input) with the block's norm and `weight`, row by row.
    func normForward(_ input: UnsafePointer<Float>, weight: [Float], tokens n: Int, out: UnsafeMutablePointer<Float>) {
        switch block.norm {
        case .rms:
            weight.withUnsafeBufferPointer {
                RMSNorm.forward(input, weight: $0.baseAddress!, tokens: n, width: configuration.hiddenSize,
                                eps: Float(configuration.rmsNormEps), out: out)
            }
        }
    }

    /// The embedding rows of `tokens` into x (n, d), times the configuration's `embeddingScale` where it has one
    /// (Gemma's √hidden).
    func embed(_ tokens: [Int], into x: UnsafeMutablePointer<Float>) {
        let d = configuration.hiddenSize
        for (t, token) in tokens.enumerated() { weights.embedding.dequantizedRow(token, into: x + t * d) }
        guard let scale = configuration.embeddingScale else { return }
        for i in 0..<(tokens.count * d) { x[i] *= scale }
    }

    /// gradInput += ∂norm/∂input · gradOutput for the block's norm.
    func normBackward(_ input: UnsafePointer<Float>, weight: [Float], gradOutput: UnsafePointer<Float>, tokens n: Int,
                      gradInput: UnsafeMutablePointer<Float>) {
        switch block.norm {
        case .rms:
            weight.withUnsafeBufferPointer {
                RMSNorm.backward(input, weight: $0.baseAddress!, gradOutput: gradOutput, tokens: n,
                                 width: configuration.hiddenSize, eps: Float(configuration.rmsNormEps), gradInput: gradInput)
            }
        }
    }

    /// output (n, rows) += the projection's bias on every row, where the block gives `module` one.
    func addBias(_ module: ProjectionModule, layer: Int, tokens n: Int, output: UnsafeMutablePointer<Float>) {
        guard let bias = weights.layers[layer].biases[module] else { return }
        let rows = bias.count
        bias.withUnsafeBufferPointer { bias in
            for t in 0..<n {
                let row = output + t * rows
                for i in 0..<rows { row[i] += bias[i] }
            }
        }
    }

    /// The block's per-head norm (Qwen3's q_norm, k_norm): RMSNorm over each head's `headDim` values, over
    /// `rows` = tokens · heads rows; `out` may be `input`.
    func headNormForward(_ input: UnsafePointer<Float>, weight: [Float], rows: Int, out: UnsafeMutablePointer<Float>) {
        weight.withUnsafeBufferPointer {
            RMSNorm.forward(input, weight: $0.baseAddress!, tokens: rows, width: configuration.headDim,
                            eps: Float(configuration.rmsNormEps), out: out)
        }
    }

    /// gradInput += ∂headNorm/∂input · gradOutput over `rows` head rows.
    func headNormBackward(_ input: UnsafePointer<Float>, weight: [Float], gradOutput: UnsafePointer<Float>, rows: Int,
                          gradInput: UnsafeMutablePointer<Float>) {
        weight.withUnsafeBufferPointer {
            RMSNorm.backward(input, weight: $0.baseAddress!, gradOutput: gradOutput, tokens: rows,
                             width: configuration.headDim, eps: Float(configuration.rmsNormEps), gradInput: gradInput)
        }
    }

    /// RoPE by `frequencies` (the session's table, or a sliding layer's own: `layerFrequencies`) on `heads` heads of
    /// n rows at `positions` (the inverse rotation for gradients), its rotated values multiplied by `ropeMagnitude`
    /// (LongRoPE's and YaRN's cos·a, sin·a; the same factor going back, as (a·R)ᵀ = a·Rᵀ).
    func rotate(_ x: UnsafeMutablePointer<Float>, tokens n: Int, heads: Int, positions: UnsafePointer<Int>,
                frequencies: [Float], inverse: Bool = false) {
        let hd = configuration.headDim, rotated = configuration.rotaryDim
        frequencies.withUnsafeBufferPointer {
            RoPE.apply(x, tokens: n, heads: heads, headDimension: hd, positions: positions,
                       inverseFrequencies: $0.baseAddress!, layout: weights.ropeLayout, inverse: inverse,
                       rotaryDimension: rotated)
        }
        guard ropeMagnitude != 1 else { return }
        for row in 0..<(n * heads) {
            let head = x + row * hd
            for i in 0..<rotated { head[i] *= ropeMagnitude }
        }
    }

    /// out = the block's activation of (gate, up), over n rows of the feed-forward width; out may be gate.
    func activate(gate: UnsafeMutablePointer<Float>, up: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>,
                  tokens n: Int) {
        let ff = configuration.intermediateSize
        switch block.feedForward {
        case .swiglu:
            guard n >= 8 else { return Activation.swiglu(gate: gate, up: up, out: out, n * ff) }
            // Prompt-sized: the activation is a fifth of a layer's non-matrix work; spread it.
            nonisolated(unsafe) let gate = gate, up = up, out = out
            pool.parallelFor(n, minimumChunk: 4) { range in
                let offset = range.lowerBound * ff
                Activation.swiglu(gate: gate + offset, up: up + offset, out: out + offset, range.count * ff)
            }
        case .geglu:
            guard n >= 8 else { return GemmaActivation.geglu(gate: gate, up: up, out: out, n * ff) }
            nonisolated(unsafe) let gate = gate, up = up, out = out  // a tanh per value: spread it as SwiGLU's
            pool.parallelFor(n, minimumChunk: 4) { range in
                let offset = range.lowerBound * ff
                GemmaActivation.geglu(gate: gate + offset, up: up + offset, out: out + offset, range.count * ff)
            }
        }
    }
}

/// Inference's projections: int8 activations quantized once per input, the row-grouped stacks where the
/// CPU has them, and the installed adapter.
struct InferenceProjections: LayerProjections {
    let model: LlamaModel
    let grouped: GroupedWeights?
    let tokens: Int
    /// (tokens, max(64, rank)) floats for the adapter's A x.
    let scratch: UnsafeMutablePointer<Float>

    func project(_ targets: [(module: ProjectionModule, output: UnsafeMutablePointer<Float>)], layer: Int,
                 input: UnsafePointer<Float>, width: Int) {
        // Shared by projections reading one input; a lone projection quantizes inside Linear unless grouped.
        let quantized = targets.count > 1 || grouped != nil ? model.quantize(input, tokens: tokens, width: width) : nil
        model.project(targets, layer: layer, input: input, quantized: quantized, grouped: grouped, tokens: tokens,
                      scratch: scratch)
    }
}
