//! Unified diffs between the canonical YAML of the last applied and the desired spec of an object, and the list of
//! the fields that differ. Callers pass redacted specs: nothing secret reaches a diff.

use serde::Serialize;
use serde_json::Value;
use similar::TextDiff;

use super::ObjectKind;

/// Canonical YAML of a spec; an absent object is the empty text.
pub fn canonical_yaml<S: Serialize>(spec: Option<&S>) -> String {
    spec.map(|spec| serde_saphyr::to_string(spec).unwrap_or_default()).unwrap_or_default()
}

/// A unified diff from `old` to `new`, headed `live/<kind>/<name>` and `git/<kind>/<name>` as `kubectl diff` does.
pub fn unified<S: Serialize>(kind: ObjectKind, name: &str, old: Option<&S>, new: Option<&S>) -> String {
    let old_text = canonical_yaml(old);
    let new_text = canonical_yaml(new);
    let (live, git) = (format!("live/{kind}/{name}"), format!("git/{kind}/{name}"));
    match (old_text.is_empty(), new_text.is_empty()) {
        // A create or a delete is every line added or removed: written out directly, the line diff's work for
        // nothing was a tenth of planning 10,000 new apps.
        (true, false) => one_sided(&live, &git, &new_text, '+'),
        (false, true) => one_sided(&live, &git, &old_text, '-'),
        _ => {
            TextDiff::from_lines(&old_text, &new_text).unified_diff().context_radius(3).header(&live, &git).to_string()
        }
    }
}

/// The unified diff of `text` against nothing, as the line diff writes it: one hunk of every line with `sign`.
fn one_sided(live: &str, git: &str, text: &str, sign: char) -> String {
    use std::fmt::Write;
    let lines = text.lines().count();
    let range = if lines == 1 { "1".to_owned() } else { format!("1,{lines}") };
    let hunk = if sign == '+' { format!("-0,0 +{range}") } else { format!("-{range} +0,0") };
    let mut diff = String::with_capacity(text.len() + lines + live.len() + git.len() + 32);
    let _ = writeln!(diff, "--- {live}\n+++ {git}\n@@ {hunk} @@");
    for line in text.lines() {
        diff.push(sign);
        diff.push_str(line);
        diff.push('\n');
    }
    diff
}

/// Dotted paths of the fields that differ, e.g. `image`, `env.LOG_LEVEL`, `replicas`. The `container.` level is left
/// out of the names because users write those fields at the top of an App.
pub fn changed_fields<S: Serialize>(old: &S, new: &S) -> Vec<String> {
    let old = serde_json::to_value(old).unwrap_or_default();
    let new = serde_json::to_value(new).unwrap_or_default();
    let mut paths = Vec::new();
    collect_changes(&old, &new, "", &mut paths);
    paths
}

fn collect_changes(old: &Value, new: &Value, prefix: &str, paths: &mut Vec<String>) {
    match (old, new) {
        (Value::Object(old_fields), Value::Object(new_fields)) if prefix_depth(prefix) < 2 => {
            let mut keys: Vec<&String> = old_fields.keys().chain(new_fields.keys()).collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                let path = match prefix {
                    "" | "container" => key.clone(),
                    _ => format!("{prefix}.{key}"),
                };
                let nested_prefix = if prefix.is_empty() { key.clone() } else { path.clone() };
                match (old_fields.get(key), new_fields.get(key)) {
                    (Some(a), Some(b)) if a == b => {}
                    (Some(a), Some(b)) if a.is_object() && b.is_object() => {
                        collect_changes(a, b, &nested_prefix, paths)
                    }
                    _ => paths.push(path),
                }
            }
        }
        _ if old != new => paths.push(prefix.to_owned()),
        _ => {}
    }
}

fn prefix_depth(prefix: &str) -> usize {
    if prefix.is_empty() { 0 } else { prefix.split('.').count() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line_diff(old: &str, new: &str) -> String {
        TextDiff::from_lines(old, new).unified_diff().context_radius(3).header("live/App/a", "git/App/a").to_string()
    }

    #[test]
    fn a_create_or_delete_is_written_as_the_line_diff_writes_it() {
        for text in ["one: 1\n", "one: 1\ntwo: 2\n", "name: web\nreplicas: 1\ncontainer:\n  image: x\n"] {
            assert_eq!(one_sided("live/App/a", "git/App/a", text, '+'), line_diff("", text), "create of {text:?}");
            assert_eq!(one_sided("live/App/a", "git/App/a", text, '-'), line_diff(text, ""), "delete of {text:?}");
        }
    }
}
