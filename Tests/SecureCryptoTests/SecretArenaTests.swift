import Foundation
import XCTest
@testable import SecureCrypto

/// Small secrets share guarded slabs: a released slot is wiped before anyone else gets it, and
/// live secrets never share a slot.
final class SecretArenaTests: XCTestCase {
    func testReleasedSlotIsWipedAndReusedZeroed() {
        var address: UInt = 0
        do {
            let secret = SecretBytes(count: 32) { $0.initializeMemory(as: UInt8.self, repeating: 0xA5) }
            address = secret.withUnsafeBytes { UInt(bitPattern: $0.baseAddress!) }
            XCTAssertEqual(secret.withUnsafeBytes { Array($0) }, [UInt8](repeating: 0xA5, count: 32))
        }
        // The slot was wiped on release: its 64 bytes are zero even before it is handed out again.
        let wiped = UnsafeRawBufferPointer(start: UnsafeRawPointer(bitPattern: address), count: SecretArena.slotSize)
        XCTAssertEqual(Array(wiped), [UInt8](repeating: 0, count: SecretArena.slotSize))
        let next = SecretBytes(count: 64) { _ in }
        XCTAssertEqual(next.withUnsafeBytes { Array($0) }, [UInt8](repeating: 0, count: 64), "handed out zeroed")
    }

    func testLiveSecretsNeverShareASlotAcrossThreadsAndSlabs() {
        let perThread = 1500  // more than one slab per thread
        let results = Mutex2<[Set<UInt>]>([])
        let alive = Mutex2<[[SecretBytes]]>([])  // every secret stays alive until all threads are done
        DispatchQueue.concurrentPerform(iterations: 4) { thread in
            var secrets: [SecretBytes] = []
            for index in 0..<perThread {
                secrets.append(SecretBytes(count: 1 + index % 64) { $0.initializeMemory(as: UInt8.self, repeating: UInt8(thread + 1)) })
            }
            for secret in secrets {
                XCTAssertTrue(secret.withUnsafeBytes { $0.allSatisfy { $0 == UInt8(thread + 1) } }, "no other thread wrote here")
            }
            let addresses = Set(secrets.map { s in s.withUnsafeBytes { UInt(bitPattern: $0.baseAddress!) } })
            results.append(addresses)
            alive.append(secrets)
        }
        let all = results.value
        XCTAssertEqual(all.map(\.count), [perThread, perThread, perThread, perThread])
        XCTAssertEqual(all.reduce(Set<UInt>()) { $0.union($1) }.count, 4 * perThread)
        // Larger secrets keep an allocation of their own.
        let large = SecretBytes(randomCount: 65)
        XCTAssertEqual(large.count, 65)
    }
}

/// A tiny lock-protected box for the test's results.
final class Mutex2<Value>: @unchecked Sendable {
    private var stored: Value
    private let lock = NSLock()
    init(_ value: Value) { stored = value }
    var value: Value { lock.withLock { stored } }
    func append<Element>(_ element: Element) where Value == [Element] { lock.withLock { stored.append(element) } }
}
