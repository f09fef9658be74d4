#!/usr/bin/env bash
# The Swift side of the NEON tiers compiled for aarch64 Linux, as far as this x86-64 machine allows.
# No aarch64 Swift SDK exists here (and download.swift.org is out of reach), so:
#   - the standard library (Swift, _Concurrency, _StringProcessing, Synchronization, ...) and Glibc are
#     rebuilt for aarch64-unknown-linux-gnu from the toolchain's x86_64 .swiftinterface files, Glibc
#     against Debian's arm64 sysroot (/usr/aarch64-linux-gnu, libc6-dev-arm64-cross). Two Float80
#     bodies that call x86-only shims are replaced (Float80 exists only on x86; our sources never name
#     it, which this script checks, since the rebuilt interface would wrongly accept it);
#   - Foundation and XCTest have no interface (binary modules only), so stand-ins declare the few names
#     Sources/Kernels and Tests/KernelsTests use (ProcessInfo, NSLock, Thread, DispatchSemaphore; the
#     XCTest assertions' signatures, asserting nothing), the Foundation one re-exporting the aarch64 Glibc;
#   - CKernels is imported through its real header with the aarch64 target (CK_ARCH picks *_neon).
# Then Sources/Kernels is compiled (-Ounchecked -wmo, as Package.swift) to an aarch64 object, and every
# ck_* symbol it needs must be defined by Sources/CKernels/*.c built for aarch64 (-Werror).
# Then Tests/KernelsTests is typechecked against that module.
# Controls: an #if arch(arm64) type error must fail the same compile; the object must call the NEON
# K-quant kernels (ck_gemm_kq_neon, ck_dequantize_row_neon).
# Not checked: the other Swift modules and their tests (they need real Foundation), linking, running.
# Usage: swift-aarch64.sh [BUILD_DIR]. Exit 77 (skipped) when the arm64 sysroot or cross tools are missing.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:-$root/.build/swift-aarch64}
target=aarch64-unknown-linux-gnu
sysroot=/usr/aarch64-linux-gnu
if [ ! -f "$sysroot/include/stdio.h" ] || ! command -v aarch64-linux-gnu-nm >/dev/null; then
    echo "SKIPPED: needs libc6-dev-arm64-cross and binutils-aarch64-linux-gnu (make cross-deps)" >&2
    exit 77
fi
if grep -rlw Float80 "$root/Sources" "$root/Tests" --include='*.swift' >/dev/null; then
    echo "FAIL: Float80 (x86 only) named in: $(grep -rlw Float80 "$root/Sources" "$root/Tests" --include='*.swift' | tr '\n' ' ')" >&2
    exit 1
fi
resources=$(swiftc -print-target-info | sed -n 's/.*"runtimeResourcePath": "\(.*\)".*/\1/p')
rm -rf "$out" && mkdir -p "$out/res/linux/aarch64" "$out/stub" "$out/cobj" "$out/mc" "$out/mod"

# A resource directory whose linux/ holds aarch64 interfaces for the modules we rebuild.
for entry in "$resources"/*; do [ "$(basename "$entry")" = linux ] || ln -s "$entry" "$out/res/"; done
rebuilt=" Swift _Concurrency _StringProcessing SwiftOnoneSupport Synchronization Glibc _Builtin_float _Volatile "
for entry in "$resources"/linux/*; do
    name=$(basename "$entry" .swiftmodule)
    if [[ "$entry" == *.swiftmodule && "$rebuilt" == *" $name "* ]]; then
        mkdir "$out/res/linux/$name.swiftmodule"
        sed -e "s/x86_64-unknown-linux-gnu/$target/g" \
            -e 's/self = _stdlib_remainderl(self, other)/self = -(-self)/' \
            -e 's/self = _stdlib_squareRootl(self)/self = -(-self)/' \
            "$entry/x86_64-unknown-linux-gnu.swiftinterface" > "$out/res/linux/$name.swiftmodule/$target.swiftinterface"
    elif [ "$name" != x86_64 ]; then
        ln -s "$entry" "$out/res/linux/"
    fi
done
cp "$resources/linux/x86_64/glibc.modulemap" "$resources/linux/x86_64/SwiftGlibc.h" "$out/res/linux/aarch64/"
swift=(swiftc -target "$target" -resource-dir "$out/res" -sdk "$sysroot" -module-cache-path "$out/mc")
quiet() { grep -v '^<unknown>:0: warning: could not find module' || true; }

cat > "$out/stub/Foundation.swift" <<'EOF'
// Stand-in for Foundation (no aarch64 Foundation here): only the names Sources/Kernels and
// Tests/KernelsTests use, with Foundation's signatures; nothing here is meant to run.
@_exported import Glibc
public final class ProcessInfo: @unchecked Sendable {
    public static let processInfo = ProcessInfo()
    public var environment: [String: String] { [:] }
    public var activeProcessorCount: Int { 1 }
}
public final class NSLock: @unchecked Sendable {
    public init() {}
    public func lock() {}
    public func unlock() {}
    public func withLock<R>(_ body: () throws -> R) rethrows -> R { try body() }
}
public final class Thread: @unchecked Sendable, Equatable {
    public init(block: @escaping @Sendable () -> Void) {}
    public func start() {}
    public var name: String?
    public static var current: Thread { Thread {} }
    public static func == (a: Thread, b: Thread) -> Bool { a === b }
}
// Dispatch, which Foundation re-exports (used by Tests/KernelsTests).
public struct DispatchTime: Sendable {
    public static func now() -> DispatchTime { DispatchTime() }
    public static func + (time: DispatchTime, seconds: Double) -> DispatchTime { time }
}
public enum DispatchTimeoutResult: Sendable { case success, timedOut }
public final class DispatchSemaphore: @unchecked Sendable {
    public init(value: Int) {}
    @discardableResult public func signal() -> Int { 0 }
    public func wait() {}
    public func wait(timeout: DispatchTime) -> DispatchTimeoutResult { .success }
}
EOF
cat > "$out/stub/XCTest.swift" <<'SWIFT'
// Stand-in for XCTest (no aarch64 XCTest here): the signatures Tests/KernelsTests uses, as in
// swift-corelibs-xctest, which re-exports Foundation; nothing is asserted or run.
@_exported import Foundation
open class XCTestCase { public init() {} }
public struct XCTSkip: Error { public init(_ message: String? = nil) {} }
public func XCTAssertEqual<T: Equatable>(_ a: @autoclosure () throws -> T, _ b: @autoclosure () throws -> T,
                                         _ message: @autoclosure () -> String = "", file: StaticString = #filePath, line: UInt = #line) {}
public func XCTAssertEqual<T: FloatingPoint>(_ a: @autoclosure () throws -> T, _ b: @autoclosure () throws -> T,
                                             accuracy: T, _ message: @autoclosure () -> String = "", file: StaticString = #filePath,
                                             line: UInt = #line) {}
public func XCTAssertNotEqual<T: Equatable>(_ a: @autoclosure () throws -> T, _ b: @autoclosure () throws -> T,
                                            _ message: @autoclosure () -> String = "", file: StaticString = #filePath, line: UInt = #line) {}
public func XCTAssertLessThan<T: Comparable>(_ a: @autoclosure () throws -> T, _ b: @autoclosure () throws -> T,
                                             _ message: @autoclosure () -> String = "", file: StaticString = #filePath, line: UInt = #line) {}
public func XCTAssertLessThanOrEqual<T: Comparable>(_ a: @autoclosure () throws -> T, _ b: @autoclosure () throws -> T,
                                                    _ message: @autoclosure () -> String = "", file: StaticString = #filePath,
                                                    line: UInt = #line) {}
public func XCTAssertGreaterThan<T: Comparable>(_ a: @autoclosure () throws -> T, _ b: @autoclosure () throws -> T,
                                                _ message: @autoclosure () -> String = "", file: StaticString = #filePath,
                                                line: UInt = #line) {}
public func XCTAssertTrue(_ a: @autoclosure () throws -> Bool, _ message: @autoclosure () -> String = "", file: StaticString = #filePath,
                          line: UInt = #line) {}
public func XCTAssertFalse(_ a: @autoclosure () throws -> Bool, _ message: @autoclosure () -> String = "", file: StaticString = #filePath,
                           line: UInt = #line) {}
public func XCTAssertNil(_ a: @autoclosure () throws -> Any?, _ message: @autoclosure () -> String = "", file: StaticString = #filePath,
                         line: UInt = #line) {}
public func XCTAssertNotNil(_ a: @autoclosure () throws -> Any?, _ message: @autoclosure () -> String = "", file: StaticString = #filePath,
                            line: UInt = #line) {}
public func XCTSkipIf(_ a: @autoclosure () throws -> Bool, _ message: @autoclosure () -> String? = nil,
                      file: StaticString = #filePath, line: UInt = #line) throws {}
public func XCTSkipUnless(_ a: @autoclosure () throws -> Bool, _ message: @autoclosure () -> String? = nil,
                          file: StaticString = #filePath, line: UInt = #line) throws {}
public func XCTUnwrap<T>(_ a: @autoclosure () throws -> T?, _ message: @autoclosure () -> String = "", file: StaticString = #filePath,
                         line: UInt = #line) throws -> T {
    guard let value = try a() else { throw XCTSkip() }
    return value
}
SWIFT
echo "== the standard library and Glibc rebuilt for $target; Foundation and XCTest stand-ins"
"${swift[@]}" -emit-module -parse-as-library -swift-version 6 -module-name Foundation "$out/stub/Foundation.swift" \
    -emit-module-path "$out/stub/Foundation.swiftmodule" 2>&1 | quiet
"${swift[@]}" -I "$out/stub" -emit-module -parse-as-library -swift-version 6 -module-name XCTest "$out/stub/XCTest.swift" \
    -emit-module-path "$out/stub/XCTest.swiftmodule" 2>&1 | quiet
printf 'module CKernels {\n    umbrella "%s"\n    export *\n}\n' "$root/Sources/CKernels/include" > "$out/module.modulemap"
kernels() {  # kernels EXTRA_ARGS...: Sources/Kernels for aarch64, with Package.swift's release flags
    "${swift[@]}" -I "$out/stub" -parse-as-library -module-name Kernels -swift-version 6 -enable-testing \
        -Ounchecked -wmo -Xcc -fmodule-map-file="$out/module.modulemap" -Xcc -I -Xcc "$root/Sources/CKernels/include" \
        "$root"/Sources/Kernels/*.swift "$@"
}

echo "== control: an error only aarch64 compiles must fail"
printf '#if arch(arm64)\nlet aarch64Control: Int = "not an Int"\n#endif\n' > "$out/Control.swift"
if kernels -typecheck "$out/Control.swift" >"$out/control.log" 2>&1; then
    echo "FAIL: the aarch64-only error was not reported; is the target really aarch64?" >&2; exit 1
fi
errors=$(grep '^/.*error:' "$out/control.log" || true)
if [ "$errors" != "$(grep '^/.*Control.swift:2:.*error: cannot convert' "$out/control.log")" ] || [ -z "$errors" ]; then
    echo "FAIL: the control failed for another reason:" >&2; cat "$out/control.log" >&2; exit 1
fi
echo "control caught: ${errors#$out/}"

echo "== Sources/Kernels compiled for $target"
kernels -c -o "$out/Kernels.o" -emit-module -emit-module-path "$out/mod/Kernels.swiftmodule" 2>&1 | quiet
file "$out/Kernels.o" | grep -q "ARM aarch64" || { file "$out/Kernels.o" >&2; exit 1; }

echo "== every ck_* symbol it calls defined by Sources/CKernels built for aarch64"
for source in "$root"/Sources/CKernels/*.c; do
    clang --target=aarch64-linux-gnu -O3 -Wall -Wextra -Werror -fPIC -I"$root/Sources/CKernels/include" \
        -c "$source" -o "$out/cobj/$(basename "$source" .c).o"
done
aarch64-linux-gnu-nm "$out/Kernels.o" | awk '$1 == "U" && $2 ~ /^ck_/ {print $2}' | sort -u > "$out/needed"
aarch64-linux-gnu-nm "$out"/cobj/*.o | awk '$2 == "T" && $3 ~ /^ck_/ {print $3}' | sort -u > "$out/defined"
missing=$(comm -23 "$out/needed" "$out/defined")
[ -z "$missing" ] || { echo "FAIL: undefined on aarch64: $missing" >&2; exit 1; }
for symbol in ck_gemm_kq_neon ck_dequantize_row_neon ck_gemm_q8_neon; do
    grep -qx "$symbol" "$out/needed" || { echo "FAIL: Kernels.o does not call $symbol" >&2; exit 1; }
done
echo "== Tests/KernelsTests typechecked for $target against that Kernels module"
"${swift[@]}" -I "$out/stub" -I "$out/mod" -typecheck -parse-as-library -module-name KernelsTests -swift-version 6 \
    -Xcc -fmodule-map-file="$out/module.modulemap" -Xcc -I -Xcc "$root/Sources/CKernels/include" \
    "$root"/Tests/KernelsTests/*.swift 2>&1 | quiet
echo "Sources/Kernels compiles for $target, its $(wc -l < "$out/needed") ck_* calls all resolve, and Tests/KernelsTests"
echo "typechecks against it (nothing linked or run: no aarch64 machine)"
