import Foundation
import Synchronization

/// A persistent pool of worker threads for data-parallel loops (`--threads N`).
///
/// Decoding one token runs a few hundred small loops, so handing work to threads must cost
/// microseconds: workers stay alive, spin briefly on a generation counter after each loop, and only
/// then sleep on a condition variable. Each loop is split into one contiguous chunk per thread; the
/// calling thread runs chunk 0 and waits for the others. Workers stop when the pool is released.
public final class ThreadPool: @unchecked Sendable {
    /// The number of threads a loop uses at most, the caller included.
    public let threads: Int
    let state: PoolState
    /// Loops run by one caller at a time (a pool is not re-entrant).
    private let callerLock = NSLock()

    /// - Parameter threads: worker count including the caller; nil uses the active processor count.
    public init(threads: Int? = nil) {
        self.threads = max(1, threads ?? ProcessInfo.processInfo.activeProcessorCount)
        state = PoolState(workers: self.threads - 1)
        for index in 1..<self.threads {
            let thread = Thread { [state] in state.workerLoop(index) }
            thread.name = "conclave-worker-\(index)"
            thread.start()
        }
    }

    deinit { state.stop() }

    /// A pool that runs everything on the calling thread.
    public static let serial = ThreadPool(threads: 1)

    /// Calls `body` on disjoint chunks covering `0..<count`, in parallel, and returns when all are done.
    ///
    /// Chunks are handed out dynamically (an atomic counter), several per thread, so a thread slowed by
    /// memory stalls or the operating system does not hold the others back.
    /// - Parameter minimumChunk: do not split below this many items per chunk (overhead dominates).
    public func parallelFor(_ count: Int, minimumChunk: Int = 1, _ body: (Range<Int>) -> Void) {
        guard count > 0 else { return }
        let minimum = max(1, minimumChunk)
        let threadsUsed = min(threads, max(1, count / minimum))
        if threadsUsed == 1 {
            body(0..<count)
            return
        }
        // About four chunks per thread, rounded up to a multiple of the minimum (kernels tile rows by it).
        var chunk = max(minimum, count / (threadsUsed * 4))
        chunk = (chunk + minimum - 1) / minimum * minimum
        callerLock.lock()
        defer { callerLock.unlock() }
        withoutActuallyEscaping(body) { body in state.run(body, count: count, chunk: chunk, workersUsed: threadsUsed - 1) }
    }
}

/// What the caller and the workers share; workers keep it alive until they see `stopping`.
///
/// A loop's workers join it through `ticket` (the loop's generation in the high bits, a closed flag, the
/// count of workers inside): a worker joins only while the loop is open, and the caller, once every chunk
/// is claimed, closes it and waits only for the workers inside. A worker the operating system has not
/// scheduled yet (on a loaded machine, or asleep) is not waited for: it finds the loop closed, or a newer
/// one, and never touches the old loop's fields.
final class PoolState: @unchecked Sendable {
    let generation = Atomic<Int>(0)
    let ticket = Atomic<Int>(0)
    let sleepers = Atomic<Int>(0)
    let stopping = Atomic<Bool>(false)
    let mutex: UnsafeMutablePointer<pthread_mutex_t>
    let condition: UnsafeMutablePointer<pthread_cond_t>
    // The current loop: written by the caller before `ticket` opens it, read by workers that joined it.
    var job: ((Range<Int>) -> Void)?
    var jobCount = 0
    var jobChunk = 1
    var jobWorkers = 0
    /// The next unclaimed item of the current loop.
    let next = Atomic<Int>(0)
    let workers: Int
    /// Tests only: called by a worker (with its index) after it sees a new loop and before it tries to
    /// join, to stand for a worker the operating system has not scheduled.
    var beforeJoin: (@Sendable (Int) -> Void)?

    /// Spins before a worker goes to sleep (tens of microseconds).
    static let spinLimit = 20_000
    /// Ticket layout: the low 31 bits of the generation << generationShift | closed | workers inside.
    /// (The generation itself passes 2³¹ after about ten hours of generating at 60,000 loops a second.)
    static let generationShift = 32
    static let generationMask = (1 << 31) - 1
    static let closed = 1 << 31
    static let insideMask = closed - 1

    init(workers: Int) {
        self.workers = workers
        mutex = .allocate(capacity: 1)
        condition = .allocate(capacity: 1)
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(condition, nil)
    }

    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        condition.deallocate()
        mutex.deallocate()
    }

    func wakeSleepers() {
        if sleepers.load(ordering: .sequentiallyConsistent) > 0 {
            pthread_mutex_lock(mutex)
            pthread_cond_broadcast(condition)
            pthread_mutex_unlock(mutex)
        }
    }

    func stop() {
        stopping.store(true, ordering: .sequentiallyConsistent)
        generation.add(1, ordering: .sequentiallyConsistent)
        pthread_mutex_lock(mutex)
        pthread_cond_broadcast(condition)
        pthread_mutex_unlock(mutex)
    }

    func run(_ body: @escaping (Range<Int>) -> Void, count: Int, chunk: Int, workersUsed: Int) {
        job = body
        jobCount = count
        jobChunk = chunk
        jobWorkers = workersUsed
        next.store(0, ordering: .relaxed)
        // Open the loop (releasing the fields above to the workers that join), then announce it.
        let loop = generation.load(ordering: .relaxed) + 1
        ticket.store((loop & Self.generationMask) << Self.generationShift, ordering: .releasing)
        // Sequentially consistent with the sleepers' check, so a worker about to sleep either sees the
        // new generation or is counted among the sleepers and woken.
        generation.store(loop, ordering: .sequentiallyConsistent)
        wakeSleepers()
        claimChunks(body)
        // Every chunk is claimed: close the loop and wait for the workers still inside (each finishing a
        // chunk it claimed). Past a short spin the caller yields its core, which a preempted worker may need.
        var inside = ticket.bitwiseOr(Self.closed, ordering: .acquiringAndReleasing).newValue & Self.insideMask
        var spins = 0
        while inside > 0 {
            spins += 1
            if spins > 2_000 { sched_yield() }
            inside = ticket.load(ordering: .acquiring) & Self.insideMask
        }
        job = nil
    }

    /// Runs chunks of the current loop until none is left.
    @inline(__always)
    func claimChunks(_ body: (Range<Int>) -> Void) {
        while true {
            let start = next.add(jobChunk, ordering: .relaxed).oldValue
            if start >= jobCount { return }
            body(start..<min(jobCount, start + jobChunk))
        }
    }

    /// Enters loop `loop` if it is still open; false when it is closed or a newer one has begun.
    func join(_ loop: Int) -> Bool {
        var current = ticket.load(ordering: .relaxed)
        while current >> Self.generationShift == loop & Self.generationMask && current & Self.closed == 0 {
            let (exchanged, original) = ticket.compareExchange(expected: current, desired: current + 1,
                                                               ordering: .acquiring)
            if exchanged { return true }
            current = original
        }
        return false
    }

    func workerLoop(_ index: Int) {
        var seen = 0
        while true {
            var spins = 0
            while generation.load(ordering: .acquiring) == seen {
                spins += 1
                if spins < Self.spinLimit { continue }
                pthread_mutex_lock(mutex)
                sleepers.add(1, ordering: .sequentiallyConsistent)
                while generation.load(ordering: .sequentiallyConsistent) == seen {
                    pthread_cond_wait(condition, mutex)
                }
                sleepers.subtract(1, ordering: .sequentiallyConsistent)
                pthread_mutex_unlock(mutex)
                spins = 0
            }
            seen = generation.load(ordering: .acquiring)
            if stopping.load(ordering: .acquiring) { return }
            beforeJoin?(index)
            guard join(seen) else { continue }
            if index <= jobWorkers, let job { claimChunks(job) }
            ticket.subtract(1, ordering: .releasing)
        }
    }
}
