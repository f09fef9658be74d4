import Foundation

/// Where the tests find the shared reference fixtures and the default model.
///
/// `CONCLAVE_FIXTURES` and `CONCLAVE_MODEL` override the defaults, which are `../shared/fixtures`
/// beside the repository and `models/SmolLM2-135M-Instruct.Q4_1.gguf` inside it (`make model`).
public enum Fixtures {
    /// The repository's root folder, found from this file's own path.
    public static let repositoryRoot: URL = {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
    }()

    /// `shared/fixtures`: reference data computed with HF transformers, PEFT and dp_accounting.
    public static let root: URL = {
        if let path = ProcessInfo.processInfo.environment["CONCLAVE_FIXTURES"], !path.isEmpty {
            return URL(fileURLWithPath: path)
        }
        return repositoryRoot.deletingLastPathComponent().appendingPathComponent("shared/fixtures")
    }()

    /// A file under the fixtures folder, e.g. `url("tiny-llama/config.json")`.
    public static func url(_ relative: String) -> URL { root.appendingPathComponent(relative) }

    /// The default model's GGUF file; tests that need it fail (never skip) when it is absent.
    public static let defaultModel: URL = {
        if let path = ProcessInfo.processInfo.environment["CONCLAVE_MODEL"], !path.isEmpty {
            return URL(fileURLWithPath: path)
        }
        return repositoryRoot.appendingPathComponent("models/SmolLM2-135M-Instruct.Q4_1.gguf")
    }()

    /// Parses a JSON fixture file into a dictionary.
    public static func json(_ relative: String) throws -> [String: Any] {
        let data = try Data(contentsOf: url(relative))
        guard let object = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw CocoaError(.fileReadCorruptFile, userInfo: [NSFilePathErrorKey: url(relative).path])
        }
        return object
    }

    /// A fresh temporary directory for one test, removed by the caller if it wishes.
    public static func temporaryDirectory(_ label: String = "conclave-test") throws -> URL {
        let url = FileManager.default.temporaryDirectory
            .appendingPathComponent("\(label)-\(UUID().uuidString)", isDirectory: true)
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }
}
