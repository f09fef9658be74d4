import Foundation
import Kernels
import ModelFormats

/// Keys and values of every layer for the tokens seen so far, for incremental decoding. A windowed cache
/// (`LlamaModel.makeCache(keepingEveryKey: false)`) keeps on each sliding layer only the rows its window still reads.
public final class KVCache: @unchecked Sendable {
    public let layers: Int
    /// Floats per token per layer: key/value heads × head dimension.
    public let width: Int
    /// The context size the session was opened for (its first capacity): what LongRoPE chooses its factor set by,
    /// once for the session (`RopeFrequencies.longFactors`), as llama.cpp does by its context size.
    public let context: Int
    /// Tokens cached so far (the next token's position).
    public internal(set) var count: Int = 0
    /// Per layer, the window of the rows it keeps (a sliding layer's, in a windowed cache), nil where it keeps them all.
    let windows: [Int?]
    /// Per layer, the position of its first row and how many rows it has room for.
    private(set) var origins: [Int]
    private(set) var capacities: [Int]
    var keys: [UnsafeMutablePointer<Float>]
    var values: [UnsafeMutablePointer<Float>]

    public convenience init(layers: Int, width: Int, capacity: Int = 64) {
        self.init(layers: layers, width: width, capacity: capacity, windows: Array(repeating: nil, count: layers))
    }

    /// A windowed layer starts with room for twice its window (or `capacity`, when less): room to append a window's
    /// tokens before the rows no query reads any more are dropped.
    init(layers: Int, width: Int, capacity: Int, windows: [Int?]) {
        precondition(windows.count == layers)
        self.layers = layers
        self.width = width
        self.windows = windows
        context = max(1, capacity)
        origins = Array(repeating: 0, count: layers)
        capacities = windows.map { window in min(max(1, capacity), window.map { 2 * max(1, $0) } ?? .max) }
        keys = capacities.map { .allocate(capacity: $0 * width) }
        values = capacities.map { .allocate(capacity: $0 * width) }
    }

    deinit {
        keys.forEach { $0.deallocate() }
        values.forEach { $0.deallocate() }
    }

    /// Makes room for `n` tokens after position `start`. A windowed layer first drops the rows that no query from
    /// `start` on reads (before `Attention.firstKey(start, window)`), moving the rest to its front; a layer still short of
    /// room grows geometrically, keeping what it holds.
    func reserve(from start: Int, tokens n: Int) {
        for layer in 0..<layers {
            if let window = windows[layer], start + n - origins[layer] > capacities[layer] {
                let first = Attention.firstKey(position: start, window: window), offset = (first - origins[layer]) * width
                for rows in [keys[layer], values[layer]] {
                    memmove(rows, rows + offset, (start - first) * width * MemoryLayout<Float>.size)
                }
                origins[layer] = first
            }
            let needed = start + n - origins[layer]
            guard needed > capacities[layer] else { continue }
            let newCapacity = max(needed, capacities[layer] * 2)
            for isKey in [true, false] {
                let old = isKey ? keys[layer] : values[layer]
                let new = UnsafeMutablePointer<Float>.allocate(capacity: newCapacity * width)
                new.update(from: old, count: (start - origins[layer]) * width)
                old.deallocate()
                if isKey { keys[layer] = new } else { values[layer] = new }
            }
            capacities[layer] = newCapacity
        }
    }

    /// Forgets cached tokens from `position` on (for example to re-score a different continuation). A windowed cache
    /// goes back no further than the rows it still holds allow.
    public func truncate(to position: Int) {
        precondition(position >= 0 && position <= count)
        for layer in 0..<layers {
            precondition(windows[layer].map { Attention.firstKey(position: position, window: $0) >= origins[layer] } ?? true,
                         "a windowed cache has dropped the keys position \(position) reads")
        }
        count = position
    }

    /// Bytes held by the cache.
    public var bytes: Int { 2 * capacities.reduce(0, +) * width * MemoryLayout<Float>.size }
}

/// Which rows of the output logits a forward pass computes.
public enum LogitRows: Sendable {
    case none, last, all
    /// The rows from this index of the pass's tokens to its end (scoring needs no logits before its first
    /// counted position: a prompt's rows are run through the layers but not through the output head).
    case from(Int)
}

/// A Llama-family causal language model: RMSNorm, RoPE, grouped-query attention, SwiGLU, optional LoRA.
///
/// Inference (`forward`, with the KV cache) and training (`lossAndGradient`, with the kept activations)
/// run the same layer pass, `layerForward`, over the block that `block` describes.
public final class LlamaModel: @unchecked Sendable {
    public let weights: ModelWeights
    public var configuration: LlamaConfiguration { weights.configuration }
    public let pool: ThreadPool
    /// How activations meet quantized weights: `.int8` (fast, llama.cpp's way) by default for inference;
    /// `.float32` for exact comparisons. Training passes always use float32.
    public var precision: ActivationPrecision = .int8
    /// Whether int8 inference may use the 16-row-group kernels on x86 (AVX2, or AVX-512 VNNI where the CPU
    /// has it; on by default; off runs the row-tile and panel kernels on the file's own layout, for comparisons).
    public var rowGroupedInference = true
    public private(set) var adapter: LoRAAdapter?
    /// Transposed copies of the base matrices for int8 training backward passes (built on first use).
    let transposed = TransposedWeights()
    /// Scratch memory that training passes reuse (`Arena`).
    let scratchSlabs = ScratchSlabs()
    /// The quantized matrices in 16-row groups for int8 inference on x86 CPUs with AVX2 (built on first use).
    private var groupedWeights: GroupedWeights?
    private var groupedChecked = false
    private let groupedLock = NSLock()
    /// Per layer, per module: (A, B) as weight matrices in the base model's row order, and the scaling.
    private var loraMatrices: [[ProjectionModule: (a: WeightMatrix, b: WeightMatrix)]] = []
    private var loraScaling: Float = 0
    /// RoPE's inverse frequencies with the file's rope scaling (`RopeFrequencies`): the one table that inference
    /// and training read.
    let inverseFrequencies: [Float]
    /// LongRoPE's table with its long factors, which a session longer than the original context reads instead
    /// (`frequencies(context:)`); nil for every other scaling.
    let longInverseFrequencies: [Float]?
    /// The sliding layers' own table where they rotate with a rope base of their own, unscaled (Gemma 3's
    /// `rope_local_base_freq`); nil: every layer reads `inverseFrequencies`.
    let slidingInverseFrequencies: [Float]?
    /// What RoPE's cos and sin are multiplied by (`RopeFrequencies.magnitude`: LongRoPE's attention factor, else 1).
    let ropeMagnitude: Float
    /// The decoder block's structure, which the one layer pass reads (`layerForward`, `layerBackward`).
    let block: BlockDescription

    public init(weights: ModelWeights, pool: ThreadPool = ThreadPool()) {
        self.weights = weights
        self.pool = pool
        block = BlockDescription.of(weights.configuration.architecture)
        inverseFrequencies = RopeFrequencies.inverse(weights.configuration)
        longInverseFrequencies = RopeFrequencies.longInverse(weights.configuration)
        ropeMagnitude = RopeFrequencies.magnitude(weights.configuration)
        if let theta = weights.configuration.slidingRopeTheta {
            var sliding = weights.configuration
            (sliding.ropeTheta, sliding.ropeScaling) = (theta, .none)
            slidingInverseFrequencies = RopeFrequencies.inverse(sliding)
        } else {
            slidingInverseFrequencies = nil
        }
    }

    /// The table layer `layer` rotates with in a session rotating by `session` (`frequencies(context:tokens:)`):
    /// the sliding layers' own where they have one, which no session's context changes.
    func layerFrequencies(_ layer: Int, session: [Float]) -> [Float] {
        configuration.isSliding(layer: layer) ? slidingInverseFrequencies ?? session : session
    }

    /// The frequency table a session opened for `context` positions rotates by; throws when `tokens` positions are
    /// more than it computes.
    func frequencies(context: Int, tokens: Int) throws -> [Float] {
        let c = configuration, longest = RopeFrequencies.longest(c, context: context)
        guard tokens <= longest else {
            if longest < c.contextLength {
                throw LanguageModelError.shortFactorSessionTooLong(tokens: tokens, originalContext: longest, session: context)
            }
            throw LanguageModelError.contextTooLong(tokens: tokens, maximum: longest)
        }
        return RopeFrequencies.longFactors(c, context: context) ? longInverseFrequencies! : inverseFrequencies
    }

    /// A fresh cache sized for `capacity` tokens (it grows when needed), which is also the session's context size
    /// (`KVCache.context`: with LongRoPE, more than the original context means the long factors from the start).
    /// Without `keepingEveryKey`, its sliding layers keep only the rows their window reads (a window or two of them, not
    /// the whole sequence): for a session that never goes back further than a window (`generate`).
    public func makeCache(capacity: Int = 64, keepingEveryKey: Bool = true) -> KVCache {
        let c = configuration
        return KVCache(layers: c.numHiddenLayers, width: c.numKeyValueHeads * c.headDim, capacity: capacity,
                       windows: (0..<c.numHiddenLayers).map { keepingEveryKey ? nil : c.attentionWindow(layer: $0) })
    }

    /// Installs (or removes, with nil) a LoRA adapter applied as `y = W x + scaling · B (A x)`.
    public func setAdapter(_ adapter: LoRAAdapter?) {
        self.adapter = adapter
        loraMatrices = []
        guard let adapter else { return }
        precondition(adapter.layers.count == configuration.numHiddenLayers, "adapter layer count mismatch")
        loraScaling = Float(adapter.scaling)
        for layer in adapter.layers {
            var matrices: [ProjectionModule: (a: WeightMatrix, b: WeightMatrix)] = [:]
            for (module, pair) in layer {
                var b = pair.b
                if weights.ropeLayout == .adjacentPairs && (module == .qProj || module == .kProj) {
                    b = RoPEPermutation.permuteRows(b, outFeatures: pair.outFeatures, rank: pair.rank,
                                                    headDimension: configuration.headDim)
                }
                matrices[module] = (WeightMatrix(float32: pair.a, rows: pair.rank, columns: pair.inFeatures),
                                    WeightMatrix(float32: b, rows: pair.outFeatures, columns: pair.rank))
            }
            loraMatrices.append(matrices)
        }
    }

    /// output (tokens, out) = W input (+ LoRA) for one projection of one layer.
    ///
    /// `quantized` is `input` already quantized (shared by projections that read the same input).
    func project(_ module: ProjectionModule, layer: Int, input: UnsafePointer<Float>, quantized: QuantizedActivations?,
                 tokens: Int, output: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>) {
        let matrix = weights.layers[layer].projection(module)
        if let quantized, matrix.format.hasIntegerKernel {
            Linear.forward(matrix, quantized: quantized, output: output, pool: pool)
        } else {
            Linear.forward(matrix, input: input, tokens: tokens, output: output, precision: precision, pool: pool)
        }
        addAdapter(module, layer: layer, input: input, tokens: tokens, output: output, scratch: scratch)
    }

    /// Several projections of one input, each into its own output, with the installed adapter.
    func project(_ targets: [(module: ProjectionModule, output: UnsafeMutablePointer<Float>)], layer: Int,
                 input: UnsafePointer<Float>, quantized: QuantizedActivations?, grouped: GroupedWeights?, tokens: Int,
                 scratch: UnsafeMutablePointer<Float>) {
        guard let grouped, let quantized else {
            let matrices = targets.map { weights.layers[layer].projection($0.module) }
            if let quantized, targets.count > 1, matrices.allSatisfy({ $0.format.hasIntegerKernel }) {
                // One parallel loop for the stack (q, k, v; gate, up), then each adapter.
                Linear.forward(stack: Array(zip(matrices, targets.map(\.output))), quantized: quantized, pool: pool)
                for (module, output) in targets {
                    addAdapter(module, layer: layer, input: input, tokens: tokens, output: output, scratch: scratch)
                }
                return
            }
            for (module, output) in targets {
                project(module, layer: layer, input: input, quantized: quantized, tokens: tokens, output: output, scratch: scratch)
            }
            return
        }
        baseProducts(targets, layer: layer, input: input, quantized: quantized, grouped: grouped, tokens: tokens)
        for (module, output) in targets {
            addAdapter(module, layer: layer, input: input, tokens: tokens, output: output, scratch: scratch)
        }
    }

    /// The frozen base's products `W x` for several projections of one layer that read the same input.
    /// Stacked row-grouped matrices run as one product (one parallel loop for q, k and v; one for gate
    /// and up), split into the outputs after; projections without a grouped copy use `Linear.forward`.
    func baseProducts(_ targets: [(module: ProjectionModule, output: UnsafeMutablePointer<Float>)], layer: Int,
                      input: UnsafePointer<Float>, quantized: QuantizedActivations, grouped: GroupedWeights, tokens: Int) {
        var done: Set<ProjectionModule> = []
        for (module, output) in targets where !done.contains(module) {
            done.insert(module)
            guard let (matrix, _) = grouped.layers[layer][module] else {
                let weights = weights.layers[layer].projection(module)
                if weights.format.hasIntegerKernel {
                    Linear.forward(weights, quantized: quantized, output: output, pool: pool)
                } else {
                    Linear.forward(weights, input: input, tokens: tokens, output: output, precision: .int8, pool: pool)
                }
                continue
            }
            let members = targets.filter { grouped.layers[layer][$0.module]?.matrix === matrix }
            if members.count == 1 && matrix.partOffsets.count == 1 {
                matrix.forward(quantized: quantized, output: output, pool: pool)
                continue
            }
            let stack = UnsafeMutablePointer<Float>.allocate(capacity: tokens * matrix.rows)
            defer { stack.deallocate() }
            matrix.forward(quantized: quantized, output: stack, pool: pool)
            for member in members {
                done.insert(member.module)
                let offset = grouped.layers[layer][member.module]!.offset
                let width = weights.layers[layer].projection(member.module).rows
                for t in 0..<tokens {
                    (member.output + t * width).update(from: stack + t * matrix.rows + offset, count: width)
                }
            }
        }
    }

    /// Adds the installed adapter's `scaling · B (A x)` for one projection, if it adapts it.
    private func addAdapter(_ module: ProjectionModule, layer: Int, input: UnsafePointer<Float>, tokens: Int,
                            output: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>) {
        guard !loraMatrices.isEmpty, let pair = loraMatrices[layer][module] else { return }
        // scratch (tokens, rank) = A x, scaled; then output += B scratch.
        Linear.forward(pair.a, input: input, tokens: tokens, output: scratch, pool: .serial)
        for i in 0..<(tokens * pair.a.rows) { scratch[i] *= loraScaling }
        Linear.forward(pair.b, input: scratch, tokens: tokens, output: output, accumulate: true, pool: pool)
    }

    /// `input` quantized once for several projections, when this model multiplies in int8.
    func quantize(_ input: UnsafePointer<Float>, tokens: Int, width: Int) -> QuantizedActivations? {
        precision == .int8 && width % 32 == 0 ? QuantizedActivations(input, tokens: tokens, columns: width) : nil
    }

    /// Runs `tokens` after what `cache` holds, appending their keys and values, and hands the
    /// requested logits rows to `body(row, logits)` where logits has `vocabSize` entries.
    public func forward(tokens: [Int], cache: KVCache, logits rows: LogitRows,
                        _ body: (Int, UnsafePointer<Float>) throws -> Void = { _, _ in }) throws {
        let vocabulary = configuration.vocabSize
        try forward(tokens: tokens, cache: cache, logitChunks: rows) { first, count, logits in
            for i in 0..<count { try body(first + i, logits + i * vocabulary) }
        }
    }

    /// `forward` handing the logits over a chunk of rows at a time: `body(firstRow, count, logits)`
    /// with logits (count, vocabSize), so a caller can work on the rows of a chunk in parallel.
    public func forward(tokens: [Int], cache: KVCache, logitChunks rows: LogitRows,
                        _ body: (Int, Int, UnsafePointer<Float>) throws -> Void) throws {
        let c = configuration
        let n = tokens.count
        guard n > 0 else { return }
        let start = cache.count
        let frequencies = try frequencies(context: cache.context, tokens: start + n)
        for token in tokens where token < 0 || token >= c.vocabSize {
            throw LanguageModelError.tokenOutOfRange(token: token, vocabularySize: c.vocabSize)
        }
        cache.reserve(from: start, tokens: n)

        let d = c.hiddenSize, kvWidth = c.numKeyValueHeads * c.headDim, qWidth = c.numAttentionHeads * c.headDim
        let ff = c.intermediateSize

        // One scratch set for every layer: the residual x is updated in place, h takes each norm's output and
        // each output projection, the activation is written over the gate; only the cache keeps anything.
        let x = UnsafeMutablePointer<Float>.allocate(capacity: n * d)
        let h = UnsafeMutablePointer<Float>.allocate(capacity: n * max(d, qWidth))
        let q = UnsafeMutablePointer<Float>.allocate(capacity: n * qWidth)
        let attention = UnsafeMutablePointer<Float>.allocate(capacity: n * qWidth)
        let gate = UnsafeMutablePointer<Float>.allocate(capacity: n * ff)
        let up = UnsafeMutablePointer<Float>.allocate(capacity: n * ff)
        let scratch = UnsafeMutablePointer<Float>.allocate(capacity: n * max(64, adapter?.rank ?? 1))
        let fusedWidth = block.fusedWidth(c)
        let fused = fusedWidth > 0 ? UnsafeMutablePointer<Float>.allocate(capacity: n * fusedWidth) : nil
        let grouped = precision == .int8 && rowGroupedInference ? groupedForInference() : nil
        let positions = UnsafeMutablePointer<Int>.allocate(capacity: n)
        defer {
            for buffer in [x, h, q, attention, gate, up, scratch] { buffer.deallocate() }
            fused?.deallocate()
            positions.deallocate()
        }
        for t in 0..<n { positions[t] = start + t }
        embed(tokens, into: x)
        let projections = InferenceProjections(model: self, grouped: grouped, tokens: n, scratch: scratch)
        for layer in 0..<c.numHiddenLayers {
            let origin = cache.origins[layer]
            let buffers = LayerBuffers(
                input: x, attentionIn: h, q: q, k: cache.keys[layer] + (start - origin) * kvWidth,
                v: cache.values[layer] + (start - origin) * kvWidth, attention: attention, projected: h, middle: x,
                feedForwardIn: h, gate: gate, up: up, activated: gate, output: x, fused: fused)
            layerForward(layer, buffers, tokens: n,
                         context: AttentionContext(keys: cache.keys[layer], values: cache.values[layer], start: start,
                                                   origin: origin, positions: positions, frequencies: frequencies),
                         projections: projections)
        }
        cache.count = start + n

        let wanted: Range<Int>
        switch rows {
        case .none: return
        case .last: wanted = (n - 1)..<n
        case .all: wanted = 0..<n
        case let .from(first): wanted = min(max(first, 0), n)..<n
        }
        guard !wanted.isEmpty else { return }
        let vocabulary = c.vocabSize
        // Rows per pass over the output matrix (its 49,152 rows are streamed from memory once per pass):
        // 64 tokens of logits are 12.6 MB for SmolLM2, and a 128-token record takes two passes.
        let chunk = min(64, wanted.count)
        let logits = UnsafeMutablePointer<Float>.allocate(capacity: chunk * vocabulary)
        defer { logits.deallocate() }
        var row = wanted.lowerBound
        while row < wanted.upperBound {
            let count = min(chunk, wanted.upperBound - row)
            normForward(x + row * d, weight: weights.finalNorm, tokens: count, out: h)
            if let head = grouped?.output {
                head.forward(input: h, tokens: count, output: logits, pool: pool)
            } else {
                Linear.forward(weights.output, input: h, tokens: count, output: logits, precision: precision, pool: pool)
            }
            if let cap = c.finalLogitSoftcap { Softcap.apply(logits, count * vocabulary, cap: Float(cap)) }
            try body(row, count, logits)
            row += count
        }
    }
}

extension LlamaModel {
    /// The row-grouped copies for int8 inference, built once on first use; nil where no row-group kernel
    /// runs (no AVX2: the generic and NEON tiers) or there are no quantized matrices.
    ///
    /// Once built, the mapped file's pages behind the copied matrices are dropped from resident memory:
    /// the copies take over, so inference does not hold the model twice. (The embedding's rows are still
    /// read for lookups, a page at a time.)
    func groupedForInference() -> GroupedWeights? {
        groupedLock.lock()
        defer { groupedLock.unlock() }
        if !groupedChecked {
            groupedChecked = true
            // Each source is released as soon as its copy exists, so the model is never resident twice.
            groupedWeights = GroupedWeights(weights) { matrix, rows in
                (matrix.owner as? ResidentPageReleasing)?.releaseResidentPages(start: matrix.rowPointer(rows.lowerBound),
                                                                              count: rows.count * matrix.rowBytes)
            }
        }
        return groupedWeights
    }
}

/// A model's quantized matrices in 16-row groups, with the projections that share an input stacked:
/// q, k and v; gate and up.
final class GroupedWeights: @unchecked Sendable {
    /// Per layer, per module: the matrix holding it and where its rows start.
    let layers: [[ProjectionModule: (matrix: RowGroupedMatrix, offset: Int)]]
    let output: RowGroupedMatrix?

    /// - Parameter copied: called with a source matrix and a range of its rows once they are copied.
    init?(_ weights: ModelWeights, copied: (WeightMatrix, Range<Int>) -> Void = { _, _ in }) {
        guard RowGroupedMatrix.isAvailable else { return nil }
        let block = BlockDescription.of(weights.configuration.architecture)
        let stacks = [block.attentionInputs, [block.attentionOutput], block.feedForwardInputs, [block.feedForwardOutput]]
        var layers: [[ProjectionModule: (matrix: RowGroupedMatrix, offset: Int)]] = []
        for layer in weights.layers {
            var entries: [ProjectionModule: (matrix: RowGroupedMatrix, offset: Int)] = [:]
            for stack in stacks {
                let parts = stack.map { layer.projection($0) }
                if let matrix = RowGroupedMatrix(parts, copied: copied) {
                    for (module, offset) in zip(stack, matrix.partOffsets) { entries[module] = (matrix, offset) }
                } else {
                    // Different formats within a stack: each on its own where it can.
                    for (module, part) in zip(stack, parts) {
                        if let matrix = RowGroupedMatrix([part], copied: copied) {
                            entries[module] = (matrix, 0)
                                }
                    }
                }
            }
            layers.append(entries)
        }
        output = RowGroupedMatrix([weights.output], copied: copied)
        guard output != nil || layers.contains(where: { !$0.isEmpty }) else { return nil }
        self.layers = layers
    }
}

/// Causal grouped-query attention over cached keys and values.
enum Attention {
    /// The first key position a query at `position` attends to: 0, or with a sliding `window` the oldest of the
    /// `window` positions ending at the query's own (a key `window` or more positions back is masked, as transformers'
    /// `sliding_window_overlay` keeps kv > q − window and llama.cpp's `is_masked_swa` masks q − kv ≥ window).
    @inline(__always)
    static func firstKey(position: Int, window: Int?) -> Int {
        guard let window else { return 0 }
        return max(0, position - window + 1)
    }

    /// Query rows per block of the attention's tile products (`Vector.tileProduct`'s AVX2 kernel takes four at a
    /// time): each key and value row loaded serves the block's rows.
    static let blockRows = 4

    /// output (tokens, heads·hd): for query row t at position p = start+t, softmax(cap(scale·q·Kᵀ)) V over
    /// positions `firstKey(p, window)`...p (scale 1/√hd unless the model says otherwise; cap c·tanh(s/c) with a
    /// `softcap`, else none; every earlier position with no `window`); query head h reads key/value head
    /// h / (heads / kvHeads).
    ///
    /// Several query rows (prefill, scoring, training) go in blocks of `blockRows` consecutive rows of one head:
    /// their scores against the union of their keys are one tile product with a transposed copy of the keys, each
    /// row's entries outside its own band are set to zero after its softmax, and P·V is a second tile product.
    /// A single query row (decoding) reads the keys in place, where the copy would cost more than it saves.
    /// Row 0 of `keys` and `values` is position `origin` (a windowed cache's sliding layer, `KVCache`): every key a query
    /// reads lies at or after it.
    static func causal(queries: UnsafePointer<Float>, keys: UnsafePointer<Float>, values: UnsafePointer<Float>,
                       tokens: Int, start: Int, origin: Int = 0, heads: Int, kvHeads: Int, headDimension hd: Int,
                       scale: Float? = nil, softcap: Float? = nil, window: Int? = nil, output: UnsafeMutablePointer<Float>,
                       pool: ThreadPool) {
        let group = heads / kvHeads
        let kvWidth = kvHeads * hd, qWidth = heads * hd
        let scale = scale ?? 1 / Float(hd).squareRoot()
        nonisolated(unsafe) let queries = queries, keys = keys, values = values, output = output
        guard tokens > 1 else {
            pool.parallelFor(tokens * heads, minimumChunk: 4) { range in
                let scores = UnsafeMutablePointer<Float>.allocate(capacity: start + tokens)
                defer { scores.deallocate() }
                for task in range {
                    let t = task / heads, head = task % heads, kvHead = head / group
                    let first = firstKey(position: start + t, window: window), length = start + t + 1 - first
                    let query = queries + t * qWidth + head * hd
                    let keyRows = keys + (first - origin) * kvWidth + kvHead * hd
                    let valueRows = values + (first - origin) * kvWidth + kvHead * hd
                    Vector.dotRows(query, rows: keyRows, stride: kvWidth, count: length, width: hd, scale: scale, into: scores)
                    if let softcap { Softcap.apply(scores, length, cap: softcap) }
                    Activation.softmax(scores, length)
                    Vector.attentionValues(into: output + t * qWidth + head * hd, rows: valueRows, rowStride: kvWidth,
                                           coefficients: scores, count: length, width: hd)
                }
            }
            return
        }
        let total = start + tokens, blocks = (tokens + blockRows - 1) / blockRows
        // keysT[kvHead][i][j] = keys[low + j][kvHead·hd + i]: a key head's columns from the first key any row reads, the
        // rows the score product reads.
        let low = firstKey(position: start, window: window), span = total - low
        nonisolated(unsafe) let keysT = UnsafeMutablePointer<Float>.allocate(capacity: kvHeads * hd * span)
        defer { keysT.deallocate() }
        for kvHead in 0..<kvHeads {
            Vector.transpose(keys + (low - origin) * kvWidth + kvHead * hd, stride: kvWidth, count: span, width: hd,
                             into: keysT + kvHead * hd * span, outStride: span)
        }
        pool.parallelFor(blocks * heads) { range in
            let scores = UnsafeMutablePointer<Float>.allocate(capacity: blockRows * total)
            defer { scores.deallocate() }
            for task in range {
                let t0 = task / heads * blockRows, head = task % heads, kvHead = head / group
                let rows = min(blockRows, tokens - t0), last = start + t0 + rows - 1
                let first0 = firstKey(position: start + t0, window: window), width = last + 1 - first0
                Vector.tileProduct(rows: rows, columns: width, depth: hd, scale: scale, a: queries + t0 * qWidth + head * hd,
                                   aRowStride: qWidth, aDepthStride: 1, b: keysT + kvHead * hd * span + first0 - low,
                                   bStride: span, into: scores, outStride: total, accumulate: false)
                for r in 0..<rows {
                    let position = start + t0 + r, first = firstKey(position: position, window: window)
                    let row = scores + r * total, band = row + first - first0, length = position + 1 - first
                    if let softcap { Softcap.apply(band, length, cap: softcap) }
                    Activation.softmax(band, length)
                    // The block's keys outside this row's band: masked, so they weigh nothing in P·V.
                    row.initialize(repeating: 0, count: first - first0)
                    (band + length).initialize(repeating: 0, count: last - position)
                }
                Vector.tileProduct(rows: rows, columns: hd, depth: width, a: scores, aRowStride: total, aDepthStride: 1,
                                   b: values + (first0 - origin) * kvWidth + kvHead * hd, bStride: kvWidth,
                                   into: output + t0 * qWidth + head * hd, outStride: qWidth, accumulate: false)
            }
        }
    }
}
