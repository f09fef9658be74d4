#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import SystemIO

/// The on-disk form of a secret key: 8-byte magic `CNCLVSK1`, one kind byte, the 32-byte secret,
/// then the 32-byte public key (so a corrupt file is caught when the public key is re-derived).
/// Files are created mode 0600 and refused on reading if group or others have any permission.
enum SecretKeyFile {
    enum Kind: UInt8 {
        case ed25519Seed = 1
        case x25519SecretKey = 2
    }

    static let magic = Array("CNCLVSK1".utf8)
    static let secretByteCount = 32
    static let publicByteCount = 32
    static let fileByteCount = 8 + 1 + secretByteCount + publicByteCount

    /// Writes the key file at `path`, mode 0600, through the one durable write: linked into place
    /// (refusing an existing file) or renamed over it (`replacingExisting`).
    static func write(path: String, kind: Kind, secret: SecretBytes, publicKey: [UInt8], replacingExisting: Bool) throws {
        precondition(secret.count == secretByteCount && publicKey.count == publicByteCount)
        let contents = SecretBytes(count: fileByteCount) { out in
            out.copyBytes(from: magic)
            out[8] = kind.rawValue
            secret.withUnsafeBytes { UnsafeMutableRawBufferPointer(rebasing: out[9..<(9 + secretByteCount)]).copyMemory(from: $0) }
            UnsafeMutableRawBufferPointer(rebasing: out[(9 + secretByteCount)...]).copyBytes(from: publicKey)
        }
        do {
            try contents.withUnsafeBytes {
                try writeFileAtomically($0, toPath: path, permissions: 0o600, replacingExisting: replacingExisting)
            }
        } catch let error as SystemIOError {
            throw SecureCryptoError.fileSystem(path: error.path, operation: error.systemCall?.operation ?? error.reason,
                                               errno: error.systemCall?.errno ?? EIO)
        }
    }

    /// Reads and checks the key file at `path`: a regular file, no group/other permission bits,
    /// exactly `fileByteCount` bytes, the magic and the expected kind.
    static func read(path: String, kind: Kind) throws -> (secret: SecretBytes, publicKey: [UInt8]) {
        let descriptor = try systemCall("open", path: path) { open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC) }
        defer { close(descriptor) }
        var status = stat()
        _ = try systemCall("fstat", path: path) { fstat(descriptor, &status) }
        let mode = UInt32(status.st_mode)
        guard mode & UInt32(S_IFMT) == UInt32(S_IFREG) else {
            throw SecureCryptoError.malformedKeyFile(path: path, reason: "not a regular file")
        }
        guard mode & 0o077 == 0 else { throw SecureCryptoError.insecurePermissions(path: path, mode: mode) }
        guard Int(status.st_size) == fileByteCount else {
            throw SecureCryptoError.malformedKeyFile(
                path: path, reason: "size \(status.st_size) bytes, expected \(fileByteCount)")
        }
        let contents = try SecretBytes(count: fileByteCount) { out in
            guard let base = out.baseAddress else { return }
            var filled = 0
            while filled < fileByteCount {
                let n = try systemCall("read", path: path) {
                    Int32(clamping: systemRead(descriptor, base + filled, fileByteCount - filled))
                }
                guard n > 0 else {
                    throw SecureCryptoError.malformedKeyFile(path: path, reason: "file shrank while reading, at byte \(filled)")
                }
                filled += Int(n)
            }
        }
        return try contents.withUnsafeBytes { bytes in
            guard Array(bytes[0..<8]) == magic else {
                throw SecureCryptoError.malformedKeyFile(path: path, reason: "missing magic CNCLVSK1")
            }
            guard bytes[8] == kind.rawValue else {
                throw SecureCryptoError.malformedKeyFile(
                    path: path, reason: "key kind \(bytes[8]), expected \(kind.rawValue) (\(kind))")
            }
            let secret = SecretBytes(copying: UnsafeRawBufferPointer(rebasing: bytes[9..<(9 + secretByteCount)]))
            return (secret, Array(bytes[(9 + secretByteCount)...]))
        }
    }

    /// Runs a system call, retrying on EINTR; a negative result becomes `SecureCryptoError.fileSystem`.
    @discardableResult
    private static func systemCall(_ operation: String, path: String, _ call: () -> Int32) throws -> Int32 {
        while true {
            let result = call()
            if result >= 0 { return result }
            let code = errno
            if code == EINTR { continue }
            throw SecureCryptoError.fileSystem(path: path, operation: operation, errno: code)
        }
    }
}

#if canImport(Glibc)
private let systemRead = Glibc.read
#elseif canImport(Darwin)
private let systemRead = Darwin.read
#endif
