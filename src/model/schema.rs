//! JSON Schemas of the document kinds, generated from the Rust types so that they never drift from what railyard
//! accepts.

use schemars::{JsonSchema, schema_for};

use super::kinds::{App, Domain, Job, Kind, Project, ScalingRule};

/// The schema of one kind, as pretty JSON with a trailing newline.
pub fn schema_json(kind: Kind) -> String {
    let schema = match kind {
        Kind::Project => generate::<Project>(),
        Kind::App => generate::<App>(),
        Kind::Domain => generate::<Domain>(),
        Kind::ScalingRule => generate::<ScalingRule>(),
        Kind::Job => generate::<Job>(),
    };
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}

fn generate<T: JsonSchema>() -> serde_json::Value {
    serde_json::to_value(schema_for!(T)).unwrap_or_default()
}

/// The file name of a kind's schema under `schemas/`.
pub fn file_name(kind: Kind) -> String {
    let stem: String = kind
        .as_str()
        .chars()
        .enumerate()
        .flat_map(|(index, c)| {
            let dash = (index > 0 && c.is_ascii_uppercase()).then_some('-');
            dash.into_iter().chain([c.to_ascii_lowercase()])
        })
        .collect();
    format!("{stem}.schema.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_kebab_case() {
        assert_eq!(file_name(Kind::ScalingRule), "scaling-rule.schema.json");
        assert_eq!(file_name(Kind::App), "app.schema.json");
    }
}
