import CKernels
import XCTest
@testable import Kernels

/// The AVX2 kernels against the generic Swift path they replace, where this CPU has AVX2.
final class DispatchTests: XCTestCase {
    func testAVX2DequantizationEqualsGeneric() throws {
        guard ck_has_avx2() != 0 else {
            XCTAssertEqual(KernelBackend.selected, .generic, "no AVX2: the generic path must be selected")
            return
        }
        var random = TestRandom(state: 21)
        for format in [WeightFormat.f32, .f16, .q8_0, .q4_0, .q4_1] {
            let columns = 96
            let matrix = Quantize.matrix(random.values(5 * columns), rows: 5, columns: columns, format: format)
            for row in 0..<5 {
                var generic = [Float](repeating: 0, count: columns), fast = generic
                Dequantize.row(format: format, source: matrix.rowPointer(row), count: columns, into: &generic)
                ck_dequantize_row_avx2(format.ggmlTypeNumber!, matrix.rowPointer(row), &fast, columns)
                XCTAssertEqual(fast, generic, "\(format) row \(row)")
            }
        }
    }

    func testAVX2DotAndPanelMatchGeneric() throws {
        guard ck_has_avx2() != 0 else { return }
        var random = TestRandom(state: 22)
        for n in [1, 7, 8, 31, 33, 64, 100] {
            let a = random.values(n), b = random.values(n)
            let fast = ck_dot_avx2(a, b, n), generic = Vector.genericDot(a, b, n)
            XCTAssertEqual(fast, generic, accuracy: 1e-5 * Float(n), "n = \(n)")
        }
        // Panels with a row count that is not a multiple of 4 and a width not a multiple of 8.
        let rows = 7, k = 45, tokens = 3
        let w = random.values(rows * k), x = random.values(tokens * k)
        var y = [Float](repeating: 1, count: tokens * rows)
        ck_panel_gemm_avx2(w, Int32(rows), x, Int32(tokens), Int32(k), &y, Int32(rows), 1)
        for t in 0..<tokens {
            for r in 0..<rows {
                let expected = 1 + (0..<k).reduce(0.0) { $0 + Double(w[r * k + $1]) * Double(x[t * k + $1]) }
                XCTAssertEqual(Double(y[t * rows + r]), expected, accuracy: 1e-5, "row \(r) token \(t)")
            }
        }
    }
}
