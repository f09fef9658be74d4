/// Anything whose bytes can be read in place: byte arrays, slices, `SecretBytes`, raw buffers.
/// The primitives take this so that secrets need not be copied into ordinary arrays to be used.
public protocol ContiguousByteStorage {
    /// Calls `body` with the bytes, valid only for the duration of the call.
    func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R
}

extension Array: ContiguousByteStorage where Element == UInt8 {}
extension ArraySlice: ContiguousByteStorage where Element == UInt8 {}
extension ContiguousArray: ContiguousByteStorage where Element == UInt8 {}

extension UnsafeRawBufferPointer: ContiguousByteStorage {
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try body(self)
    }
}
