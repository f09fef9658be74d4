/// A kernel's entry check that stays in release builds. `Kernels` is compiled with `-Ounchecked`, which
/// removes `precondition`; shapes and labels that reach a kernel come from model files and datasets (checked
/// by their parsers first), so their checks at the kernels' entry points must not depend on the flag. The
/// inner loops stay unchecked.
@inline(__always)
func require(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String,
             file: StaticString = #fileID, line: UInt = #line) {
    if !condition() { fatalError(message(), file: file, line: line) }
}
