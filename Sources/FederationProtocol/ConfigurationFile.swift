#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import Wire
import SystemIO

/// Decodes a JSON configuration file, turning decoding errors into errors that name the field.
public func decodeConfiguration<T: Decodable>(_ url: URL) throws -> T {
    var status = stat()
    guard stat(url.path, &status) == 0 else { throw FederationError.state(path: url.path, "cannot read: no such file") }
    guard status.st_size <= 1 << 20 else {
        throw FederationError.state(path: url.path, "is \(status.st_size) bytes; a configuration file is at most 1 MiB")
    }
    guard let data = FileManager.default.contents(atPath: url.path) else {
        throw FederationError.state(path: url.path, "cannot read")
    }
    do {
        return try JSONDecoder().decode(T.self, from: data)
    } catch let DecodingError.keyNotFound(key, context) {
        throw FederationError.configuration(path: url.path, field: fieldPath(context.codingPath + [key]), "is missing")
    } catch let DecodingError.typeMismatch(type, context) {
        throw FederationError.configuration(path: url.path, field: fieldPath(context.codingPath), "expected \(type)")
    } catch let DecodingError.valueNotFound(type, context) {
        throw FederationError.configuration(path: url.path, field: fieldPath(context.codingPath), "expected \(type), found null")
    } catch let DecodingError.dataCorrupted(context) {
        // At the top level the JSON itself is broken; below it, a value was refused (its reason says why).
        guard !context.codingPath.isEmpty else {
            throw FederationError.configuration(path: url.path, field: "(file)", "not valid JSON: \(context.debugDescription)")
        }
        throw FederationError.configuration(path: url.path, field: fieldPath(context.codingPath), context.debugDescription)
    }
}

private func fieldPath(_ path: [any CodingKey]) -> String {
    path.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
}

public func resolveConfigurationPath(_ path: String, relativeTo file: URL) -> String {
    if path.hasPrefix("/") { return path }
    return file.deletingLastPathComponent().appendingPathComponent(path).standardizedFileURL.path
}
