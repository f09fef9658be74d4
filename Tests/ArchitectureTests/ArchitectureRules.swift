import Foundation

/// One broken rule, where it is: `file:line: [module] message`.
struct Violation: CustomStringConvertible, Equatable {
    let file: String
    let line: Int
    let module: String?
    let message: String

    var description: String { "\(file):\(line): " + (module.map { "[\($0)] " } ?? "") + message }
}

/// What the checks read: the Swift files of the package, `Package.swift` and `DESIGN.md`, from disk or
/// from memory (the controls build small repositories that must fail).
struct Repository {
    /// The folders whose Swift files are read.
    static let sourceFolders = ["Sources", "Client", "Coordinator", "Tests", "Benchmarks"]

    let files: [SourceFile]
    let manifest: String
    let design: String

    /// Reads the package at `root`; a missing `DESIGN.md` reads as empty (and the table check says so).
    static func load(root: URL) throws -> Repository {
        var files: [SourceFile] = []
        for folder in sourceFolders {
            let base = root.appendingPathComponent(folder)
            guard let walker = FileManager.default.enumerator(at: base, includingPropertiesForKeys: nil) else { continue }
            for case let url as URL in walker where url.pathExtension == "swift" {
                let relative = folder + "/" + url.path.dropFirst(base.path.count + 1)
                files.append(SourceFile(path: relative, text: try String(contentsOf: url, encoding: .utf8)))
            }
        }
        files.sort { $0.path < $1.path }
        let manifest = try String(contentsOf: root.appendingPathComponent("Package.swift"), encoding: .utf8)
        let design = (try? String(contentsOf: root.appendingPathComponent("DESIGN.md"), encoding: .utf8)) ?? ""
        return Repository(files: files, manifest: manifest, design: design)
    }

    var targets: [PackageTarget] { PackageManifest.targets(in: manifest) }

    /// The files of a target: those under its folder.
    func files(of target: PackageTarget) -> [SourceFile] {
        files.filter { $0.path.hasPrefix(target.path + "/") }
    }

    /// A target's imports as read from its code, system modules left out: module -> first place imported.
    func imports(of target: PackageTarget) -> [String: (file: String, line: Int)] {
        var found: [String: (file: String, line: Int)] = [:]
        for file in files(of: target) {
            for line in SwiftImports.of(file) where !SwiftImports.system.contains(line.module) {
                if found[line.module] == nil { found[line.module] = (file.path, line.line) }
            }
        }
        return found
    }
}

/// The module rules of issue 12: the import graph read from the code equals DESIGN.md's table and
/// Package.swift, points only downward, and keeps command-line parsing out of libraries.
enum ModuleRules {
    /// Targets that must have a row in the table: every library and executable outside Tests/ and Benchmarks/.
    static func tabled(_ targets: [PackageTarget]) -> [PackageTarget] {
        targets.filter { $0.kind != .test && !$0.path.hasPrefix("Tests/") && !$0.path.hasPrefix("Benchmarks/") }
    }

    /// The table's name for a target: its name, its import name, or its folder (`Client/`).
    static func target(named name: String, in targets: [PackageTarget]) -> PackageTarget? {
        let folder = name.hasSuffix("/") ? String(name.dropLast()) : name
        return targets.first { $0.name == name || $0.moduleName == name || $0.path == folder }
    }

    /// Each tabled module's imports, read from its `import` lines, equal its row's imports column; every
    /// row names a declared target and every declared library or executable has a row.
    static func tableViolations(_ repository: Repository) -> [Violation] {
        let table = ModuleTable.parse(repository.design)
        let targets = repository.targets
        var violations = table.problems.map { Violation(file: "DESIGN.md", line: $0.line, module: nil, message: $0.message) }
        var tabledNames: Set<String> = []
        for row in table.rows {
            for name in row.modules {
                guard let target = target(named: name, in: targets) else {
                    violations.append(Violation(file: "DESIGN.md", line: row.line, module: name,
                                                message: "the module table names \(name), which Package.swift does not declare"))
                    continue
                }
                // A row may name one target twice (`conclave-client` (`Client/`)): check it once.
                guard tabledNames.insert(target.name).inserted else { continue }
                let code = repository.imports(of: target)
                for (module, place) in code.sorted(by: { $0.key < $1.key }) where !row.imports.contains(module) {
                    violations.append(Violation(file: place.file, line: place.line, module: target.moduleName,
                                                message: "imports \(module), which DESIGN.md's module table (line \(row.line)) does not list among \(name)'s imports"))
                }
                for module in row.imports where code[module] == nil {
                    violations.append(Violation(file: "DESIGN.md", line: row.line, module: target.moduleName,
                                                message: "the table lists \(module) among \(name)'s imports, but no file under \(target.path)/ imports it"))
                }
            }
        }
        if !table.rows.isEmpty {
            for target in tabled(targets) where !tabledNames.contains(target.name) {
                violations.append(Violation(file: "Package.swift", line: target.line, module: target.moduleName,
                                            message: "\(target.name) (\(target.path)/) has no row in DESIGN.md's module table"))
            }
        }
        return violations
    }

    /// A module imports only modules in earlier rows of the table (the rows run bottom to top).
    static func orderViolations(_ repository: Repository) -> [Violation] {
        let table = ModuleTable.parse(repository.design)
        let targets = repository.targets
        var rowOf: [String: ModuleRow] = [:]
        for row in table.rows {
            for name in row.modules { rowOf[target(named: name, in: targets)?.moduleName ?? name] = row }
        }
        var violations: [Violation] = []
        var checked: Set<String> = []
        for row in table.rows {
            for name in row.modules {
                guard let target = target(named: name, in: targets), checked.insert(target.name).inserted else { continue }
                for (module, place) in repository.imports(of: target).sorted(by: { $0.key < $1.key }) {
                    guard let imported = rowOf[module] else {
                        violations.append(Violation(file: place.file, line: place.line, module: target.moduleName,
                                                    message: "imports \(module), which is not in DESIGN.md's module table"))
                        continue
                    }
                    if imported.order >= row.order {
                        violations.append(Violation(file: place.file, line: place.line, module: target.moduleName,
                                                    message: "imports \(module) (table line \(imported.line)), which is not above \(name) (line \(row.line)): a module imports only modules listed above it"))
                    }
                }
            }
        }
        return violations
    }

    /// Each library's and executable's dependencies in Package.swift equal the imports of its code.
    static func manifestViolations(_ repository: Repository, includeBenchmarks: Bool) -> [Violation] {
        var violations: [Violation] = []
        for target in repository.targets where target.kind == .library || target.kind == .executable {
            if target.path.hasPrefix("Tests/") || !includeBenchmarks && target.path.hasPrefix("Benchmarks/") { continue }
            let code = repository.imports(of: target)
            let declared = Set(target.dependencies.map { $0.replacingOccurrences(of: "-", with: "_") })
            for module in declared.sorted() where code[module] == nil {
                violations.append(Violation(file: "Package.swift", line: target.line, module: target.moduleName,
                                            message: "\(target.name) depends on \(module), which no file under \(target.path)/ imports"))
            }
            for (module, place) in code.sorted(by: { $0.key < $1.key }) where !declared.contains(module) {
                violations.append(Violation(file: place.file, line: place.line, module: target.moduleName,
                                            message: "imports \(module), which Package.swift (line \(target.line)) does not list among \(target.name)'s dependencies"))
            }
        }
        return violations
    }

    /// Only executables (and the benchmarks, which are executables) import CommandLineParsing:
    /// libraries take a progress interface instead.
    static func commandLineViolations(_ repository: Repository) -> [Violation] {
        var violations: [Violation] = []
        for target in repository.targets where target.kind == .library && target.name != "CommandLineParsing" {
            if target.path.hasPrefix("Tests/") { continue }
            for file in repository.files(of: target) {
                for line in SwiftImports.of(file) where line.module == "CommandLineParsing" {
                    violations.append(Violation(file: file.path, line: line.line, module: target.moduleName,
                                                message: "a library imports CommandLineParsing; only the executables and benchmarks may (libraries take a progress interface)"))
                }
            }
        }
        return violations
    }
}

/// No function longer than the limit, outside the numeric kernels named in an exemption list.
enum FunctionLengthRule {
    static let limit = 80

    /// A long function allowed by name: the file's path and `name(labels:)`.
    struct Exemption: Hashable {
        let file: String
        let function: String
    }

    /// The long functions, and which exemptions were used.
    static func violations(_ files: [SourceFile], exemptions: Set<Exemption>) -> (violations: [Violation], used: Set<Exemption>) {
        var violations: [Violation] = []
        var used: Set<Exemption> = []
        for file in files {
            for span in SwiftFunctions.of(file) where span.lineCount > limit {
                let exemption = Exemption(file: file.path, function: span.name)
                if exemptions.contains(exemption) {
                    used.insert(exemption)
                    continue
                }
                violations.append(Violation(file: file.path, line: span.firstLine, module: file.module,
                                            message: "\(span.name) is \(span.lineCount) lines (lines \(span.firstLine)-\(span.lastLine)); the limit is \(limit) outside the numeric kernels"))
            }
        }
        return (violations, used)
    }
}

/// Durable writes (temp file, fsync, rename, fsync the directory) live in SystemIO alone; every other
/// file of the product (libraries, executables, benchmarks) calls its one durable write. Tests are not
/// read: they write fixtures, which promise nothing about crashes.
enum DurableWriteRule {
    static let home = "Sources/SystemIO/"

    static func violations(_ files: [SourceFile]) -> [Violation] {
        var violations: [Violation] = []
        for file in files where !file.path.hasPrefix(home) && !file.path.hasPrefix("Tests/") {
            let tokens = SwiftTokens.of(file.code)
            for k in tokens.indices {
                guard let what = durableCall(tokens, at: k) else { continue }
                violations.append(Violation(file: file.path, line: tokens[k].line, module: file.module,
                                            message: "\(what) outside SystemIO: write through SystemIO's durable write instead"))
            }
        }
        return violations
    }

    /// What the tokens at `k` do, when it is a durable-write primitive.
    private static func durableCall(_ tokens: [Token], at k: Int) -> String? {
        func text(_ offset: Int) -> String { k + offset >= 0 && k + offset < tokens.count ? tokens[k + offset].text : "" }
        let word = text(0)
        switch word {
        case "fsync", "fdatasync", "rename", "renameat", "renameat2":
            return text(1) == "(" && text(-1) != "func" ? "calls \(word)(" : nil
        case "atomic":
            return text(-1) == "." ? "writes with options .atomic" : nil
        case "atomically":
            return text(1) == ":" && text(2) == "true" ? "writes with atomically: true" : nil
        case "replaceItemAt":
            return "calls replaceItemAt"
        case "replaceItem":
            return text(1) == "(" && text(2) == "at" ? "calls replaceItem(at:)" : nil
        default:
            return nil
        }
    }
}

/// Issue 18: the Swift code builds for Linux (x86_64, aarch64) and macOS. Without a Darwin or aarch64
/// toolchain here, this is checked as far as source can be: a spelling that exists only in Glibc (the
/// module itself, `SOCK_CLOEXEC`, `MSG_NOSIGNAL`, `st_mtim`, the `.rawValue` of its socket-type enum, Linux-
/// only calls) may appear only inside an `#if os(Linux)` / `#if canImport(Glibc)` branch, or the `#else` of a
/// Darwin branch; SystemIO's `PortableSocket` and `SystemCall` give the portable spellings. Tests are not
/// read (they run here only).
enum PortabilityRule {
    static let linuxOnly: Set<String> = [
        "Glibc", "SOCK_CLOEXEC", "SOCK_NONBLOCK", "MSG_NOSIGNAL", "st_mtim", "accept4", "pipe2", "epoll_create1",
        "epoll_ctl", "epoll_wait", "eventfd", "inotify_init1", "sched_getaffinity", "O_TMPFILE", "memfd_create", "SO_PEERCRED", "TCP_KEEPIDLE",
    ]
    static let socketTypes: Set<String> = ["SOCK_STREAM", "SOCK_DGRAM", "SOCK_SEQPACKET", "SOCK_RAW"]

    static func violations(_ files: [SourceFile]) -> [Violation] {
        var violations: [Violation] = []
        for file in files where !file.path.hasPrefix("Tests/") {
            let linuxLines = linuxBranchLines(file.code)
            let directives = Set(file.code.split(separator: "\n", omittingEmptySubsequences: false).enumerated()
                .filter { $0.element.trimmingCharacters(in: .whitespaces).hasPrefix("#") }.map { $0.offset + 1 })
            let tokens = SwiftTokens.of(file.code)
            for k in tokens.indices where !linuxLines.contains(tokens[k].line) && !directives.contains(tokens[k].line) {
                let word = tokens[k].text
                let rawValue = socketTypes.contains(word) && k + 2 < tokens.count
                    && tokens[k + 1].text == "." && tokens[k + 2].text == "rawValue"
                guard linuxOnly.contains(word) || rawValue else { continue }
                let spelling = rawValue ? "\(word).rawValue" : word
                violations.append(Violation(file: file.path, line: tokens[k].line, module: file.module,
                                            message: "\(spelling) exists only in Glibc: use SystemIO's PortableSocket or "
                                                + "SystemCall, or put it under #if os(Linux)"))
            }
        }
        return violations
    }

    /// The lines inside a Linux-only branch of `#if`/`#elseif`/`#else`/`#endif`, nested branches included.
    static func linuxBranchLines(_ code: String) -> Set<Int> {
        var lines: Set<Int> = []
        // One frame per open #if: whether the current branch is Linux-only, and whether an earlier branch
        // of the same #if was a Darwin one (so that its #else is the non-Darwin, i.e. Linux, branch).
        var frames: [(linux: Bool, afterDarwin: Bool)] = []
        for (index, raw) in code.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.hasPrefix("#if ") {
                frames.append((isLinux(line), isDarwin(line)))
            } else if line.hasPrefix("#elseif "), !frames.isEmpty {
                frames[frames.count - 1] = (isLinux(line), frames[frames.count - 1].afterDarwin || isDarwin(line))
            } else if line == "#else" || line.hasPrefix("#else "), !frames.isEmpty {
                let frame = frames[frames.count - 1]
                frames[frames.count - 1] = (frame.afterDarwin && !frame.linux, frame.afterDarwin)
            } else if line.hasPrefix("#endif"), !frames.isEmpty {
                frames.removeLast()
            } else if frames.contains(where: \.linux) {
                lines.insert(index + 1)
            }
        }
        return lines
    }

    private static func isLinux(_ condition: String) -> Bool {
        condition.contains("os(Linux)") || condition.contains("canImport(Glibc)")
    }

    private static func isDarwin(_ condition: String) -> Bool {
        condition.contains("canImport(Darwin)") || condition.contains("os(macOS)")
    }
}
