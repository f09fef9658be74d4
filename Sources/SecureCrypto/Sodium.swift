import CSodium

/// The libsodium library, initialised once before any primitive is used.
public enum Sodium {
    /// Initialises libsodium (idempotent, thread-safe); returns the library's version string.
    @discardableResult
    public static func initialize() -> String {
        precondition(sodium_init() >= 0, "libsodium failed to initialise")
        return String(cString: sodium_version_string())
    }
}
