#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// Reads a JSON configuration file (at most 1 MiB) with the types' own keys.
/// - Throws: `SystemIOError` naming the file, and the field when the JSON does not fit
///   (`field 'policy.max_epsilon': expected Double`).
public func decodeConfiguration<T: Decodable>(_ url: URL) throws -> T {
    var status = stat()
    guard stat(url.path, &status) == 0 else { throw SystemIOError(path: url.path, "cannot read: no such file") }
    guard status.st_size <= 1 << 20 else {
        throw SystemIOError(path: url.path, "is \(status.st_size) bytes; a configuration file is at most 1 MiB")
    }
    guard let data = fileContents(atPath: url.path) else {
        throw SystemIOError(path: url.path, "cannot read")
    }
    do {
        return try JSONFile.decode(T.self, from: data, keys: .declared)
    } catch let error as JSONFieldError {
        throw SystemIOError(path: url.path, configurationReason(error))
    }
}

/// A path from a configuration file: absolute as written, or relative to the file's folder.
public func resolveConfigurationPath(_ path: String, relativeTo file: URL) -> String {
    if path.hasPrefix("/") { return path }
    return file.deletingLastPathComponent().appendingPathComponent(path).standardizedFileURL.path
}

/// Configuration files have always worded their errors as `field 'policy': is missing` (operators and
/// tests match these words), so they keep that wording over `JSONFieldError.description`.
private func configurationReason(_ error: JSONFieldError) -> String {
    switch error.problem {
    case .missing: return "field '\(error.field)': is missing"
    case let .wrongType(expected): return "field '\(error.field)': expected \(expected)"
    case let .null(expected): return "field '\(error.field)': expected \(expected), found null"
    // At the top level the JSON itself is broken; below it, a value was refused (its reason says why).
    case .badValue where error.field.isEmpty: return "field '(file)': not valid JSON: \(error.detail)"
    case .badValue: return "field '\(error.field)': \(error.detail)"
    }
}
