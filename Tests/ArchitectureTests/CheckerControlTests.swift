import XCTest

/// The checkers on small in-memory repositories: each rule must report a planted violation by file,
/// line and module, and must stay quiet on the clean sample (braces, imports and calls inside
/// comments and strings included), so the real-tree tests can fail and do not fail by accident.
final class CheckerControlTests: XCTestCase {
    static let design = """
    # Design

    | module | imports | job |
    |---|---|---|
    | `CSodium`, `CKernels` | - | C targets |
    | `SystemIO` | - | durable write |
    | `SecureCrypto` | `CSodium`, `SystemIO` | libsodium face |
    | `CommandLineParsing` | - | executables only |
    | `Wire` | `SecureCrypto` | messages and their codec |
    | `conclave-client` (`Client/`) | `CommandLineParsing`, `Wire` | conclave-client |

    Another table, without an imports column, is ignored:

    | a | b |
    |---|---|
    | `x` | `y` |
    """

    static let manifest = """
    // swift-tools-version:6.0
    import PackageDescription
    let package = Package(
        name: "Sample",
        products: [.executable(name: "conclave-client", targets: ["conclave-client"])],
        targets: [
            .systemLibrary(name: "CSodium", path: "Sources/CSodium"),
            .target(name: "CKernels", path: "Sources/CKernels"),
            .target(name: "SystemIO"),  // path defaults to Sources/SystemIO
            .target(name: "SecureCrypto", dependencies: ["CSodium", .target(name: "SystemIO")]),
            .target(name: "CommandLineParsing", path: "Sources/CommandLineParsing"),
            .target(name: "Wire", dependencies: ["SecureCrypto"], path: "Sources/Wire"),
            .executableTarget(name: "conclave-client", dependencies: ["CommandLineParsing", "Wire"], path: "Client"),
            .testTarget(name: "WireTests", dependencies: ["Wire"]),
        ]
    )
    """

    static let cleanFiles = [
        SourceFile(path: "Sources/SystemIO/DurableFile.swift", text: """
            import Glibc

            public func writeDurably(_ path: String) {
                _ = fsync(3)
                _ = rename("a", "b")
            }
            """),
        SourceFile(path: "Sources/SecureCrypto/Keys.swift", text: """
            import CSodium
            @testable import SystemIO
            import Foundation
            // import Wire   (a comment is not an import)
            let note = \"""
            import Wire
            \"""
            """),
        SourceFile(path: "Sources/Wire/Frame.swift", text: """
            public import SecureCrypto
            /* fsync(fd) and rename(a, b) in a comment are not calls */
            let text = "fsync(fd); try data.write(to: url, options: .atomic)"
            func rename(_ a: String) {}
            """),
        SourceFile(path: "Client/main.swift", text: """
            import CommandLineParsing
            import Wire
            """),
        SourceFile(path: "Tests/WireTests/FrameTests.swift", text: "import Wire\nimport XCTest\n"),
    ]

    static func sample(_ extra: [SourceFile] = [], design: String = design, manifest: String = manifest) -> Repository {
        Repository(files: cleanFiles + extra, manifest: manifest, design: design)
    }

    // MARK: - Readers

    func testManifestTargetsAreRead() {
        let targets = PackageManifest.targets(in: Self.manifest)
        XCTAssertEqual(targets.map(\.name), ["CSodium", "CKernels", "SystemIO", "SecureCrypto", "CommandLineParsing",
                                             "Wire", "conclave-client", "WireTests"])
        XCTAssertEqual(targets[2].path, "Sources/SystemIO")
        XCTAssertEqual(targets[3].dependencies, ["CSodium", "SystemIO"])
        XCTAssertEqual(targets[6].kind, .executable)
        XCTAssertEqual(targets[6].path, "Client")
        XCTAssertEqual(targets[6].moduleName, "conclave_client")
        XCTAssertEqual(targets[7].path, "Tests/WireTests")
        XCTAssertEqual(targets[5].line, 12)
    }

    func testModuleTableIsRead() {
        let table = ModuleTable.parse(Self.design)
        XCTAssertTrue(table.problems.isEmpty, "\(table.problems)")
        XCTAssertEqual(table.rows.map(\.modules), [["CSodium", "CKernels"], ["SystemIO"], ["SecureCrypto"],
                                                   ["CommandLineParsing"], ["Wire"], ["conclave-client", "Client/"]])
        XCTAssertEqual(table.rows[2].imports, ["CSodium", "SystemIO"])
        XCTAssertEqual(table.rows[0].imports, [])
        XCTAssertEqual(table.rows[4].line, 9)
    }

    func testMalformedTableIsReported() {
        let bad = ModuleTable.parse("| module | imports |\n|---|---|\n| `Wire` | SecureCrypto and more |\n")
        XCTAssertEqual(bad.problems.map(\.line), [3])
        XCTAssertEqual(ModuleTable.parse("no table here").problems.count, 1)
        let violations = ModuleRules.tableViolations(Self.sample(design: "# no table"))
        XCTAssertEqual(violations.map(\.file), ["DESIGN.md"])
    }

    func testImportsAreReadFromCodeOnly() {
        let imports = SwiftImports.of(Self.cleanFiles[1]).map(\.module)
        XCTAssertEqual(imports, ["CSodium", "SystemIO", "Foundation"])
        XCTAssertEqual(SwiftImports.of(SourceFile(path: "x.swift", text: "import struct Wire.Frame\n")).map(\.module), ["Wire"])
    }

    // MARK: - Module rules

    func testCleanSampleHasNoModuleViolations() {
        let repository = Self.sample()
        XCTAssertEqual(ModuleRules.tableViolations(repository), [])
        XCTAssertEqual(ModuleRules.orderViolations(repository), [])
        XCTAssertEqual(ModuleRules.manifestViolations(repository, includeBenchmarks: true), [])
        XCTAssertEqual(ModuleRules.commandLineViolations(repository), [])
    }

    func testImportMissingFromTableIsReported() {
        let repository = Self.sample([SourceFile(path: "Sources/SecureCrypto/Extra.swift", text: "import Foundation\n\nimport Wire\n")])
        let violations = ModuleRules.tableViolations(repository)
        XCTAssertEqual(violations.count, 1, "\(violations)")
        XCTAssertEqual(violations.first?.file, "Sources/SecureCrypto/Extra.swift")
        XCTAssertEqual(violations.first?.line, 3)
        XCTAssertEqual(violations.first?.module, "SecureCrypto")
        XCTAssertTrue(violations.first?.description.contains("imports Wire") == true, "\(violations)")
    }

    func testTableImportTheCodeLacksIsReported() {
        let design = Self.design.replacingOccurrences(of: "| `Wire` | `SecureCrypto` |", with: "| `Wire` | `SecureCrypto`, `SystemIO` |")
        let violations = ModuleRules.tableViolations(Self.sample(design: design))
        XCTAssertEqual(violations, [Violation(file: "DESIGN.md", line: 9, module: "Wire",
                                              message: "the table lists SystemIO among Wire's imports, but no file under Sources/Wire/ imports it")])
    }

    func testModuleWithoutRowIsReported() {
        let design = Self.design.replacingOccurrences(of: "| `CommandLineParsing` | - | executables only |\n", with: "")
        let violations = ModuleRules.tableViolations(Self.sample(design: design))
        XCTAssertTrue(violations.contains { $0.file == "Package.swift" && $0.module == "CommandLineParsing" }, "\(violations)")
        let named = Self.design.replacingOccurrences(of: "| `SystemIO` |", with: "| `SystemIO`, `Ghost` |")
        XCTAssertTrue(ModuleRules.tableViolations(Self.sample(design: named)).contains { $0.module == "Ghost" })
    }

    func testUpwardImportIsReported() {
        // SecureCrypto (row 3) importing CommandLineParsing (row 4) points up; also not in its row.
        let upward = SourceFile(path: "Sources/SecureCrypto/Progress.swift", text: "import CommandLineParsing\n")
        let violations = ModuleRules.orderViolations(Self.sample([upward]))
        XCTAssertEqual(violations.count, 1, "\(violations)")
        XCTAssertEqual(violations.first?.file, "Sources/SecureCrypto/Progress.swift")
        XCTAssertEqual(violations.first?.line, 1)
        XCTAssertEqual(violations.first?.module, "SecureCrypto")
        // A module in the same row is not above either.
        let sideways = SourceFile(path: "Sources/CKernels/shim.swift", text: "import CSodium\n")
        XCTAssertEqual(ModuleRules.orderViolations(Self.sample([sideways])).map(\.module), ["CKernels"])
        // A module the table does not know at all.
        let unknown = SourceFile(path: "Sources/Wire/Odd.swift", text: "import Frobnicate\n")
        XCTAssertTrue(ModuleRules.orderViolations(Self.sample([unknown])).first?.message.contains("not in DESIGN.md") == true)
    }

    func testManifestMismatchIsReported() {
        let missing = ModuleRules.manifestViolations(
            Self.sample([SourceFile(path: "Sources/Wire/Log.swift", text: "import SystemIO\n")]), includeBenchmarks: true)
        XCTAssertEqual(missing.map(\.file), ["Sources/Wire/Log.swift"])
        XCTAssertEqual(missing.first?.module, "Wire")
        let manifest = Self.manifest.replacingOccurrences(of: "dependencies: [\"SecureCrypto\"]", with: "dependencies: [\"SecureCrypto\", \"SystemIO\"]")
        let extra = ModuleRules.manifestViolations(Self.sample(manifest: manifest), includeBenchmarks: true)
        XCTAssertEqual(extra, [Violation(file: "Package.swift", line: 12, module: "Wire",
                                         message: "Wire depends on SystemIO, which no file under Sources/Wire/ imports")])
    }

    func testLibraryImportingCommandLineParsingIsReported() {
        let library = SourceFile(path: "Sources/Wire/Progress.swift", text: "import Foundation\n@preconcurrency import CommandLineParsing\n")
        let violations = ModuleRules.commandLineViolations(Self.sample([library]))
        XCTAssertEqual(violations.map(\.file), ["Sources/Wire/Progress.swift"])
        XCTAssertEqual(violations.map(\.line), [2])
        XCTAssertEqual(violations.map(\.module), ["Wire"])
    }

    // MARK: - Function length

    /// A function whose body holds `bodyLines` lines between the declaration and the closing brace.
    static func function(_ name: String, bodyLines: Int) -> String {
        "    func \(name)(_ x: Int, label y: [String: Int] = [:]) -> Int {\n"
            + String(repeating: "        _ = x\n", count: bodyLines) + "    }\n"
    }

    func testEightyOneLineFunctionIsReported() {
        let text = "struct S {\n" + Self.function("short", bodyLines: 78) + Self.function("long", bodyLines: 79) + "}\n"
        let file = SourceFile(path: "Sources/Wire/Long.swift", text: text)
        let spans = SwiftFunctions.of(file)
        XCTAssertEqual(spans.map(\.name), ["short(_:label:)", "long(_:label:)"])
        XCTAssertEqual(spans.map(\.lineCount), [80, 81])
        let result = FunctionLengthRule.violations([file], exemptions: [])
        XCTAssertEqual(result.violations.count, 1)
        XCTAssertEqual(result.violations.first?.file, "Sources/Wire/Long.swift")
        XCTAssertEqual(result.violations.first?.line, 82)
        XCTAssertEqual(result.violations.first?.module, "Wire")
        XCTAssertTrue(result.violations.first?.message.contains("long(_:label:) is 81 lines") == true)
        let exempt = FunctionLengthRule.Exemption(file: "Sources/Wire/Long.swift", function: "long(_:label:)")
        let allowed = FunctionLengthRule.violations([file], exemptions: [exempt])
        XCTAssertEqual(allowed.violations, [])
        XCTAssertEqual(allowed.used, [exempt])
    }

    func testBracesInStringsAndCommentsAreNotCounted() {
        let text = ##"""
        protocol P {
            func required() -> Int
            init(value: Int)
        }
        final class C {
            init?(value: Int) {
                let a = "}"  // }
                /* } { /* nested } */ } */
                let b = "\(a.map { "}\("{")" })"
                let c = #"}"\#(a)"#
                let d = """
                    }
                    """
                _ = Self.init
                _ = (a, b, c, d)
            }
            deinit {
                print("}")
            }
            static func == (lhs: C, rhs: C) -> Bool { true }
            subscript(index: Int) -> Int { index }
            func generic<T: Equatable>(_ values: [T], where f: (T) -> Bool) -> T? where T: Hashable {
                values.first(where: f)
            }
        }
        """##
        let spans = SwiftFunctions.of(SourceFile(path: "Sources/Wire/C.swift", text: text))
        XCTAssertEqual(spans, [
            FunctionSpan(name: "init(value:)", firstLine: 6, lastLine: 16),
            FunctionSpan(name: "deinit", firstLine: 17, lastLine: 19),
            FunctionSpan(name: "==(lhs:rhs:)", firstLine: 20, lastLine: 20),
            FunctionSpan(name: "subscript(index:)", firstLine: 21, lastLine: 21),
            FunctionSpan(name: "generic(_:where:)", firstLine: 22, lastLine: 24),
        ])
    }

    func testBlankingKeepsLines() {
        let text = "let a = \"x\\\"y\" // c\n/* a\nb */ let s = \"\"\"\nq\n\"\"\"\n"
        let blanked = SwiftLexer.blank(text, strings: true)
        XCTAssertEqual(blanked.split(separator: "\n", omittingEmptySubsequences: false).count,
                       text.split(separator: "\n", omittingEmptySubsequences: false).count)
        XCTAssertEqual(blanked.filter { !$0.isWhitespace }, "leta=lets=")
        XCTAssertEqual(SwiftLexer.blank(text, strings: false).filter { !$0.isWhitespace }, "leta=\"x\\\"y\"lets=\"\"\"q\"\"\"")
    }

    // MARK: - Durable writes

    func testDurableWriteOutsideSystemIOIsReported() {
        let planted = SourceFile(path: "Sources/Privacy/Ledger.swift", text: """
            import Glibc
            func save(_ data: Data, to url: URL) throws {
                try data.write(to: url, options: .atomic)
                _ = fsync(fd)
                _ = Glibc.rename(a, b)
                try "x".write(toFile: path, atomically: true, encoding: .utf8)
                _ = try FileManager.default.replaceItemAt(url, withItemAt: temp)
                _ = renameat(1, a, 1, b)
            }
            """)
        let violations = DurableWriteRule.violations(Self.cleanFiles + [planted])
        XCTAssertEqual(violations.map(\.line), [3, 4, 5, 6, 7, 8], "\(violations)")
        XCTAssertEqual(Set(violations.map(\.file)), ["Sources/Privacy/Ledger.swift"])
        XCTAssertEqual(Set(violations.compactMap(\.module)), ["Privacy"])
        XCTAssertTrue(violations[1].message.hasPrefix("calls fsync("), violations[1].message)
        XCTAssertEqual(DurableWriteRule.violations(Self.cleanFiles), [], "SystemIO itself, comments, strings and declarations")
        let fixture = SourceFile(path: "Tests/WireTests/Fixture.swift", text: "try s.write(toFile: p, atomically: true, encoding: .utf8)")
        XCTAssertEqual(DurableWriteRule.violations([fixture]), [], "tests write fixtures, not durable state")
        let executable = SourceFile(path: "Client/Train.swift", text: "try data.write(to: url, options: [.atomic])")
        XCTAssertEqual(DurableWriteRule.violations([executable]).map(\.module), ["Client"])
    }

    // MARK: - Portability (issue 18)

    func testGlibcOnlySpellingsOutsideLinuxBranchesAreReported() {
        let planted = SourceFile(path: "Sources/Transport/Planted.swift", text: """
            import Glibc
            func open(_ family: Int32) -> Int32 {
                let fd = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
                _ = send(fd, nil, 0, Int32(MSG_NOSIGNAL))
                _ = Glibc.close(fd)
                return status.st_mtim.tv_sec
            }
            """)
        let violations = PortabilityRule.violations([planted])
        XCTAssertEqual(violations.map(\.line), [1, 3, 3, 4, 5, 6], "\(violations)")
        XCTAssertEqual(Set(violations.compactMap(\.module)), ["Transport"])
        XCTAssertTrue(violations[1].message.hasPrefix("SOCK_STREAM.rawValue exists only in Glibc"), violations[1].message)
    }

    func testGlibcOnlySpellingsInsideLinuxBranchesAreAllowed() {
        let guarded = SourceFile(path: "Sources/SystemIO/Guarded.swift", text: """
            #if canImport(Glibc)
            import Glibc
            #elseif canImport(Darwin)
            import Darwin
            #endif
            #if canImport(Darwin)
            let seconds = status.st_mtimespec.tv_sec
            #else
            let seconds = status.st_mtim.tv_sec
            #endif
            #if os(Linux)
            #if DEBUG
            let flags = Int32(MSG_NOSIGNAL)
            #endif
            #else
            let flags: Int32 = 0
            #endif
            let text = "Glibc.close and SOCK_CLOEXEC in a string" // and st_mtim in a comment
            """)
        XCTAssertEqual(PortabilityRule.violations([guarded]), [])
        let afterLinux = SourceFile(path: "Sources/SystemIO/Else.swift", text: """
            #if os(Linux)
            let a = 1
            #else
            let fd = Glibc.close(3)
            #endif
            """)
        XCTAssertEqual(PortabilityRule.violations([afterLinux]).map(\.line), [4], "the #else of a Linux branch is not Linux")
        let test = SourceFile(path: "Tests/TransportTests/T.swift", text: "import Glibc\nlet x = SOCK_CLOEXEC")
        XCTAssertEqual(PortabilityRule.violations([test]), [], "tests run here only")
    }
}
