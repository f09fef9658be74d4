import Kernels
import XCTest
@testable import LanguageModel

/// Attention's forward (`Attention.causal`) and backward (`TrainingAttention.backward`), which work in blocks of
/// `Attention.blockRows` rows, against their definition written out in Double: token counts off the block (1, 2, 5,
/// 11), a sliding window cutting the band (1, 3, 6) or none, Gemma 2's soft-cap and a scale of its own, grouped
/// query heads, and head widths off the kernels' 16-column steps (12) and on them (64). The backward's scratch starts
/// as NaN, so an entry read before it is written shows.
final class AttentionBlockTests: XCTestCase {
    struct Shape {
        let heads: Int, kvHeads: Int, hd: Int
        var qWidth: Int { heads * hd }
        var kvWidth: Int { kvHeads * hd }
        var group: Int { heads / kvHeads }
    }

    /// Grouped query heads with a width off the 16-column steps, and a width on them.
    let shapes = [Shape(heads: 6, kvHeads: 2, hd: 12), Shape(heads: 2, kvHeads: 1, hd: 64)]
    /// Windows cutting the band of a block of four rows, one key wide, and none.
    let windows: [Int?] = [nil, 1, 3, 6]
    /// The default scale without a cap, and Gemma 2's own scale and soft-cap.
    let scalesAndCaps: [(scale: Float?, softcap: Float?)] = [(nil, nil), (0.3, 2)]

    /// Deterministic values in [−1, 1].
    struct Values {
        var state: UInt64
        mutating func next(_ n: Int) -> [Float] {
            (0..<n).map { _ in
                state = state &* 6364136223846793005 &+ 1442695040888963407
                return Float(Int64(bitPattern: state >> 11) % 2_000_001 - 1_000_000) / 1_000_000
            }
        }
    }

    /// Whether a query at `position` sees the key at `key`: causal, and within the window's last positions.
    func sees(_ position: Int, _ key: Int, window: Int?) -> Bool {
        key <= position && (window.map { position - key < $0 } ?? true)
    }

    /// Scores, capped scores and probabilities of one query row in Double (masked keys: probability 0).
    func probabilities(query: ArraySlice<Float>, keys: [Float], kvWidth: Int, keyOffset: Int, position: Int, hd: Int,
                       scale: Double, softcap: Double?, window: Int?) -> (capped: [Double], p: [Double]) {
        var capped = [Double](repeating: -.infinity, count: position + 1)
        for j in 0...position where sees(position, j, window: window) {
            var s = 0.0
            for i in 0..<hd { s += Double(query[query.startIndex + i]) * Double(keys[j * kvWidth + keyOffset + i]) }
            s *= scale
            capped[j] = softcap.map { $0 * tanh(s / $0) } ?? s
        }
        let top = capped.max()!
        var p = capped.map { $0 == -.infinity ? 0 : exp($0 - top) }
        let sum = p.reduce(0, +)
        p = p.map { $0 / sum }
        return (capped, p)
    }

    /// The largest relative difference, NaN counting as infinite.
    func worst(_ got: [Float], _ expected: [Double]) -> Double {
        zip(got, expected).map { got, expected in
            let difference = abs(Double(got) - expected) / max(1, abs(expected))
            return difference.isNaN ? .infinity : difference
        }.max() ?? 0
    }

    func testForwardMatchesTheDefinition() {
        var values = Values(state: 51)
        let pool = ThreadPool(threads: 2)
        for shape in shapes {
            let (qWidth, kvWidth, group) = (shape.qWidth, shape.kvWidth, shape.group)
            for tokens in [1, 2, 5, 11] {
                for start in [0, 4] {
                    for window in windows {
                        for (scale, softcap) in scalesAndCaps {
                            let total = start + tokens
                            let q = values.next(tokens * qWidth), k = values.next(total * kvWidth)
                            let v = values.next(total * kvWidth)
                            var out = [Float](repeating: .nan, count: tokens * qWidth)
                            Attention.causal(queries: q, keys: k, values: v, tokens: tokens, start: start, heads: shape.heads,
                                             kvHeads: shape.kvHeads, headDimension: shape.hd, scale: scale, softcap: softcap,
                                             window: window, output: &out, pool: pool)
                            var expected = [Double](repeating: 0, count: tokens * qWidth)
                            for t in 0..<tokens {
                                for head in 0..<shape.heads {
                                    let kvOffset = head / group * shape.hd, base = t * qWidth + head * shape.hd
                                    let p = probabilities(query: q[base..<(base + shape.hd)], keys: k, kvWidth: kvWidth,
                                                          keyOffset: kvOffset, position: start + t, hd: shape.hd,
                                                          scale: Double(scale ?? 1 / Float(shape.hd).squareRoot()),
                                                          softcap: softcap.map(Double.init), window: window).p
                                    for j in 0...(start + t) {
                                        for i in 0..<shape.hd { expected[base + i] += p[j] * Double(v[j * kvWidth + kvOffset + i]) }
                                    }
                                }
                            }
                            XCTAssertLessThanOrEqual(worst(out, expected), 2e-6, "\(shape), tokens \(tokens), start \(start), "
                                                     + "window \(String(describing: window)), cap \(String(describing: softcap))")
                        }
                    }
                }
            }
        }
    }

    func testBackwardMatchesTheDefinition() {
        var values = Values(state: 52)
        let pool = ThreadPool(threads: 2)
        for shape in shapes {
            let (qWidth, kvWidth, group) = (shape.qWidth, shape.kvWidth, shape.group)
            for n in [1, 2, 5, 11] {
                for window in windows {
                    for (scale, softcap) in scalesAndCaps {
                        let q = values.next(n * qWidth), k = values.next(n * kvWidth), v = values.next(n * kvWidth)
                        let dO = values.next(n * qWidth)
                        var dQ = [Float](repeating: .nan, count: n * qWidth)
                        var dK = [Float](repeating: .nan, count: n * kvWidth), dV = dK
                        var scratch = [Float](repeating: .nan, count: TrainingAttention.backwardScratch(
                            tokens: n, heads: shape.heads, kvHeads: shape.kvHeads, headDimension: shape.hd))
                        TrainingAttention.backward(q: q, k: k, v: v, gradOutput: dO, tokens: n, heads: shape.heads,
                                                   kvHeads: shape.kvHeads, headDimension: shape.hd, scale: scale,
                                                   softcap: softcap, window: window, gradQ: &dQ, gradK: &dK, gradV: &dV,
                                                   scratch: &scratch, pool: pool)
                        let s = Double(scale ?? 1 / Float(shape.hd).squareRoot()), cap = softcap.map(Double.init)
                        var eQ = [Double](repeating: 0, count: n * qWidth)
                        var eK = [Double](repeating: 0, count: n * kvWidth), eV = eK
                        for head in 0..<shape.heads {
                            let kvOffset = head / group * shape.hd
                            for t in 0..<n {
                                let base = t * qWidth + head * shape.hd
                                let (capped, p) = probabilities(query: q[base..<(base + shape.hd)], keys: k, kvWidth: kvWidth,
                                                                keyOffset: kvOffset, position: t, hd: shape.hd, scale: s,
                                                                softcap: cap, window: window)
                                var dP = [Double](repeating: 0, count: t + 1)
                                for j in 0...t where sees(t, j, window: window) {
                                    for i in 0..<shape.hd { dP[j] += Double(dO[base + i]) * Double(v[j * kvWidth + kvOffset + i]) }
                                }
                                let rowSum = zip(p, dP).map { $0 * $1 }.reduce(0, +)
                                for j in 0...t where sees(t, j, window: window) {
                                    // dS = P ∘ (dP − rowsum(P ∘ dP)) ∘ cap′, cap′ = 1 − (capped / c)²; scores = s·q·k.
                                    let derivative = cap.map { 1 - (capped[j] / $0) * (capped[j] / $0) } ?? 1
                                    let dS = p[j] * (dP[j] - rowSum) * derivative * s
                                    for i in 0..<shape.hd {
                                        eQ[base + i] += dS * Double(k[j * kvWidth + kvOffset + i])
                                        eK[j * kvWidth + kvOffset + i] += dS * Double(q[base + i])
                                        eV[j * kvWidth + kvOffset + i] += p[j] * Double(dO[base + i])
                                    }
                                }
                            }
                        }
                        let label = "\(shape), n \(n), window \(String(describing: window)), cap \(String(describing: softcap))"
                        XCTAssertLessThanOrEqual(worst(dQ, eQ), 2e-6, "dQ, " + label)
                        XCTAssertLessThanOrEqual(worst(dK, eK), 2e-6, "dK, " + label)
                        XCTAssertLessThanOrEqual(worst(dV, eV), 2e-6, "dV, " + label)
                    }
                }
            }
        }
    }
}
