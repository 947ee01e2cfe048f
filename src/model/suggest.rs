//! "Did you mean": how far apart two names are, for the suggestions of loading and validation.

/// Levenshtein distance, for suggestions.
pub(super) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous + usize::from(ca != *cb);
            previous = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(previous + 1);
        }
    }
    row[b.len()]
}

/// "did you mean" for a misspelt name, or the list of valid names.
pub fn suggest_name<'a>(wrong: &str, candidates: impl Iterator<Item = &'a String>) -> String {
    let candidates: Vec<&String> = candidates.collect();
    if candidates.is_empty() {
        return "declare it first".to_owned();
    }
    let closest = candidates.iter().min_by_key(|candidate| edit_distance(wrong, candidate));
    match closest {
        Some(best) if edit_distance(wrong, best) <= 2 => format!("did you mean `{best}`?"),
        _ => format!("known: {}", candidates.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ")),
    }
}
