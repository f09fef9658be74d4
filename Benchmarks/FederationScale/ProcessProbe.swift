import Foundation

/// What the benchmark reads about a process from /proc: resident memory, threads, CPU time.
struct ProcessProbe {
    let pid: Int32

    /// VmRSS in bytes, and the thread count, from /proc/PID/status.
    func residentBytesAndThreads() throws -> (bytes: Int, threads: Int) {
        let path = "/proc/\(pid)/status"
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw BenchmarkError("cannot read \(path): the process is gone")
        }
        var kilobytes: Int?, threads: Int?
        for line in text.split(separator: "\n") {
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            if fields.first == "VmRSS:", fields.count >= 2 { kilobytes = Int(fields[1]) }
            if fields.first == "Threads:", fields.count >= 2 { threads = Int(fields[1]) }
        }
        guard let kilobytes, let threads else { throw BenchmarkError("\(path) has no VmRSS or Threads line") }
        return (kilobytes * 1024, threads)
    }

    /// User plus system CPU seconds of the whole process (live and exited threads), from
    /// /proc/PID/stat fields 14 and 15, in clock ticks (10 ms on Linux).
    func cpuSeconds() throws -> Double {
        let path = "/proc/\(pid)/stat"
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw BenchmarkError("cannot read \(path): the process is gone")
        }
        // The command name (field 2) may hold spaces; the fields after its closing parenthesis are plain.
        guard let close = text.lastIndex(of: ")") else { throw BenchmarkError("\(path): no ')' after the command name") }
        let fields = text[text.index(after: close)...].split(separator: " ")
        // fields[0] is field 3 (state); utime is field 14, stime field 15.
        guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else {
            throw BenchmarkError("\(path): cannot parse utime and stime")
        }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }
}

/// An error of the benchmark's own, with the reason in words.
struct BenchmarkError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// CPU seconds (user + system) of this process so far.
func ownCPUSeconds() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) / 1e6
        + Double(usage.ru_stime.tv_sec) + Double(usage.ru_stime.tv_usec) / 1e6
}

/// CPU seconds of the calling thread so far.
func threadCPUSeconds() -> Double {
    var time = timespec()
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &time)
    return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
}

/// Raises the open-file limit to the hard limit (1,000 connections need 1,000 descriptors on each
/// side); children inherit it. Returns the new soft limit.
@discardableResult
func raiseOpenFileLimit() -> UInt64 {
    var limit = rlimit()
    guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 0 }
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max
        _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        _ = getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    }
    return UInt64(limit.rlim_cur)
}

func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    guard !sorted.isEmpty else { return .nan }
    return sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
}
