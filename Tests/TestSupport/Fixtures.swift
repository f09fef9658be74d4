import Foundation

/// Where the tests find the reference fixtures and the default model.
///
/// `CONCLAVE_FIXTURES` and `CONCLAVE_MODEL` override the defaults, which are `Tests/Fixtures` in the
/// repository (committed, made by `Tests/Fixtures/generate.py`: `make fixtures`) and
/// `models/SmolLM2-135M-Instruct.Q4_1.gguf` inside it (`make model`).
public enum Fixtures {
    /// The repository's root folder, found from this file's own path.
    public static let repositoryRoot: URL = {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
    }()

    /// `Tests/Fixtures`: reference data computed with HF transformers, PEFT, gguf-py, dp_accounting and
    /// prv-accountant by `Tests/Fixtures/generate.py`, unless `CONCLAVE_FIXTURES` names another copy.
    public static let root: URL = {
        if let path = ProcessInfo.processInfo.environment["CONCLAVE_FIXTURES"], !path.isEmpty {
            return URL(fileURLWithPath: path)
        }
        return committed
    }()

    /// The fixtures committed in the repository, whatever `CONCLAVE_FIXTURES` says.
    public static let committed: URL = repositoryRoot.appendingPathComponent("Tests/Fixtures")

    /// A file under the fixtures folder, e.g. `url("tiny-llama/config.json")`.
    public static func url(_ relative: String) -> URL { root.appendingPathComponent(relative) }

    /// The default model's GGUF file; tests that need it fail (never skip) when it is absent.
    public static let defaultModel: URL = {
        if let path = ProcessInfo.processInfo.environment["CONCLAVE_MODEL"], !path.isEmpty {
            return URL(fileURLWithPath: path)
        }
        return repositoryRoot.appendingPathComponent("models/SmolLM2-135M-Instruct.Q4_1.gguf")
    }()

    /// llama.cpp's source as the llama-cpp-python sdist vendors it, which `make test` and `make fixtures` download
    /// from PyPI and unpack into `.build/llama_cpp_python` (`make llama-cpp-source`), unless `LLAMA_CPP` names
    /// another copy: its `models/ggml-vocab-*.gguf` are real models' vocabularies with HF tokenizers' ids.
    public static let llamaCppSource: URL = {
        if let path = ProcessInfo.processInfo.environment["LLAMA_CPP"], !path.isEmpty {
            return URL(fileURLWithPath: path)
        }
        return repositoryRoot.appendingPathComponent(".build/llama_cpp_python/vendor/llama.cpp")
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
