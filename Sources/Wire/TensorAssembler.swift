/// Reassembles one tensor from its `TensorChunk`s, in any order, refusing chunks that belong to
/// another tensor or round, reach outside the tensor, overlap values already received, or declare
/// a tensor larger than the receiver's limit (checked before the values are allocated).
public struct TensorAssembler: Sendable {
    /// The tensor's name.
    public let name: String
    /// The round it belongs to.
    public let round: UInt64
    /// Number of values in the whole tensor.
    public let totalCount: Int
    /// Values received so far.
    public private(set) var receivedCount = 0

    private var values: [Float]
    /// Disjoint, sorted, merged ranges of values received.
    private var received: [Range<Int>] = []

    /// Starts assembling the tensor `first` belongs to, then adds `first`.
    /// - Parameter maximumCount: the most values this receiver accepts for one tensor.
    /// - Throws: `WireError.tensorTooLarge` before allocating, or any error of `add`.
    public init(first: TensorChunk, maximumCount: Int) throws {
        guard first.totalCount <= UInt64(max(maximumCount, 0)) else {
            throw WireError.tensorTooLarge(tensor: first.name, count: first.totalCount, limit: maximumCount)
        }
        name = first.name
        round = first.round
        totalCount = Int(first.totalCount)
        values = [Float](repeating: 0, count: totalCount)
        try add(first)
    }

    /// Whether every value has arrived.
    public var isComplete: Bool { receivedCount == totalCount }

    /// Adds one chunk.
    /// - Throws: `WireError.chunkMismatch`, `.chunkOutOfRange`, `.chunkOverlaps`, or `.invalidValue`
    ///   for an empty chunk of a non-empty tensor.
    public mutating func add(_ chunk: TensorChunk) throws {
        guard chunk.name == name else {
            throw WireError.chunkMismatch(tensor: name, field: "name", expected: "'\(name)'", actual: "'\(chunk.name)'")
        }
        guard chunk.round == round else {
            throw WireError.chunkMismatch(tensor: name, field: "round", expected: "\(round)", actual: "\(chunk.round)")
        }
        guard chunk.totalCount == UInt64(totalCount) else {
            throw WireError.chunkMismatch(tensor: name, field: "totalCount", expected: "\(totalCount)",
                                          actual: "\(chunk.totalCount)")
        }
        let count = chunk.values.count
        guard count > 0 || totalCount == 0 else {
            throw WireError.invalidValue(field: "tensorChunk.values", reason: "empty chunk for tensor '\(name)'")
        }
        // offset + count <= total, written so that it cannot overflow.
        guard chunk.offset <= UInt64(totalCount), UInt64(count) <= UInt64(totalCount) - chunk.offset else {
            throw WireError.chunkOutOfRange(tensor: name, offset: chunk.offset, count: count, total: totalCount)
        }
        guard count > 0 else { return }
        let range = Int(chunk.offset)..<(Int(chunk.offset) + count)
        // The first received range that ends after this one starts is the only one that could overlap.
        var low = 0, high = received.count
        while low < high {
            let middle = (low + high) / 2
            if received[middle].upperBound <= range.lowerBound { low = middle + 1 } else { high = middle }
        }
        if low < received.count, received[low].overlaps(range) {
            throw WireError.chunkOverlaps(tensor: name, offset: chunk.offset, count: count, existing: received[low])
        }
        values.replaceSubrange(range, with: chunk.values)
        receivedCount += count
        // Insert at `low`, merging with touching neighbours to keep the list short.
        var merged = range
        var insertAt = low
        if low < received.count, received[low].lowerBound == merged.upperBound {
            merged = merged.lowerBound..<received[low].upperBound
            received.remove(at: low)
        }
        if insertAt > 0, received[insertAt - 1].upperBound == merged.lowerBound {
            merged = received[insertAt - 1].lowerBound..<merged.upperBound
            received.remove(at: insertAt - 1)
            insertAt -= 1
        }
        received.insert(merged, at: insertAt)
    }

    /// The whole tensor.
    /// - Throws: `WireError.tensorIncomplete` if values are missing.
    public func finish() throws -> [Float] {
        guard isComplete else { throw WireError.tensorIncomplete(tensor: name, received: receivedCount, total: totalCount) }
        return values
    }
}
