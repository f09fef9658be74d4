import SecureCrypto

/// Who masks with whom and who holds whose shares.
///
/// `.complete` is the classic protocol of Bonawitz et al. (CCS 2017): every pair of clients shares a
/// mask and every client holds a share of every other client's secrets, so a client's cost grows
/// linearly with the cohort. `.harary(degree:)` is SecAgg+ (Bell et al., CCS 2020): a Harary graph
/// H(k, n) (the k-connected graph with fewest edges: a ring where each node links to its k/2 nearest
/// on each side, plus a diameter for odd k) laid over a random ordering of the cohort. The ordering is
/// drawn from a public seed derived from the session id, so every party computes the same graph and
/// nobody chooses it after seeing the keys. Each client then masks with and shares among only its
/// k neighbours, and the threshold applies per neighbourhood.
public enum NeighbourGraph: Sendable, Equatable, CustomStringConvertible {
    /// Every client is every other client's neighbour.
    case complete
    /// A random Harary graph of the given degree (at least 2); a degree of n - 1 or more is complete.
    case harary(degree: Int)

    /// The SecAgg+ degree this project uses for a cohort of n: the smallest even k >= 3 ceil(log2 n),
    /// and at most n - 1. Bell et al. show k = O(log n) suffices for privacy and dropout robustness with
    /// overwhelming probability; the constant 3 is our choice, not a figure from the paper: with the
    /// default threshold (two thirds of a neighbourhood) it leaves each client about k/3 of slack for
    /// dropouts, e.g. k = 22 for n = 100, k = 28 for n = 500, k = 30 for n = 1000.
    public static func defaultDegree(cohortSize n: Int) -> Int {
        guard n > 2 else { return max(n - 1, 0) }
        var log2n = 0
        while (1 << log2n) < n { log2n += 1 }  // ceil(log2 n)
        var k = 3 * log2n
        if k % 2 == 1 { k += 1 }
        return min(k, n - 1)
    }

    public var description: String {
        switch self {
        case .complete: return "complete graph"
        case let .harary(degree): return "random Harary graph of degree \(degree)"
        }
    }

    /// The closed neighbourhood (the node itself and its neighbours, sorted) of every participant.
    /// `participants` must be sorted and distinct; `seed` orders the ring for `.harary`.
    func closedNeighbourhoods(participants: [ParticipantID], seed: [UInt8]) throws -> [ParticipantID: [ParticipantID]] {
        let n = participants.count
        var adjacency = [Set<Int>](repeating: [], count: n)
        switch self {
        case .complete:
            for a in 0..<n { adjacency[a] = Set(0..<n) }
        case let .harary(degree) where degree >= n - 1:
            for a in 0..<n { adjacency[a] = Set(0..<n) }
        case let .harary(degree):
            // Position p on the ring holds participant order[p].
            let order = try Self.randomPermutation(count: n, seed: seed)
            func link(_ p: Int, _ q: Int) {
                let a = order[p % n], b = order[q % n]
                adjacency[a].insert(b)
                adjacency[b].insert(a)
            }
            for p in 0..<n {
                adjacency[order[p]].insert(order[p])
                for step in stride(from: 1, through: degree / 2, by: 1) { link(p, p + step) }
            }
            if degree % 2 == 1 {
                // Harary's construction for odd k: diameters for even n; for odd n, nodes
                // 0...(n-1)/2 link to the node (n+1)/2 ahead (one node ends with degree k + 1).
                if n % 2 == 0 {
                    for p in 0..<(n / 2) { link(p, p + n / 2) }
                } else {
                    for p in 0...((n - 1) / 2) { link(p, p + (n + 1) / 2) }
                }
            }
        }
        var result = [ParticipantID: [ParticipantID]]()
        for a in 0..<n { result[participants[a]] = adjacency[a].sorted().map { participants[$0] } }
        return result
    }

    /// A uniform permutation of 0..<count: Fisher-Yates driven by the ChaCha20 stream of `seed`, with
    /// rejection sampling so every index is exactly uniform.
    static func randomPermutation(count: Int, seed: [UInt8]) throws -> [Int] {
        let stream = try MaskStream(seed: SecretBytes(copying: seed))
        var words = [UInt32]()
        var nextWord = 0, wordOffset = 0
        func draw() -> UInt32 {
            if nextWord == words.count {
                words = stream.words(count: 1024, startingAtWord: wordOffset)
                wordOffset += 1024
                nextWord = 0
            }
            defer { nextWord += 1 }
            return words[nextWord]
        }
        var order = Array(0..<count)
        var i = count - 1
        while i > 0 {
            let range = UInt64(i + 1)
            // Accept only words below the largest multiple of `range`, so `word % range` is uniform.
            let limit = (UInt64(1) << 32) - (UInt64(1) << 32) % range
            var word = UInt64(draw())
            while word >= limit { word = UInt64(draw()) }
            order.swapAt(i, Int(word % range))
            i -= 1
        }
        return order
    }
}
