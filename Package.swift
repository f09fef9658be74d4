// swift-tools-version:6.0
// Conclave: privacy-preserving federated fine-tuning of small language models.
// Module map and import rules: see DESIGN.md (a module imports only modules below it).
import PackageDescription

/// Numeric kernels are compiled with bounds checks off in release; every kernel keeps a checked naive twin.
/// Only `Kernels`: its buffers come from ModelFormats and LanguageModel after their shapes are checked, and
/// no file, peer or argument reaches it directly. LanguageModel (it loads HF configs and checkpoints),
/// Privacy (accountants, the ledger file), FineTuning (JSONL datasets) and the benchmarks keep their checks.
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

        // Libraries, bottom to top, as DESIGN.md's module table (ArchitectureTests checks both agree).
        .target(name: "SystemIO", path: "Sources/SystemIO"),
        // The one C kernel target: AVX2 paths chosen at run time; the Swift code is the generic path.
        .target(name: "CKernels", path: "Sources/CKernels", cSettings: [.unsafeFlags(["-O3"])]),
        .target(name: "Kernels", dependencies: ["CKernels"], path: "Sources/Kernels", swiftSettings: numericSettings),
        .target(name: "ModelFormats", dependencies: ["SystemIO"], path: "Sources/ModelFormats"),
        .target(name: "Tokenizer", dependencies: ["ModelFormats"], path: "Sources/Tokenizer"),
        .target(name: "LanguageModel", dependencies: ["Kernels", "ModelFormats", "Tokenizer"],
                path: "Sources/LanguageModel"),
        .target(name: "SecureCrypto", dependencies: ["CSodium", "SystemIO"], path: "Sources/SecureCrypto"),
        .target(name: "Privacy", dependencies: ["SecureCrypto", "SystemIO"], path: "Sources/Privacy"),
        .target(name: "FineTuning", dependencies: ["Kernels", "ModelFormats", "Tokenizer", "LanguageModel", "Privacy",
                                                   "SecureCrypto", "SystemIO"],
                path: "Sources/FineTuning"),
        .target(name: "SecureAggregation", dependencies: ["SecureCrypto"], path: "Sources/SecureAggregation"),
        .target(name: "Wire", dependencies: ["SecureAggregation", "SecureCrypto", "Privacy", "SystemIO"], path: "Sources/Wire"),
        .target(name: "Transport", dependencies: ["COpenSSL", "SystemIO"], path: "Sources/Transport"),
        .target(name: "Audit", dependencies: ["Wire", "SecureCrypto", "SystemIO"], path: "Sources/Audit"),
        .target(name: "FederationProtocol",
                dependencies: ["Wire", "SecureAggregation", "SecureCrypto", "Privacy", "LanguageModel", "ModelFormats",
                               "SystemIO"],
                path: "Sources/FederationProtocol"),
        .target(name: "CoordinatorService",
                dependencies: ["FederationProtocol", "Audit", "Wire", "Transport", "SecureCrypto",
                               "LanguageModel", "ModelFormats", "SystemIO"],
                path: "Sources/CoordinatorService"),
        .target(name: "ClientService",
                dependencies: ["FederationProtocol", "Wire", "Transport", "SecureCrypto", "Privacy",
                               "FineTuning", "LanguageModel", "ModelFormats", "Tokenizer", "SystemIO"],
                path: "Sources/ClientService"),
        .target(name: "Reports", dependencies: ["Audit", "Wire", "Privacy", "ModelFormats", "SecureCrypto"],
                path: "Sources/Reports"),
        .target(name: "FederationDemo",
                dependencies: ["CoordinatorService", "ClientService", "FederationProtocol", "Audit", "Reports", "Wire",
                               "Transport", "FineTuning", "SystemIO"],
                path: "Sources/FederationDemo"),
        .target(name: "CommandLineParsing", dependencies: ["SystemIO"], path: "Sources/CommandLineParsing"),
        .target(name: "ModelServing", dependencies: ["LanguageModel", "Tokenizer", "SystemIO"], path: "Sources/ModelServing"),
        .target(name: "Diagnostics", dependencies: ["Kernels", "SecureCrypto", "Transport"], path: "Sources/Diagnostics"),

        // Executables: command-line parsing and wiring only.
        .executableTarget(name: "conclave-client",
                          dependencies: ["CommandLineParsing", "SystemIO", "Kernels", "ModelFormats", "Tokenizer", "LanguageModel",
                                         "FineTuning", "Privacy", "Wire", "FederationProtocol", "ClientService", "Reports",
                                         "ModelServing", "Diagnostics"],
                          path: "Client"),
        .executableTarget(name: "conclave-coordinator",
                          dependencies: ["CommandLineParsing", "SystemIO", "Transport", "Wire", "Audit", "FederationProtocol",
                                         "CoordinatorService", "Reports", "FederationDemo", "ModelFormats", "Diagnostics"],
                          path: "Coordinator"),

        // Test support: where fixtures and the default model live; the in-memory federation.
        .target(name: "TestSupport", path: "Tests/TestSupport"),
        // Fault injection (issue 14): real processes killed at random points of real rounds, and the checks
        // after each restart; run at length by conclave-bench-faults, briefly by EndToEndTests.
        .target(name: "FaultInjection",
                dependencies: ["FederationDemo", "CoordinatorService", "ClientService", "FederationProtocol", "Audit", "Privacy",
                               "Wire", "SystemIO"],
                path: "Tests/FaultInjection"),
        .target(name: "FederationHarness", dependencies: ["FederationProtocol", "Wire", "Privacy", "SecureCrypto", "ModelFormats"],
                path: "Tests/FederationHarness"),

        // Fuzzing (issue 14): the targets, run by libFuzzer in `conclave-fuzz` (`make fuzz`) and replayed
        // over the committed corpus by FuzzTests.
        .target(name: "FuzzTargets",
                dependencies: ["ModelFormats", "Tokenizer", "LanguageModel", "FineTuning", "Wire", "SecureAggregation",
                               "SecureCrypto", "Audit", "Privacy", "FederationProtocol", "ClientService", "CoordinatorService"],
                path: "Tests/Fuzz/FuzzTargets"),
        .executableTarget(name: "conclave-fuzz", dependencies: ["FuzzTargets"], path: "Tests/Fuzz/Driver"),

        // Benchmarks: executables, never part of `swift test`.
        .executableTarget(name: "conclave-bench-inference",
                          dependencies: ["CommandLineParsing", "SystemIO", "Kernels", "LanguageModel"],
                          path: "Benchmarks/InferenceBenchmark"),
        .executableTarget(name: "conclave-bench-secagg",
                          dependencies: ["CommandLineParsing", "SystemIO", "SecureCrypto", "SecureAggregation", "Wire",
                                         "FederationProtocol"],
                          path: "Benchmarks/SecureAggregationBenchmark"),
        .executableTarget(name: "conclave-bench-privacy-audit",
                          dependencies: ["CommandLineParsing", "SystemIO", "LanguageModel", "FineTuning", "Privacy"],
                          path: "Benchmarks/PrivacyAudit"),
        .executableTarget(name: "conclave-bench-federation",
                          dependencies: ["CommandLineParsing", "SystemIO", "Wire", "Audit", "FederationProtocol",
                                         "CoordinatorService", "Transport", "SecureCrypto", "ModelFormats", "Privacy"],
                          path: "Benchmarks/FederationScale"),
        .executableTarget(name: "conclave-bench-faults",
                          dependencies: ["CommandLineParsing", "SystemIO", "FederationDemo", "FaultInjection"],
                          path: "Benchmarks/FaultInjection"),
        .executableTarget(name: "conclave-bench-noise", dependencies: ["CommandLineParsing", "Privacy", "SecureCrypto", "SystemIO"],
                          path: "Benchmarks/NoiseBenchmark"),

        // Tests: one target per module, plus end-to-end tests that start the real executables.
        .testTarget(name: "KernelsTests", dependencies: ["TestSupport", "Kernels"], path: "Tests/KernelsTests"),
        .testTarget(name: "ModelFormatsTests", dependencies: ["TestSupport", "ModelFormats"], path: "Tests/ModelFormatsTests"),
        .testTarget(name: "TokenizerTests", dependencies: ["TestSupport", "Tokenizer", "ModelFormats"], path: "Tests/TokenizerTests"),
        .testTarget(name: "LanguageModelTests", dependencies: ["TestSupport", "LanguageModel", "ModelFormats", "Tokenizer"],
                    path: "Tests/LanguageModelTests", exclude: ["Reference"]),
        .testTarget(name: "FineTuningTests", dependencies: ["TestSupport", "FineTuning", "Kernels", "LanguageModel", "Privacy",
                                                           "ModelFormats", "Tokenizer"], path: "Tests/FineTuningTests"),
        .testTarget(name: "PrivacyTests", dependencies: ["TestSupport", "Privacy"], path: "Tests/PrivacyTests",
                    exclude: ["Reference"]),
        .testTarget(name: "SecureCryptoTests", dependencies: ["TestSupport", "SecureCrypto"], path: "Tests/SecureCryptoTests"),
        .testTarget(name: "WireTests", dependencies: ["TestSupport", "Wire"], path: "Tests/WireTests"),
        .testTarget(name: "SecureAggregationTests", dependencies: ["TestSupport", "SecureAggregation", "SecureCrypto"],
                    path: "Tests/SecureAggregationTests", exclude: ["Reference"]),
        .testTarget(name: "TransportTests", dependencies: ["TestSupport", "Transport"], path: "Tests/TransportTests"),
        .testTarget(name: "SystemIOTests", dependencies: ["TestSupport", "SystemIO"], path: "Tests/SystemIOTests"),
        .testTarget(name: "AuditTests", dependencies: ["TestSupport", "Audit", "Wire", "SecureCrypto", "SystemIO"],
                    path: "Tests/AuditTests", exclude: ["Fixtures"]),
        .testTarget(name: "FederationProtocolTests",
                    dependencies: ["TestSupport", "FederationHarness", "FederationProtocol", "Wire", "SecureAggregation",
                                   "SecureCrypto", "Privacy", "LanguageModel", "ModelFormats", "SystemIO"],
                    path: "Tests/FederationProtocolTests"),
        .testTarget(name: "CoordinatorServiceTests",
                    dependencies: ["TestSupport", "CoordinatorService", "ClientService", "FederationProtocol", "Audit", "Wire",
                                   "Transport", "SecureCrypto", "SystemIO"],
                    path: "Tests/CoordinatorServiceTests"),
        .testTarget(name: "ClientServiceTests",
                    dependencies: ["TestSupport", "ClientService", "FederationProtocol", "Wire", "FineTuning", "LanguageModel",
                                   "ModelFormats", "SecureCrypto", "SystemIO"],
                    path: "Tests/ClientServiceTests"),
        .testTarget(name: "ModelServingTests", dependencies: ["TestSupport", "ModelServing", "LanguageModel", "Tokenizer"],
                    path: "Tests/ModelServingTests"),
        .testTarget(name: "CommandLineParsingTests", dependencies: ["TestSupport", "CommandLineParsing"],
                    path: "Tests/CommandLineParsingTests"),
        .testTarget(name: "ReportsTests", dependencies: ["TestSupport", "Reports", "Audit", "Wire", "Privacy", "SecureCrypto",
                                                        "ModelFormats", "SystemIO"],
                    path: "Tests/ReportsTests"),
        .testTarget(name: "FuzzTests", dependencies: ["TestSupport", "FuzzTargets"], path: "Tests/FuzzTests"),
        // The module map, function lengths and durable writes, read from this repository's own source.
        .testTarget(name: "ArchitectureTests", dependencies: ["TestSupport"], path: "Tests/ArchitectureTests"),
        .testTarget(name: "FederationDemoTests",
                    dependencies: ["TestSupport", "FederationDemo", "FederationProtocol", "CoordinatorService", "ClientService", "Audit",
                                   "Reports", "Wire", "FineTuning"],
                    path: "Tests/FederationDemoTests"),
        .testTarget(name: "DiagnosticsTests", dependencies: ["TestSupport", "Diagnostics", "Transport"],
                    path: "Tests/DiagnosticsTests"),
        .testTarget(name: "EndToEndTests", dependencies: ["TestSupport", "conclave-client", "conclave-coordinator",
                                                         "Audit", "CommandLineParsing", "CoordinatorService", "ClientService",
                                                         "FederationProtocol", "SecureCrypto", "Transport", "ModelFormats", "Wire",
                                                         "SystemIO", "FederationDemo", "Privacy", "FaultInjection"],
                    path: "Tests/EndToEndTests", exclude: ["Golden"]),
    ]
)
