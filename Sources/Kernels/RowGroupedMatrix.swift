import CKernels

/// A quantized matrix re-laid in groups of 16 rows for the row-group kernels (`kernels_rowgroups.c`):
/// the same bytes per weight as the file's format, shuffled so that one vpdpbusd (AVX-512 VNNI: sixteen
/// rows) or one vpmaddubsw + vpmaddwd pair (AVX2: eight rows) multiplies four columns of those rows at
/// once and every row's sum stays in its own lane.
///
/// It can stack several matrices that read the same input (q, k and v; gate and up), so one parallel
/// loop computes all of them: output column `r` of the stack is row `r` of the concatenation.
public final class RowGroupedMatrix: @unchecked Sendable {
    public let format: WeightFormat
    /// Rows of the stack (the sum of the parts' rows).
    public let rows: Int
    public let columns: Int
    /// Where each part's rows start in the stack.
    public let partOffsets: [Int]
    let groups: Int
    let type: Int32
    let bytes: UnsafeMutableRawPointer
    /// Bytes held (the packed weights).
    public let byteCount: Int

    /// Whether this CPU runs a row-group kernel (the AVX2 one, or AVX-512 VNNI's where the CPU has it).
    public static var isAvailable: Bool { KernelBackend.selected.hasAVX2 }


    /// Packs `parts` stacked by rows; nil when the kernel cannot run here, or the parts differ in format
    /// or width, or their format has no row-group kernel (`WeightFormat.rowGroupType`).
    /// - Parameter copied: called with a part and a range of its rows once those rows are copied (a
    ///   single large part is packed a few thousand rows at a time, so its source can be released as
    ///   the copy grows and the matrix is never held twice).
    public init?(_ parts: [WeightMatrix], copied: (WeightMatrix, Range<Int>) -> Void = { _, _ in }) {
        guard Self.isAvailable, let first = parts.first, let type = first.format.rowGroupType,
              parts.allSatisfy({ $0.format == first.format && $0.columns == first.columns }) else { return nil }
        format = first.format
        columns = first.columns
        self.type = type
        var offsets: [Int] = []
        var total = 0
        for part in parts {
            offsets.append(total)
            total += part.rows
        }
        rows = total
        partOffsets = offsets
        groups = (total + 15) / 16
        // Parts are packed one after another; a part that does not end on a group boundary shares its
        // last group with the next, so stacking goes through one contiguous copy of the rows.
        byteCount = ck_rg_bytes(type, Int32(total), Int32(columns))
        bytes = .allocate(byteCount: max(64, byteCount), alignment: 64)
        if parts.count == 1 {
            let chunkRows = 4096  // a multiple of 16: each chunk fills whole groups
            let groupBytes = ck_rg_bytes(type, 16, Int32(columns))
            for start in stride(from: 0, to: total, by: chunkRows) {
                let count = min(chunkRows, total - start)
                ck_rg_pack(type, first.rowPointer(start), first.rowBytes, Int32(count), Int32(columns),
                           bytes + start / 16 * groupBytes)
                copied(first, start..<(start + count))
            }
        } else {
            let rowBytes = first.rowBytes
            let stacked = UnsafeMutableRawPointer.allocate(byteCount: max(1, total * rowBytes), alignment: 64)
            defer { stacked.deallocate() }
            for (part, offset) in zip(parts, offsets) {
                stacked.advanced(by: offset * rowBytes).copyMemory(from: part.data, byteCount: part.rows * rowBytes)
            }
            ck_rg_pack(type, stacked, rowBytes, Int32(total), Int32(columns), bytes)
            for part in parts { copied(part, 0..<part.rows) }
        }
    }

    deinit { bytes.deallocate() }

    /// `output[t·ldy + r] (+)= Σ_c W[r, c] · x[t, c]` for every row r of the stack; ldy defaults to `rows`.
    public func forward(quantized x: QuantizedActivations, output: UnsafeMutablePointer<Float>, ldy: Int? = nil,
                        accumulate: Bool = false, pool: ThreadPool = .serial) {
        require(x.columns == columns, "activations have \(x.columns) columns, weights \(columns)")
        let stride = ldy ?? rows
        require(stride >= rows, "output stride \(stride) is below the \(rows) rows")
        nonisolated(unsafe) let output = output
        let tokens = x.tokens
        let vnni = KernelBackend.selected == .avx512vnni
        // 7-bit activations on a Q8_0 stack take the AVX2 kernel's format 9 (no sign trick); VNNI's
        // vpdpbusd takes them as they are.
        let type = !vnni && x.limit <= 63 && self.type == 8 ? Int32(9) : self.type
        // A few groups per chunk: enough work to hide the hand-off, enough chunks to balance threads.
        pool.parallelFor(groups, minimumChunk: tokens == 1 ? 4 : 1) { range in
            let kernel = vnni ? ck_rg_gemm : ck_rg_gemm_avx2
            kernel(type, self.bytes, Int32(self.rows), Int32(self.columns), Int32(range.lowerBound),
                   Int32(range.count), x.values, x.scales, x.sums, Int32(tokens), output, Int32(stride),
                   accumulate ? 1 : 0)
        }
        withExtendedLifetime(x) {}
    }

    /// `forward` from float activations (quantized here).
    public func forward(input: UnsafePointer<Float>, tokens: Int, output: UnsafeMutablePointer<Float>, ldy: Int? = nil,
                        accumulate: Bool = false, pool: ThreadPool = .serial) {
        forward(quantized: QuantizedActivations(input, tokens: tokens, columns: columns), output: output, ldy: ldy,
                accumulate: accumulate, pool: pool)
    }
}

extension WeightFormat {
    /// The row-group kernels' format number (ggml's type number) for this format, nil where they have none:
    /// Q4_0, Q4_1, Q5_0 (its fifth bits as masks; most of a Q4_K_M file whose rows are not a multiple of 256
    /// wide) and Q8_0.
    var rowGroupType: Int32? {
        switch self {
        case .q4_0: return 2
        case .q4_1: return 3
        case .q5_0: return 6
        case .q8_0: return 8
        default: return nil
        }
    }
}
