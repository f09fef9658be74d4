import Foundation
import Kernels
import ModelFormats

/// Transposed Q8_0 copies of a model's quantized matrices, for the backward pass of training.
///
/// The input gradient of `y = W x` is `Wᵀ g`: a sum over W's rows, across its quantization blocks.
/// Stored transposed and re-quantized to Q8_0 (blocks now along W's rows), it becomes an ordinary int8
/// product, as fast as the forward one. The copies cost about one byte per weight (122 MB for
/// SmolLM2-135M) and are built once, on first use; the re-quantization adds Q8_0's error (NMSE about
/// 1e-5) to a gradient that DP noise dominates, and on the AVX2 tier the gradients meet the copies as
/// 7-bit activations (`PackedMatrix(forGradients:)`). Float matrices keep the exact transpose product.
final class TransposedWeights: @unchecked Sendable {
    private var cache: [String: PackedMatrix] = [:]
    private var forwardCache: [String: PackedMatrix] = [:]
    private let lock = NSLock()

    /// W itself packed for the panel kernel (training multiplies each matrix with every sequence).
    func forward(_ key: String, of weights: WeightMatrix) -> PackedMatrix? {
        lock.lock()
        defer { lock.unlock() }
        if let cached = forwardCache[key] { return cached }
        let packed = PackedMatrix(weights)
        forwardCache[key] = packed
        return packed
    }

    /// Wᵀ in Q8_0, packed, built on first request for `key`.
    ///
    /// Building reads every row of W, which faults the mapped file's pages back in. With
    /// `releasingSource` (the forward pass reads a row-grouped copy, not the file) those pages are
    /// dropped again once the copy exists, so training does not hold the model's file resident beside
    /// its copies (about 100 MB for SmolLM2-135M); a later read of W only brings its pages back.
    func matrix(_ key: String, of weights: WeightMatrix, releasingSource: Bool = false) -> PackedMatrix? {
        lock.lock()
        defer { lock.unlock() }
        if let cached = cache[key] { return cached }
        // Wᵀ block by block: 32 rows of W at a time become one Q8_0 block in every row of Wᵀ, so the
        // scratch is 32 rows of floats, not the whole matrix (the output matrix alone is 113 MB in float32).
        let rows = weights.rows, columns = weights.columns
        let format = WeightFormat.q8_0, blockBytes = format.bytesPerBlock, rowBytes = format.rowBytes(columns: rows)
        let storage = ByteBuffer(count: columns * rowBytes)
        let strip = UnsafeMutablePointer<Float>.allocate(capacity: 32 * columns)
        let block = UnsafeMutablePointer<Float>.allocate(capacity: 32)
        defer { strip.deallocate(); block.deallocate() }
        for r0 in stride(from: 0, to: rows, by: 32) {
            for i in 0..<32 { weights.dequantizedRow(r0 + i, into: strip + i * columns) }
            for c in 0..<columns {
                for i in 0..<32 { block[i] = strip[i * columns + c] }
                Quantize.row(block, count: 32, format: format, into: storage.pointer + c * rowBytes + (r0 / 32) * blockBytes)
            }
        }
        let quantized = WeightMatrix(format: format, rows: columns, columns: rows, data: UnsafeRawPointer(storage.pointer),
                                     owner: storage)
        let matrix = PackedMatrix(quantized, forGradients: true)
        cache[key] = matrix
        if releasingSource {
            (weights.owner as? ResidentPageReleasing)?.releaseResidentPages(start: weights.rowPointer(0),
                                                                           count: rows * weights.rowBytes)
        }
        return matrix
    }
}

extension LlamaModel {
    /// The base products `W x` of several projections of one layer reading the same input, for training:
    /// int8 through the row-grouped (stacked) copies where they exist, else per projection as `precision` says.
    func trainingProducts(_ targets: [(module: ProjectionModule, output: UnsafeMutablePointer<Float>)], layer: Int,
                          input: UnsafePointer<Float>, tokens: Int, precision: ActivationPrecision) {
        let width = weights.layers[layer].projection(targets[0].module).columns
        if precision == .int8, width % 32 == 0, let grouped = groupedForInference() {
            baseProducts(targets, layer: layer, input: input,
                         quantized: QuantizedActivations(input, tokens: tokens, columns: width), grouped: grouped, tokens: tokens)
            return
        }
        for (module, output) in targets {
            Linear.forward(weights.layers[layer].projection(module), input: input, tokens: tokens, output: output,
                           precision: precision, pool: pool)
        }
    }

    /// `output = W input` for training: the packed copy of W when training in int8 on a quantized base
    /// (the inference copy of the output matrix where the row-grouped kernel runs, so it is held once).
    func forwardThrough(_ weights: WeightMatrix, key: String, input: UnsafePointer<Float>, tokens: Int,
                        output: UnsafeMutablePointer<Float>, precision: ActivationPrecision) {
        if precision == .int8, weights.data == self.weights.output.data, let head = groupedForInference()?.output {
            head.forward(input: input, tokens: tokens, output: output, pool: pool)
        } else if precision == .int8, tokens >= Linear.panelTokens, let packed = transposed.forward(key, of: weights) {
            Linear.forward(packed, input: input, tokens: tokens, output: output, pool: pool)
        } else {
            Linear.forward(weights, input: input, tokens: tokens, output: output, precision: precision, pool: pool)
        }
    }

    /// `gradInput (+)= Wᵀ gradOutput` for a base matrix: int8 on the transposed Q8_0 copy when the model
    /// trains in int8 and W is quantized, else the exact float path.
    func backwardThrough(_ weights: WeightMatrix, key: String, gradOutput: UnsafePointer<Float>, tokens: Int,
                         gradInput: UnsafeMutablePointer<Float>, accumulate: Bool, precision: ActivationPrecision) {
        if precision == .int8 && weights.format.hasIntegerKernel && weights.rows % 32 == 0,
           let packed = transposed.matrix(key, of: weights, releasingSource: groupedForInference() != nil) {
            Linear.forward(packed, input: gradOutput, tokens: tokens, output: gradInput, accumulate: accumulate, pool: pool)
        } else {
            Linear.backwardInput(weights, gradOutput: gradOutput, tokens: tokens, gradInput: gradInput,
                                 accumulate: accumulate, pool: pool)
        }
    }
}
