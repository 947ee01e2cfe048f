//! A container's environment as the engine or the cluster gets it, and the secret values in it that no message, log
//! or output shown may hold: every backend redacts what a container printed (a failed replica's last lines, a Job's
//! output) with it.

use crate::model::desired::EnvSpec;
use crate::secrets::ResolvedSecrets;

/// A container's environment as it gets it, and the secret values in it, which no message may show.
#[derive(Debug, Clone, Default)]
pub struct ResolvedEnv {
    /// `NAME=value` pairs, secrets included.
    pub pairs: Vec<String>,
    /// Longest first, so that a secret containing another is replaced whole.
    secret_values: Vec<String>,
}

impl ResolvedEnv {
    /// Resolves every variable of `spec`; `secret` reads secret references. Values of secret references, of
    /// variables whose names look sensitive and the passwords in URLs are secret.
    pub fn resolve<E>(
        container: &crate::model::ContainerSpec,
        secret: impl Fn(&str) -> Result<String, E>,
    ) -> Result<ResolvedEnv, E> {
        let mut resolved = ResolvedEnv::default();
        for (name, value) in &container.env {
            let text = value.container_value(&secret)?;
            match value {
                EnvSpec::Value(_) => {}
                EnvSpec::Sensitive(sensitive) => {
                    let hidden = sensitive.hidden_part();
                    resolved.secret_values.push(hidden.to_owned());
                    // A URL's password may be printed on its own, without the user before it.
                    resolved.secret_values.extend(hidden.split_once(':').map(|(_, password)| password.to_owned()));
                }
                EnvSpec::Secret { .. } => resolved.secret_values.push(text.clone()),
            }
            resolved.pairs.push(format!("{name}={text}"));
        }
        resolved.secret_values.retain(|value| !value.is_empty());
        let lines: Vec<String> = resolved.secret_values.iter().flat_map(|value| printed_lines(value)).collect();
        resolved.secret_values.extend(lines);
        let encoded: Vec<String> = resolved.secret_values.iter().flat_map(|value| encoded_forms(value)).collect();
        resolved.secret_values.extend(encoded);
        resolved.secret_values.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        resolved.secret_values.dedup();
        Ok(resolved)
    }

    /// `text` with every secret value of the environment replaced by `<redacted>`.
    pub fn redact(&self, text: &str) -> String {
        self.secret_values.iter().fold(text.to_owned(), |text, secret| text.replace(secret.as_str(), "<redacted>"))
    }

    /// `text` (already redacted) with an end that is the start of a secret value replaced by `<redacted>`: for the
    /// start of a line whose rest was not read.
    pub fn redact_cut_end(&self, mut text: String) -> String {
        let longest_start = self
            .secret_values
            .iter()
            .filter_map(|secret| {
                (1..secret.len())
                    .rev()
                    .filter(|end| secret.is_char_boundary(*end))
                    .find(|end| text.ends_with(&secret[..*end]))
            })
            .max();
        if let Some(start_len) = longest_start {
            text.truncate(text.len() - start_len);
            text.push_str("<redacted>");
        }
        text
    }
}

/// Shortest line of a multi-line secret that is hidden on its own: shorter ones (an empty line, a closing brace)
/// would hide ordinary words everywhere.
const SECRET_LINE_MIN_BYTES: usize = 8;

/// The lines of a multi-line secret (a PEM key, a JSON credential) long enough to hide on their own: an app's output
/// is read line by line, so the whole value never appears in one line.
fn printed_lines(value: &str) -> Vec<String> {
    if !value.contains(['\n', '\r']) {
        return Vec::new();
    }
    value
        .split('\n')
        .map(|line| line.trim_end_matches('\r'))
        .filter(|line| line.len() >= SECRET_LINE_MIN_BYTES)
        .map(str::to_owned)
        .collect()
}

/// Every byte but RFC 3986's unreserved characters, which percent-encoding leaves as they are.
const NOT_UNRESERVED: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// The forms a secret value is printed in to slip past exact-value redaction: base64 (standard and URL-safe, with
/// or without the newline `echo` adds; without padding, which then stays as `==`), and percent-encoding.
fn encoded_forms(value: &str) -> Vec<String> {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    let with_newline = format!("{value}\n");
    let mut forms: Vec<String> = [value, with_newline.as_str()]
        .into_iter()
        .flat_map(|text| [STANDARD_NO_PAD.encode(text), URL_SAFE_NO_PAD.encode(text)])
        .collect();
    forms.push(percent_encoding::utf8_percent_encode(value, NOT_UNRESERVED).to_string());
    forms.retain(|form| form != value);
    forms
}

impl ResolvedEnv {
    /// What hides the secret values of `container` in text it printed; a secret `secrets` lacks has nothing to hide.
    pub fn redactor(container: &crate::model::ContainerSpec, secrets: &ResolvedSecrets) -> ResolvedEnv {
        let lenient = |name: &str| Ok::<_, std::convert::Infallible>(secrets.get(name).unwrap_or_default());
        match ResolvedEnv::resolve(container, lenient) {
            Ok(resolved) => resolved,
            Err(never) => match never {},
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::AppSpec;

    fn app_with_env(env: &[(&str, EnvSpec)]) -> AppSpec {
        let mut app = AppSpec::bare("web");
        app.container.env = env.iter().map(|(name, value)| ((*name).to_owned(), value.clone())).collect();
        app
    }

    #[test]
    fn every_secret_value_of_the_environment_is_redacted_from_messages() {
        let spec = app_with_env(&[
            ("DB", EnvSpec::Secret { secret: "db".into(), digest: None }),
            ("API_TOKEN", EnvSpec::literal("API_TOKEN", "inline-token".into())),
            ("DATABASE_URL", EnvSpec::literal("DATABASE_URL", "postgres://app:url-pass@db/app".into())),
            ("GREETING", EnvSpec::Value("hello".into())),
        ]);
        let env =
            ResolvedEnv::resolve(&spec.container, |name| Ok::<_, ()>(format!("{name}-from-store"))).expect("resolves");
        assert!(env.pairs.contains(&"DB=db-from-store".to_owned()), "{:?}", env.pairs);
        let message = "printed db-from-store, inline-token and url-pass; hello";
        assert_eq!(env.redact(message), "printed <redacted>, <redacted> and <redacted>; hello");
    }

    #[test]
    fn encoded_forms_of_a_secret_are_redacted_too() {
        use base64::Engine as _;
        use base64::engine::general_purpose::{STANDARD, URL_SAFE};
        let spec = app_with_env(&[("DB", EnvSpec::Secret { secret: "db".into(), digest: None })]);
        let value = "s3cr3t?&/value+";
        let env = ResolvedEnv::resolve(&spec.container, |_| Ok::<_, ()>(value.to_owned())).expect("resolves");
        for printed in [
            STANDARD.encode(value),
            STANDARD.encode(format!("{value}\n")),
            URL_SAFE.encode(value),
            "s3cr3t%3F%26%2Fvalue%2B".to_owned(),
        ] {
            let redacted = env.redact(&format!("leaked: {printed}"));
            assert!(redacted.starts_with("leaked: <redacted>"), "{printed} -> {redacted}");
            assert!(!redacted.contains(&printed), "{printed} -> {redacted}");
        }
    }

    #[test]
    fn each_line_of_a_multi_line_secret_is_redacted_on_its_own() {
        use base64::Engine as _;
        let spec = app_with_env(&[("KEY", EnvSpec::Secret { secret: "key".into(), digest: None })]);
        let key = "-----BEGIN KEY-----\r\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\r\nBKcwggSjAgEAAoIBAQC7\r\nab\r\n-----END KEY-----\r\n";
        let env = ResolvedEnv::resolve(&spec.container, |_| Ok::<_, ()>(key.to_owned())).expect("resolves");
        assert_eq!(env.redact("MIIEvQIBADANBgkqhkiG9w0BAQEFAASC"), "<redacted>");
        assert_eq!(env.redact("  BKcwggSjAgEAAoIBAQC7 "), "  <redacted> ");
        let encoded = base64::engine::general_purpose::STANDARD.encode("BKcwggSjAgEAAoIBAQC7");
        assert!(env.redact(&encoded).starts_with("<redacted>"), "{encoded}");
        assert_eq!(env.redact("ab"), "ab", "a short line alone would hide ordinary text");
    }

    #[test]
    fn the_start_of_a_secret_at_the_end_of_a_cut_line_is_redacted() {
        let spec = app_with_env(&[("DB", EnvSpec::Secret { secret: "db".into(), digest: None })]);
        let env = ResolvedEnv::resolve(&spec.container, |_| Ok::<_, ()>("hunter22".to_owned())).expect("resolves");
        assert_eq!(env.redact_cut_end("pw hunt".into()), "pw <redacted>");
        assert_eq!(env.redact_cut_end("pw hunted".into()), "pw hunted", "not the start of the secret");
        assert_eq!(env.redact_cut_end("all fine".into()), "all fine");
    }

    #[test]
    fn a_missing_secret_is_the_resolvers_error() {
        let spec = app_with_env(&[("DB", EnvSpec::Secret { secret: "db".into(), digest: None })]);
        assert_eq!(ResolvedEnv::resolve(&spec.container, |_| Err::<String, _>("missing")).err(), Some("missing"));
    }

    #[test]
    fn a_redactor_hides_what_it_knows_and_skips_what_is_missing() {
        let spec = app_with_env(&[
            ("DB", EnvSpec::Secret { secret: "db".into(), digest: None }),
            ("GONE", EnvSpec::Secret { secret: "gone".into(), digest: None }),
        ]);
        let secrets = ResolvedSecrets::from_values([("db".to_owned(), "hunter22".to_owned())].into());
        let redactor = ResolvedEnv::redactor(&spec.container, &secrets);
        assert_eq!(redactor.redact("pw hunter22"), "pw <redacted>");
    }
}
