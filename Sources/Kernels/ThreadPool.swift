import Dispatch
import Foundation

/// Runs data-parallel loops on a fixed number of worker threads (`--threads N`).
///
/// Work is split into contiguous chunks, one per thread, so each thread touches its own rows.
public final class ThreadPool: @unchecked Sendable {
    /// The number of threads a loop uses at most.
    public let threads: Int

    /// - Parameter threads: worker count; nil uses the machine's active processor count.
    public init(threads: Int? = nil) {
        self.threads = max(1, threads ?? ProcessInfo.processInfo.activeProcessorCount)
    }

    /// A pool that runs everything on the calling thread.
    public static let serial = ThreadPool(threads: 1)

    /// Calls `body` on disjoint chunks covering `0..<count`, in parallel, and returns when all are done.
    ///
    /// - Parameter minimumChunk: do not split below this many items per chunk (overhead dominates).
    public func parallelFor(_ count: Int, minimumChunk: Int = 1, _ body: (Range<Int>) -> Void) {
        guard count > 0 else { return }
        let chunks = min(threads, max(1, count / max(1, minimumChunk)))
        if chunks == 1 {
            body(0..<count)
            return
        }
        withoutActuallyEscaping(body) { body in
            nonisolated(unsafe) let work = body
            DispatchQueue.concurrentPerform(iterations: chunks) { chunk in
                let start = count * chunk / chunks
                let end = count * (chunk + 1) / chunks
                work(start..<end)
            }
        }
    }
}
