//! Which values are secret, and how they are shown instead: a short digest that reveals a change but not the value.

use sha2::{Digest, Sha256};

const SENSITIVE_WORDS: [&str; 10] =
    ["PASSWORD", "PASSWD", "SECRET", "TOKEN", "CREDENTIAL", "PRIVATE", "APIKEY", "API_KEY", "ACCESS_KEY", "AUTH"];

/// True for environment variable names that by convention hold secrets (`DB_PASSWORD`, `GITHUB_TOKEN`, `*_KEY`).
pub fn is_sensitive_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    SENSITIVE_WORDS.iter().any(|word| upper.contains(word)) || upper == "KEY" || upper.ends_with("_KEY")
}

/// A short, stable digest of a secret value, so diffs show that it changed without showing it.
pub fn digest(value: &str) -> String {
    let hash = Sha256::digest(value.as_bytes());
    format!("sha256:{}", &hex::encode(hash)[..16])
}

/// The text shown in place of a secret value.
pub fn redacted(value: &str) -> String {
    format!("<redacted {}>", digest(value))
}

/// A URL with its password replaced (`postgres://app:<redacted>@db/app`); other text unchanged.
pub fn redact_url_password(value: &str) -> Option<String> {
    let (scheme, rest) = value.split_once("://")?;
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (userinfo, host) = rest[..authority_end].rsplit_once('@')?;
    let (user, password) = userinfo.split_once(':')?;
    Some(format!("{scheme}://{user}:{}@{host}{}", redacted(password), &rest[authority_end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_hold_secrets() {
        for name in
            ["DB_PASSWORD", "github_token", "STRIPE_SECRET", "SSH_PRIVATE_KEY", "API_KEY", "KEY", "AWS_ACCESS_KEY_ID"]
        {
            assert!(is_sensitive_name(name), "{name}");
        }
        for name in ["LOG_LEVEL", "PORT", "KEYBOARD_LAYOUT", "MONKEYS"] {
            assert!(!is_sensitive_name(name), "{name}");
        }
    }

    #[test]
    fn urls_keep_everything_but_the_password() {
        let shown = redact_url_password("postgres://app:hunter2@db:5432/shop").unwrap_or_default();
        assert!(shown.starts_with("postgres://app:<redacted sha256:"), "{shown}");
        assert!(shown.ends_with("@db:5432/shop"), "{shown}");
        assert!(!shown.contains("hunter2"));
        assert_eq!(redact_url_password("https://example.com/a"), None);
    }

    #[test]
    fn digest_changes_with_the_value() {
        assert_ne!(digest("a"), digest("b"));
        assert_eq!(digest("a"), digest("a"));
    }
}
