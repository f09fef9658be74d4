// swift-tools-version:6.0
// Conclave: privacy-preserving federated fine-tuning of small language models.
// Module map and import rules: see DESIGN.md (a module imports only modules below it).
import PackageDescription

/// Numeric code is compiled with bounds checks off in release; every kernel keeps a checked naive twin.
let numericSettings: [SwiftSetting] = [.unsafeFlags(["-Ounchecked", "-wmo"], .when(configuration: .release))]

let package = Package(
    name: "Conclave",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "conclave-coordinator", targets: ["conclave-coordinator"]),
        .executable(name: "conclave-client", targets: ["conclave-client"]),
    ],
    targets: [
        // System libraries: modulemap and header only.
        .systemLibrary(name: "CSodium", path: "Sources/CSodium", pkgConfig: "libsodium",
                       providers: [.apt(["libsodium-dev"])]),
        .systemLibrary(name: "COpenSSL", path: "Sources/COpenSSL", pkgConfig: "openssl",
                       providers: [.apt(["libssl-dev"])]),

        // Libraries, bottom to top.
        // The one C kernel target: AVX2 paths chosen at run time; the Swift code is the generic path.
        .target(name: "CKernels", path: "Sources/CKernels", cSettings: [.unsafeFlags(["-O3"])]),
        .target(name: "Kernels", dependencies: ["CKernels"], path: "Sources/Kernels", swiftSettings: numericSettings),
        .target(name: "ModelFormats", path: "Sources/ModelFormats"),
        .target(name: "Tokenizer", dependencies: ["ModelFormats"], path: "Sources/Tokenizer"),
        .target(name: "LanguageModel", dependencies: ["Kernels", "ModelFormats", "Tokenizer"],
                path: "Sources/LanguageModel", swiftSettings: numericSettings),
        .target(name: "SecureCrypto", dependencies: ["CSodium"], path: "Sources/SecureCrypto"),
        .target(name: "SecureAggregation", dependencies: ["SecureCrypto"], path: "Sources/SecureAggregation"),
        .target(name: "Privacy", dependencies: ["SecureCrypto"], path: "Sources/Privacy",
                swiftSettings: numericSettings),
        .target(name: "FineTuning", dependencies: ["Kernels", "LanguageModel", "Tokenizer", "Privacy", "SecureCrypto", "CommandLineParsing"],
                path: "Sources/FineTuning", swiftSettings: numericSettings),
        .target(name: "Wire", path: "Sources/Wire"),
        .target(name: "Transport", dependencies: ["COpenSSL"], path: "Sources/Transport"),
        .target(name: "CommandLineParsing", path: "Sources/CommandLineParsing"),
        .target(name: "Federation",
                dependencies: ["Wire", "Transport", "SecureCrypto", "SecureAggregation", "Privacy", "FineTuning",
                               "LanguageModel", "ModelFormats", "Tokenizer", "CommandLineParsing"],
                path: "Sources/Federation"),
        .target(name: "Reports", dependencies: ["Federation", "Privacy", "ModelFormats", "SecureCrypto"],
                path: "Sources/Reports"),

        // Executables: command-line parsing and wiring only.
        .executableTarget(name: "conclave-client",
                          dependencies: ["CommandLineParsing", "ModelFormats", "Tokenizer", "LanguageModel",
                                         "FineTuning", "Privacy", "SecureCrypto", "Transport", "Federation", "Reports"],
                          path: "Client"),
        .executableTarget(name: "conclave-coordinator",
                          dependencies: ["CommandLineParsing", "SecureCrypto", "Transport", "Federation", "ModelFormats",
                                         "LanguageModel", "FineTuning", "Privacy", "Reports"],
                          path: "Coordinator"),

        // Test support: where fixtures and the default model live.
        .target(name: "TestSupport", path: "Tests/TestSupport"),

        // Benchmarks: executables, never part of `swift test`.
        .executableTarget(name: "conclave-bench-inference",
                          dependencies: ["CommandLineParsing", "Kernels", "LanguageModel"],
                          path: "Benchmarks/InferenceBenchmark", swiftSettings: numericSettings),
        .executableTarget(name: "conclave-bench-secagg",
                          dependencies: ["CommandLineParsing", "SecureCrypto", "SecureAggregation", "Federation", "Wire"],
                          path: "Benchmarks/SecureAggregationBenchmark", swiftSettings: numericSettings),
        .executableTarget(name: "conclave-bench-privacy-audit",
                          dependencies: ["CommandLineParsing", "LanguageModel", "FineTuning", "Privacy"],
                          path: "Benchmarks/PrivacyAudit"),
        .executableTarget(name: "conclave-bench-federation",
                          dependencies: ["CommandLineParsing", "Federation", "Transport", "SecureCrypto", "Wire",
                                         "ModelFormats"],
                          path: "Benchmarks/FederationScale"),

        // Tests: one target per module, plus end-to-end tests that start the real executables.
        .testTarget(name: "KernelsTests", dependencies: ["TestSupport", "Kernels"], path: "Tests/KernelsTests"),
        .testTarget(name: "ModelFormatsTests", dependencies: ["TestSupport", "ModelFormats"], path: "Tests/ModelFormatsTests"),
        .testTarget(name: "TokenizerTests", dependencies: ["TestSupport", "Tokenizer", "ModelFormats"], path: "Tests/TokenizerTests"),
        .testTarget(name: "LanguageModelTests", dependencies: ["TestSupport", "LanguageModel", "ModelFormats", "Tokenizer"],
                    path: "Tests/LanguageModelTests"),
        .testTarget(name: "FineTuningTests", dependencies: ["TestSupport", "FineTuning", "Kernels", "LanguageModel", "Privacy",
                                                           "ModelFormats", "Tokenizer"], path: "Tests/FineTuningTests"),
        .testTarget(name: "PrivacyTests", dependencies: ["TestSupport", "Privacy"], path: "Tests/PrivacyTests"),
        .testTarget(name: "SecureCryptoTests", dependencies: ["TestSupport", "SecureCrypto"], path: "Tests/SecureCryptoTests"),
        .testTarget(name: "WireTests", dependencies: ["TestSupport", "Wire"], path: "Tests/WireTests"),
        .testTarget(name: "SecureAggregationTests", dependencies: ["TestSupport", "SecureAggregation", "SecureCrypto"],
                    path: "Tests/SecureAggregationTests"),
        .testTarget(name: "TransportTests", dependencies: ["TestSupport", "Transport"], path: "Tests/TransportTests"),
        .testTarget(name: "FederationTests", dependencies: ["TestSupport", "Federation", "SecureCrypto", "Wire", "Privacy",
                                                           "Transport", "ModelFormats", "LanguageModel", "SecureAggregation"],
                    path: "Tests/FederationTests"),
        .testTarget(name: "CommandLineParsingTests", dependencies: ["TestSupport", "CommandLineParsing"],
                    path: "Tests/CommandLineParsingTests"),
        .testTarget(name: "ReportsTests", dependencies: ["TestSupport", "Reports", "Federation", "Privacy", "SecureCrypto",
                                                        "ModelFormats"],
                    path: "Tests/ReportsTests"),
        .testTarget(name: "EndToEndTests", dependencies: ["TestSupport", "conclave-client", "conclave-coordinator",
                                                         "Federation", "SecureCrypto", "Transport", "ModelFormats", "Wire"],
                    path: "Tests/EndToEndTests"),
    ]
)
