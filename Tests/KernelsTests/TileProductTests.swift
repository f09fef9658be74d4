import CKernels
import XCTest
@testable import Kernels

/// `Vector.tileProduct` (attention's blocks of rows) on every tier this CPU runs, against its naive twin summed in
/// Double: row counts off the 4-row block (1, 3, 5, 9), column counts off the 16- and 64-column passes and the
/// 8-lane vectors (1, 7, 23, 70), depth 0 and 1, both operand layouts attention uses (a's rows contiguous, or a
/// read down a column as the key pass reads P), scaled, and added to what `out` holds.
final class TileProductTests: XCTestCase {
    typealias Product = (_ rows: Int, _ columns: Int, _ depth: Int, _ scale: Float, _ a: UnsafePointer<Float>,
                         _ aRow: Int, _ aDepth: Int, _ b: UnsafePointer<Float>, _ bStride: Int,
                         _ out: UnsafeMutablePointer<Float>, _ outStride: Int, _ accumulate: Bool) -> Void

    func tiers() -> [(String, Product)] {
        var tiers: [(String, Product)] = [
            ("selected (\(KernelBackend.selected))", { r, c, d, s, a, ar, ad, b, bs, o, os, acc in
                Vector.tileProduct(rows: r, columns: c, depth: d, scale: s, a: a, aRowStride: ar, aDepthStride: ad, b: b,
                                   bStride: bs, into: o, outStride: os, accumulate: acc)
            }),
            ("generic", { r, c, d, s, a, ar, ad, b, bs, o, os, acc in
                Vector.genericTileProduct(rows: r, columns: c, depth: d, scale: s, a: a, aRowStride: ar, aDepthStride: ad,
                                          b: b, bStride: bs, into: o, outStride: os, accumulate: acc)
            }),
        ]
        if ck_has_avx2() != 0 {
            tiers.append(("avx2", { r, c, d, s, a, ar, ad, b, bs, o, os, acc in
                ck_tile_product_avx2(Int32(r), Int32(c), Int32(d), s, a, ar, ad, b, bs, o, os, acc ? 1 : 0)
            }))
        }
        if ck_has_avx512_vnni() != 0 {
            tiers.append(("avx512", { r, c, d, s, a, ar, ad, b, bs, o, os, acc in
                ck_tile_product_avx512(Int32(r), Int32(c), Int32(d), s, a, ar, ad, b, bs, o, os, acc ? 1 : 0)
            }))
        }
        return tiers
    }

    func testEveryTierMatchesTheNaiveProduct() {
        var random = TestRandom(state: 41)
        var cases = 0
        for (rows, columns, depth) in [(1, 1, 1), (3, 7, 5), (4, 16, 64), (5, 23, 9), (9, 70, 33), (4, 64, 130), (2, 130, 64),
                                       (6, 5, 0)] {
            for columnOfA in [false, true] {
                for (scale, accumulate) in [(Float(1), false), (0.125, false), (1, true)] {
                    // a: rows × depth, contiguous rows with padding, or read down columns (the key pass reads P so).
                    let aRow = columnOfA ? 1 : depth + 3, aDepth = columnOfA ? rows + 2 : 1
                    let a = random.values(max(1, rows * aRow + depth * aDepth))
                    let bStride = columns + 5, outStride = columns + 4
                    let b = random.values(max(1, depth * bStride))
                    let start = random.values(rows * outStride)
                    var expected = start
                    Vector.naiveTileProduct(rows: rows, columns: columns, depth: depth, scale: scale, a: a, aRowStride: aRow,
                                            aDepthStride: aDepth, b: b, bStride: bStride, into: &expected,
                                            outStride: outStride, accumulate: accumulate)
                    for (tier, product) in tiers() {
                        var out = start
                        // The padding past each row's columns must be left alone (masked stores stop at `columns`).
                        for r in 0..<rows { for c in columns..<outStride { out[r * outStride + c] = .nan } }
                        product(rows, columns, depth, scale, a, aRow, aDepth, b, bStride, &out, outStride, accumulate)
                        var worst: Float = 0
                        for r in 0..<rows {
                            for c in 0..<columns {
                                let e = expected[r * outStride + c], g = out[r * outStride + c]
                                worst = max(worst, abs(g - e) / max(1, abs(e)))
                            }
                            for c in columns..<outStride {
                                XCTAssertTrue(out[r * outStride + c].isNaN, "\(tier) wrote past column \(columns) of row \(r)")
                            }
                        }
                        XCTAssertLessThanOrEqual(worst, 1e-5, "\(tier): \(rows)×\(columns), depth \(depth), a by "
                                                 + "\(columnOfA ? "column" : "row"), scale \(scale), accumulate \(accumulate)")
                        cases += 1
                    }
                }
            }
        }
        XCTAssertGreaterThanOrEqual(cases, 8 * 2 * 3 * 2)
    }

    /// The transposition that gives the score products their key columns.
    func testTransposeSwapsRowsAndColumns() {
        let rows: [Float] = (0..<15).map(Float.init)  // 3 rows of width 4 at stride 5
        var out = [Float](repeating: -1, count: 4 * 6)
        Vector.transpose(rows, stride: 5, count: 3, width: 4, into: &out, outStride: 6)
        for i in 0..<4 {
            XCTAssertEqual(Array(out[(i * 6)..<(i * 6 + 3)]), [Float(i), Float(5 + i), Float(10 + i)], "row \(i)")
            XCTAssertEqual(Array(out[(i * 6 + 3)..<(i * 6 + 6)]), [-1, -1, -1], "padding of row \(i)")
        }
    }
}
