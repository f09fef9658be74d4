/// The release both executables report with `--version`; change it here, once, for a release.
public enum ConclaveVersion {
    public static let number = "0.1.0"
}
