/// One flag a command accepts, and the property of the command it fills.
///
/// A command lists its options as data (`static var options`), so the parser knows every name before it
/// reads any: a misspelt flag is reported as unknown, with the nearest name, rather than as a missing one.
public struct Option<Command> {
    /// The flag as typed, `--model`.
    public let name: String
    /// Whether a value follows (`--name value` or `--name=value`); false for a boolean flag.
    public let takesValue: Bool
    /// Removes the option from the arguments and stores its value in the command.
    let read: (inout Arguments, inout Command) throws -> Void

    /// A boolean flag: true when present.
    public static func flag(_ name: String, _ property: WritableKeyPath<Command, Bool>) -> Self {
        Self(name: name, takesValue: false) { arguments, command in
            if arguments.flag(name) { command[keyPath: property] = true }
        }
    }

    /// An option that must be given; the error names it ("missing --model") when it is not.
    public static func required<Value>(_ name: String, _ value: ValueParser<Value>,
                                       _ property: WritableKeyPath<Command, Value>) -> Self {
        Self(name: name, takesValue: true) { arguments, command in
            guard let parsed = try value.read(&arguments, name) else { throw UsageError("missing \(name)") }
            command[keyPath: property] = parsed
        }
    }

    /// An optional value; when absent the property keeps its initial value, which is the default.
    public static func option<Value>(_ name: String, _ value: ValueParser<Value>,
                                     _ property: WritableKeyPath<Command, Value>) -> Self {
        Self(name: name, takesValue: true) { arguments, command in
            if let parsed = try value.read(&arguments, name) { command[keyPath: property] = parsed }
        }
    }

    /// An optional value with no default: nil when absent.
    public static func option<Value>(_ name: String, _ value: ValueParser<Value>,
                                     _ property: WritableKeyPath<Command, Value?>) -> Self {
        Self(name: name, takesValue: true) { arguments, command in
            command[keyPath: property] = try value.read(&arguments, name)
        }
    }

    /// A required text value.
    public static func required(_ name: String, _ property: WritableKeyPath<Command, String>) -> Self {
        required(name, .string, property)
    }

    /// An optional text value, nil when absent.
    public static func option(_ name: String, _ property: WritableKeyPath<Command, String?>) -> Self {
        option(name, .string, property)
    }
}

/// How an option's text becomes a typed value; every failure is a `UsageError` that names the flag.
public struct ValueParser<Value> {
    /// Removes `name` (and its value) from the arguments; nil when the option is absent.
    let read: (inout Arguments, String) throws -> Value?

    /// A value made from the option's text by `transform`, which throws a `UsageError` for bad text.
    public static func converted(_ transform: @escaping (String) throws -> Value) -> Self {
        Self { arguments, name in try arguments.option(name).map(transform) }
    }
}

extension ValueParser where Value == String {
    /// The text as given.
    public static var string: Self { Self { arguments, name in try arguments.option(name) } }

    /// One of `choices`; the error lists them.
    public static func oneOf(_ choices: [String]) -> Self {
        Self { arguments, name in try arguments.choice(name, among: choices) }
    }
}

extension ValueParser where Value == Int {
    /// An integer within `range`.
    public static func int(in range: ClosedRange<Int> = Int.min...Int.max) -> Self {
        Self { arguments, name in try arguments.int(name, in: range) }
    }
}

extension ValueParser where Value == Double {
    /// A finite number within `range`.
    public static func double(in range: ClosedRange<Double>) -> Self {
        Self { arguments, name in try arguments.double(name, in: range) }
    }
}

extension ValueParser where Value == UInt64 {
    /// A non-negative 64-bit integer, as seeds are.
    public static var unsigned: Self { Self { arguments, name in try arguments.unsigned(name) } }
}

extension ValueParser where Value == Bool {
    /// `on` or `off`.
    public static var onOff: Self {
        Self { arguments, name in try arguments.choice(name, among: ["on", "off"]).map { $0 == "on" } }
    }
}

extension ValueParser where Value: CaseIterable & RawRepresentable, Value.RawValue == String {
    /// One of the enumeration's raw values, listed in the error in declaration order.
    public static var choice: Self {
        Self { arguments, name in
            try arguments.choice(name, among: Value.allCases.map(\.rawValue)).flatMap(Value.init(rawValue:))
        }
    }
}
