#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import SystemIO

/// Reading and writing PEM files. Writes go through the one durable write (`writeFileAtomically`):
/// a private key is 0600 and never replaces an existing file unless asked; on reading, a key that group
/// or others may access is refused.
public enum PEMFile {
    /// Largest PEM file read (a certificate chain or key is a few KiB).
    public static let maximumFileBytes = 1 << 20

    /// Writes a private key with mode 0600; refuses to replace an existing file unless asked.
    public static func writePrivateKey(_ key: PrivateKeyPEM, to path: String, replacingExisting: Bool = false) throws {
        try key.withUnsafeBytes { try write($0, to: path, mode: 0o600, replacingExisting: replacingExisting) }
    }

    /// Writes a certificate, CA certificate or signing request (public data) with mode 0644.
    public static func writePublic(_ pem: String, to path: String, replacingExisting: Bool = true) throws {
        let bytes = Array(pem.utf8)
        try bytes.withUnsafeBytes { try write($0, to: path, mode: 0o644, replacingExisting: replacingExisting) }
    }

    /// Reads a private key file, refusing one that group or others may access.
    /// - Throws: `TransportError.file` naming the path, or `.invalidPEM` naming it if it is not a key.
    public static func readPrivateKey(at path: String) throws -> PrivateKeyPEM {
        let key = try read(at: path, secret: true) { descriptor, size in
            try PrivateKeyPEM(count: size) { buffer in try readAll(descriptor, into: buffer, path: path) }
        }
        _ = try PEMCodec.privateKey(key, what: "private key in \(path)")
        return key
    }

    /// Reads a certificate (or CA bundle) file, checking that it holds at least one certificate.
    public static func readCertificate(at path: String) throws -> String {
        let text = try readPublic(at: path)
        _ = try PEMCodec.certificates(text, what: "certificate in \(path)")
        return text
    }

    /// Reads a certificate signing request file, checking that it parses.
    public static func readRequest(at path: String) throws -> String {
        let text = try readPublic(at: path)
        do {
            _ = try PEMCodec.request(text)
        } catch TransportError.invalidPEM(_, let reason) {
            throw TransportError.invalidPEM(what: "certificate signing request in \(path)", reason: reason)
        }
        return text
    }

    private static func readPublic(at path: String) throws -> String {
        try read(at: path, secret: false) { descriptor, size in
            var bytes = [UInt8](repeating: 0, count: size)
            try bytes.withUnsafeMutableBytes { try readAll(descriptor, into: $0, path: path) }
            guard let text = String(validating: bytes, as: UTF8.self) else {
                throw TransportError.invalidPEM(what: "file \(path)", reason: "not UTF-8 text")
            }
            return text
        }
    }

    // MARK: System calls

    private static func failure(_ operation: String, _ path: String, _ code: Int32 = errno) -> TransportError {
        .file(path: path, operation: operation, reason: String(cString: strerror(code)))
    }

    private static func read<T>(at path: String, secret: Bool, _ body: (Int32, Int) throws -> T) throws -> T {
        let descriptor = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        guard descriptor >= 0 else { throw failure("open", path) }
        defer { close(descriptor) }
        var status = stat()
        guard fstat(descriptor, &status) == 0 else { throw failure("fstat", path) }
        let mode = UInt32(status.st_mode)
        guard mode & UInt32(S_IFMT) == UInt32(S_IFREG) else {
            throw TransportError.file(path: path, operation: "read", reason: "not a regular file")
        }
        if secret && mode & 0o077 != 0 {
            throw TransportError.file(
                path: path, operation: "read private key",
                reason: "mode \(String(mode & 0o777, radix: 8)) lets group or others access it (expected 600)")
        }
        let size = Int(status.st_size)
        guard size > 0, size <= maximumFileBytes else {
            throw TransportError.file(path: path, operation: "read",
                                      reason: "size \(size) bytes is outside 1...\(maximumFileBytes)")
        }
        return try body(descriptor, size)
    }

    private static func readAll(_ descriptor: Int32, into buffer: UnsafeMutableRawBufferPointer, path: String) throws {
        guard let base = buffer.baseAddress else { return }
        var done = 0
        while done < buffer.count {
            let n = SystemCall.read(descriptor, base + done, buffer.count - done)
            if n < 0 && errno == EINTR { continue }
            guard n >= 0 else { throw failure("read", path) }
            guard n > 0 else {
                throw TransportError.file(path: path, operation: "read",
                                          reason: "file shrank to \(done) bytes while being read")
            }
            done += n
        }
    }

    private static func write(_ bytes: UnsafeRawBufferPointer, to path: String, mode: mode_t,
                              replacingExisting: Bool) throws
    {
        do {
            try writeFileAtomically(bytes, toPath: path, permissions: mode, replacingExisting: replacingExisting)
        } catch let error as SystemIOError {
            throw TransportError.file(path: error.path, operation: error.systemCall?.operation ?? "write",
                                      reason: error.systemCall?.message ?? error.reason)
        }
    }
}
