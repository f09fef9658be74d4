import CSodium
import Synchronization

/// A buffer for secret material, wiped with `sodium_memzero` when freed and never printed. Secrets
/// of up to `SecretArena.slotSize` bytes (keys, seeds, Shamir shares) live in slots of guarded,
/// `mlock`ed slabs from `sodium_malloc`; larger ones get a `sodium_malloc` allocation of their own.
/// One `sodium_malloc` per small secret cost three system calls and three pages each, a third of a
/// secure-aggregation client's time at n = 500 (Benchmarks/SecureAggregationBenchmark).
///
/// The contents are fixed once initialised, so a `SecretBytes` may be shared across threads.
public final class SecretBytes: @unchecked Sendable, ContiguousByteStorage, CustomStringConvertible,
    CustomDebugStringConvertible, CustomReflectable
{
    /// Number of secret bytes.
    public let count: Int
    private let pointer: UnsafeMutableRawPointer?
    private let pooled: Bool

    /// `count` bytes written once by `initializer`, which sees the (zeroed) buffer.
    /// - Throws: whatever `initializer` throws; the buffer is wiped and freed first.
    public init(count: Int, initializingWith initializer: (UnsafeMutableRawBufferPointer) throws -> Void) rethrows {
        precondition(count >= 0, "SecretBytes count must not be negative, got \(count)")
        Sodium.initialize()
        self.count = count
        if count == 0 {
            pointer = nil
            pooled = false
        } else if count <= SecretArena.slotSize {
            pointer = SecretArena.shared.allocate()
            pooled = true
        } else {
            pooled = false
            guard let allocated = sodium_malloc(count) else {
                preconditionFailure("sodium_malloc failed for \(count) secret bytes (out of memory)")
            }
            sodium_memzero(allocated, count)
            pointer = allocated
        }
        try initializer(UnsafeMutableRawBufferPointer(start: pointer, count: count))
    }

    /// `count` fresh secure random bytes from `SecureRandom`.
    public convenience init(randomCount count: Int) {
        self.init(count: count) { SecureRandom.fill($0) }
    }

    /// A copy of `bytes` in protected memory.
    ///
    /// The caller's storage is neither wiped nor otherwise touched: if it held a secret, wiping it is
    /// the caller's job (ordinary Swift arrays may have been copied already, which is why secrets
    /// should be created inside `SecretBytes` in the first place).
    public convenience init(copying bytes: some ContiguousByteStorage) {
        let count = bytes.withUnsafeBytes { $0.count }
        self.init(count: count) { destination in
            bytes.withUnsafeBytes { source in
                if let from = source.baseAddress, let to = destination.baseAddress, count > 0 {
                    to.copyMemory(from: from, byteCount: count)
                }
            }
        }
    }

    deinit {
        guard let pointer else { return }
        if pooled {
            SecretArena.shared.release(pointer)
        } else {
            sodium_memzero(pointer, count)
            sodium_free(pointer)
        }
    }

    /// Calls `body` with the secret bytes; the pointer must not escape the call.
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try body(UnsafeRawBufferPointer(start: pointer, count: count))
    }

    /// Never the contents: only the length.
    public var description: String { "SecretBytes(\(count) bytes, redacted)" }
    /// Never the contents: only the length.
    public var debugDescription: String { description }
    /// Only the length, so `dump` and debuggers' summaries show no contents.
    public var customMirror: Mirror { Mirror(self, children: ["count": count], displayStyle: .class) }
}

/// Whether `a` and `b` hold the same bytes, in time that depends only on their lengths
/// (`sodium_memcmp`). Lengths are treated as public: unequal lengths give `false` after a
/// comparison of `a` with itself, so the time spent never depends on the contents of either.
public func constantTimeEqual(_ a: some ContiguousByteStorage, _ b: some ContiguousByteStorage) -> Bool {
    Sodium.initialize()
    return a.withUnsafeBytes { x in
        b.withUnsafeBytes { y in
            guard x.count > 0, let xBase = x.baseAddress else { return y.count == 0 }
            guard x.count == y.count, let yBase = y.baseAddress else {
                _ = sodium_memcmp(xBase, xBase, x.count)
                return false
            }
            return sodium_memcmp(xBase, yBase, x.count) == 0
        }
    }
}

/// Fixed-size slots for small secrets inside `sodium_malloc` slabs (guard pages around each slab,
/// locked in memory where the system allows). Slots are zeroed when released and handed out zeroed.
/// Slabs are kept for the life of the process; their number follows the peak of live small secrets.
/// The cost against one allocation per secret: an overrun of one slot reaches its neighbour rather
/// than a guard page.
final class SecretArena: @unchecked Sendable {
    static let shared = SecretArena()
    /// The largest secret a slot holds.
    static let slotSize = 64
    static let slotsPerSlab = 1024

    /// Free slots, as addresses.
    private let free = Mutex<[UInt]>([])

    func allocate() -> UnsafeMutableRawPointer {
        let address = free.withLock { free -> UInt in
            if free.isEmpty { free = Self.newSlab() }
            return free.removeLast()
        }
        return UnsafeMutableRawPointer(bitPattern: address)!
    }

    private static func newSlab() -> [UInt] {
        let bytes = slotSize * slotsPerSlab
        guard let slab = sodium_malloc(bytes) else {
            preconditionFailure("sodium_malloc failed for a \(bytes)-byte slab of secret slots (out of memory)")
        }
        sodium_memzero(slab, bytes)
        let base = UInt(bitPattern: slab)
        return stride(from: slotsPerSlab - 1, through: 0, by: -1).map { base + UInt($0 * slotSize) }
    }

    func release(_ slot: UnsafeMutableRawPointer) {
        sodium_memzero(slot, Self.slotSize)
        free.withLock { $0.append(UInt(bitPattern: slot)) }
    }
}
