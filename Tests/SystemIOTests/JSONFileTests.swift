import Foundation
import SystemIO
import XCTest

/// The one JSON decoder: errors name the field as the file spells it, `a.b[2].c`, in both key styles.
final class JSONFileTests: XCTestCase {
    struct Leaf: Codable { var countOfThings: Int }
    struct Middle: Codable { var innerList: [Leaf] }
    struct Top: Codable { var outerField: Middle }

    struct DeclaredLeaf: Codable {
        var count: Int
        enum CodingKeys: String, CodingKey { case count = "c" }
    }
    struct DeclaredMiddle: Codable {
        var list: [DeclaredLeaf]
        enum CodingKeys: String, CodingKey { case list = "b" }
    }
    struct DeclaredTop: Codable {
        var middle: DeclaredMiddle
        enum CodingKeys: String, CodingKey { case middle = "a" }
    }

    private func failure<T: Decodable>(_ type: T.Type, _ text: String, keys: JSONFile.Keys) -> JSONFieldError? {
        do {
            _ = try JSONFile.decode(type, from: Data(text.utf8), keys: keys)
            XCTFail("\(text) decoded")
            return nil
        } catch {
            guard let error = error as? JSONFieldError else { XCTFail("\(error)"); return nil }
            return error
        }
    }

    func testAMissingFieldIsNamedWithItsPath() {
        let declared = failure(DeclaredTop.self, #"{"a": {"b": [{"c": 1}, {"c": 2}, {}]}}"#, keys: .declared)
        XCTAssertEqual(declared?.field, "a.b[2].c")
        XCTAssertEqual(declared?.problem, .missing)
        XCTAssertEqual(declared?.description, "field 'a.b[2].c': missing")

        let snake = failure(Top.self, #"{"outer_field": {"inner_list": [{"count_of_things": 1}, {}]}}"#, keys: .snakeCase)
        XCTAssertEqual(snake?.field, "outer_field.inner_list[1].count_of_things")
        XCTAssertEqual(snake?.problem, .missing)
    }

    func testWrongTypesNullsAndTextThatIsNotJSON() {
        let wrong = failure(DeclaredTop.self, #"{"a": {"b": [{"c": "three"}]}}"#, keys: .declared)
        XCTAssertEqual(wrong?.field, "a.b[0].c")
        XCTAssertEqual(wrong?.problem, .wrongType(expected: "Int"))
        XCTAssertTrue(wrong?.description.hasPrefix("field 'a.b[0].c': expected Int (") ?? false, "\(String(describing: wrong))")

        let null = failure(DeclaredTop.self, #"{"a": {"b": [{"c": null}]}}"#, keys: .declared)
        XCTAssertEqual(null?.field, "a.b[0].c")
        XCTAssertEqual(null?.problem, .null(expected: "Int"))

        let garbage = failure(DeclaredTop.self, "{nope", keys: .declared)
        XCTAssertEqual(garbage?.field, "")
        XCTAssertTrue(garbage?.description.hasPrefix("not valid JSON") ?? false, "\(String(describing: garbage))")
    }

    /// Configuration files use the same decoder and keep their own wording (`is missing`).
    func testConfigurationFilesNameTheFieldTheSameWay() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("json-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let url = directory.appendingPathComponent("c.json")
        try Data(#"{"a": {"b": [{"c": 1}, {"c": 2}, {}]}}"#.utf8).write(to: url)
        XCTAssertThrowsError(try decodeConfiguration(url) as DeclaredTop) {
            XCTAssertEqual($0 as? SystemIOError, SystemIOError(path: url.path, "field 'a.b[2].c': is missing"))
        }
        try Data(#"{"a": {"b": [{"c": 1}, {"c": 2}, {"c": 3}]}}"#.utf8).write(to: url)
        XCTAssertEqual((try decodeConfiguration(url) as DeclaredTop).middle.list.map(\.count), [1, 2, 3])
        XCTAssertThrowsError(try decodeConfiguration(directory.appendingPathComponent("none.json")) as DeclaredTop) {
            XCTAssertEqual("\($0)", "\(directory.appendingPathComponent("none.json").path): cannot read: no such file")
        }
    }

    func testConfigurationPathsAreRelativeToTheFile() {
        let file = URL(fileURLWithPath: "/etc/conclave/client.json")
        XCTAssertEqual(resolveConfigurationPath("../models/m.gguf", relativeTo: file), "/etc/models/m.gguf")
        XCTAssertEqual(resolveConfigurationPath("/abs/data.jsonl", relativeTo: file), "/abs/data.jsonl")
    }
}
