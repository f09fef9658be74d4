import XCTest
@testable import LanguageModel

final class SamplerTests: XCTestCase {
    let logits: [Float] = [2.0, 1.0, 0.5, -1.0, 3.0]

    func draw(_ parameters: SamplingParameters, _ count: Int) -> [Int] {
        var sampler = Sampler(parameters)
        return (0..<count).map { _ in logits.withUnsafeBufferPointer { sampler.sample($0.baseAddress!, count: logits.count) } }
    }

    func testGreedyAndTopOneAreArgmax() {
        XCTAssertEqual(Set(draw(.greedy, 20)), [4])
        XCTAssertEqual(Set(draw(SamplingParameters(temperature: 1, topK: 1, topP: 1, seed: 3), 20)), [4])
    }

    func testSeedReproducesAndTopKRestricts() {
        let parameters = SamplingParameters(temperature: 1, topK: 2, topP: 1, seed: 42)
        let a = draw(parameters, 200), b = draw(parameters, 200)
        XCTAssertEqual(a, b, "same seed, same draws")
        XCTAssertEqual(Set(a), [4, 0], "top-2 keeps the two largest logits")
        XCTAssertNotEqual(a, draw(SamplingParameters(temperature: 1, topK: 2, topP: 1, seed: 43), 200))
    }

    /// With top-p, only the nucleus survives; frequencies follow the renormalised softmax.
    func testTopPAndTemperatureFrequencies() {
        // Softmax of the logits: p(4) ≈ 0.609, p(0) ≈ 0.224, p(1) ≈ 0.082, p(2) ≈ 0.050, p(3) ≈ 0.011.
        let nucleus = draw(SamplingParameters(temperature: 1, topK: 0, topP: 0.8, seed: 7), 4000)
        XCTAssertEqual(Set(nucleus), [4, 0], "0.609 + 0.224 reaches 0.8")
        let share = Double(nucleus.filter { $0 == 4 }.count) / 4000
        XCTAssertEqual(share, 0.609 / (0.609 + 0.224), accuracy: 0.03)
        // A low temperature concentrates the mass on the argmax.
        let cold = draw(SamplingParameters(temperature: 0.1, topK: 0, topP: 1, seed: 9), 500)
        XCTAssertGreaterThan(cold.filter { $0 == 4 }.count, 490)
        let all = draw(SamplingParameters(temperature: 1, topK: 0, topP: 1, seed: 11), 4000)
        XCTAssertEqual(Set(all), [0, 1, 2, 3, 4])
    }
}
