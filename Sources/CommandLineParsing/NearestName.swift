/// The "did you mean" of a usage error: the known name nearest to a misspelt one.
public enum NearestName {
    /// The candidate closest to `name` by edit distance (a swap of two neighbours counts as one edit), or
    /// the only candidate that `name` abbreviates; nil when nothing is near. Leading dashes are ignored, so
    /// `-model` finds `--model`. Ties go to the earlier candidate.
    public static func closest(to name: String, among candidates: [String]) -> String? {
        let typed = Array(name.drop(while: { $0 == "-" }))
        guard !typed.isEmpty else { return nil }
        // About one edit in three characters, at least one and at most three: `nope` is not a misspelt `noise`.
        let limit = min(3, max(1, typed.count / 3))
        var best: (candidate: String, distance: Int)?
        for candidate in candidates {
            let distance = editDistance(typed, Array(candidate.drop(while: { $0 == "-" })))
            if distance <= limit && distance < (best?.distance ?? Int.max) { best = (candidate, distance) }
        }
        if let best { return best.candidate }
        let abbreviated = candidates.filter { $0.drop(while: { $0 == "-" }).starts(with: typed) }
        return typed.count >= 2 && abbreviated.count == 1 ? abbreviated[0] : nil
    }

    /// Optimal string alignment distance: insertions, deletions, substitutions and adjacent swaps.
    static func editDistance(_ a: [Character], _ b: [Character]) -> Int {
        guard !a.isEmpty else { return b.count }
        guard !b.isEmpty else { return a.count }
        // rows[i][j]: the distance between a's first i characters and b's first j.
        var rows = [[Int]](repeating: [Int](repeating: 0, count: b.count + 1), count: a.count + 1)
        for i in 0...a.count { rows[i][0] = i }
        for j in 0...b.count { rows[0][j] = j }
        for i in 1...a.count {
            for j in 1...b.count {
                let substitution = a[i - 1] == b[j - 1] ? 0 : 1
                var distance = min(rows[i - 1][j] + 1, rows[i][j - 1] + 1, rows[i - 1][j - 1] + substitution)
                if i > 1, j > 1, a[i - 1] == b[j - 2], a[i - 2] == b[j - 1] {
                    distance = min(distance, rows[i - 2][j - 2] + 1)
                }
                rows[i][j] = distance
            }
        }
        return rows[a.count][b.count]
    }
}
