import CKernels

/// How a weight matrix's rows are stored; the block layouts are ggml's (see `TensorType` in ModelFormats).
public enum WeightFormat: Sendable, Equatable {
    case f32, f16, bf16, q8_0, q4_0, q4_1
    /// ggml's 5-bit blocks of 32 and its K-quants (super-blocks of 256): layouts in `QuantBlocks`.
    case q5_0, q5_1, q2_K, q3_K, q4_K, q5_K, q6_K

    /// Elements per block along a row.
    public var blockSize: Int {
        switch self {
        case .f32, .f16, .bf16: return 1
        case .q8_0, .q4_0, .q4_1, .q5_0, .q5_1: return 32
        case .q2_K, .q3_K, .q4_K, .q5_K, .q6_K: return 256
        }
    }

    /// Bytes per block.
    public var bytesPerBlock: Int {
        switch self {
        case .f32: return 4
        case .f16, .bf16: return 2
        case .q4_0: return 18
        case .q4_1: return 20
        case .q5_0: return 22
        case .q5_1: return 24
        case .q8_0: return 34
        case .q2_K: return 84
        case .q3_K: return 110
        case .q4_K: return 144
        case .q5_K: return 176
        case .q6_K: return 210
        }
    }

    /// Bytes one row of `columns` elements occupies.
    public func rowBytes(columns: Int) -> Int {
        require(columns % blockSize == 0, "row length \(columns) is not a multiple of the block size \(blockSize)")
        return columns / blockSize * bytesPerBlock
    }
}

/// A read-only weight matrix `W` of shape `[rows, columns]`, row-major, in any `WeightFormat`.
///
/// The bytes belong to someone else (usually a memory-mapped file); `owner` keeps them alive.
/// A linear layer computes `y = W x`, so `rows` is the output width and `columns` the input width.
public struct WeightMatrix: @unchecked Sendable {
    public let format: WeightFormat
    public let rows: Int
    public let columns: Int
    public let data: UnsafeRawPointer
    public let rowBytes: Int
    /// Keeps the storage alive for as long as the matrix is used.
    public let owner: AnyObject?

    public init(format: WeightFormat, rows: Int, columns: Int, data: UnsafeRawPointer, owner: AnyObject?) {
        self.format = format
        self.rows = rows
        self.columns = columns
        self.data = data
        self.rowBytes = format.rowBytes(columns: columns)
        self.owner = owner
    }

    /// A matrix holding its own float32 copy of `values` (row-major).
    public init(float32 values: [Float], rows: Int, columns: Int) {
        require(values.count == rows * columns, "expected \(rows * columns) values, got \(values.count)")
        let buffer = FloatBuffer(values)
        self.init(format: .f32, rows: rows, columns: columns, data: UnsafeRawPointer(buffer.pointer), owner: buffer)
    }

    /// Pointer to the first byte of `row`.
    @inline(__always)
    public func rowPointer(_ row: Int) -> UnsafeRawPointer { data + row * rowBytes }

    /// Row `row` dequantized to float32 (used by embeddings lookups and tests).
    public func dequantizedRow(_ row: Int, into output: UnsafeMutablePointer<Float>) {
        if let type = KernelBackend.selected.cDequantizeType(format) {
            ck_dequantize_row(type, rowPointer(row), output, columns)
        } else {
            Dequantize.row(format: format, source: rowPointer(row), count: columns, into: output)
        }
    }

    /// The whole matrix as float32 (tests and small matrices only).
    public func dequantized() -> [Float] {
        var out = [Float](repeating: 0, count: rows * columns)
        out.withUnsafeMutableBufferPointer { buffer in
            for row in 0..<rows { dequantizedRow(row, into: buffer.baseAddress! + row * columns) }
        }
        return out
    }
}

/// A heap buffer of floats with a stable address, used as the owner of computed matrices.
public final class FloatBuffer: @unchecked Sendable {
    public let pointer: UnsafeMutablePointer<Float>
    public let count: Int

    public init(count: Int) {
        self.count = count
        pointer = .allocate(capacity: max(count, 1))
        pointer.initialize(repeating: 0, count: max(count, 1))
    }

    public convenience init(_ values: [Float]) {
        self.init(count: values.count)
        values.withUnsafeBufferPointer { pointer.update(from: $0.baseAddress!, count: values.count) }
    }

    deinit { pointer.deallocate() }
}
