//! Which values are secret, and how they are shown instead: a keyed digest that reveals a change but not the value.
//!
//! Digests are HMAC-SHA256 under a random key of the installation ([`DigestKey`]), so a digest shown on a page or in
//! a label cannot be brute-forced back into a short password by someone who lacks the key.

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Words that mark a variable as secret wherever they appear in its name.
const SENSITIVE_WORDS: [&str; 10] =
    ["PASSWORD", "PASSWD", "SECRET", "TOKEN", "CREDENTIAL", "PRIVATE", "APIKEY", "API_KEY", "ACCESS_KEY", "AUTH"];

/// Words that mark a variable as secret when they are the whole name or its last `_` part (`DB_PASS`, `STRIPE_SK`).
const SENSITIVE_SUFFIXES: [&str; 3] = ["KEY", "PASS", "SK"];

/// The number of bytes of a [`DigestKey`].
pub const DIGEST_KEY_BYTES: usize = 32;

/// Hex characters of a digest that are shown: 128 bits, far beyond brute force even without the key.
const SHOWN_HEX: usize = 32;

/// True for environment variable names that by convention hold secrets (`DB_PASSWORD`, `GITHUB_TOKEN`, `*_KEY`,
/// `*_PASS`, `*_SK`, `*_CREDENTIALS`).
pub fn is_sensitive_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    let last_part = upper.rsplit('_').next().unwrap_or(&upper);
    SENSITIVE_WORDS.iter().any(|word| upper.contains(word)) || SENSITIVE_SUFFIXES.contains(&last_part)
}

/// The per-installation key that digests of secret values are computed with. Its bytes are never shown.
#[derive(Clone, PartialEq, Eq)]
pub struct DigestKey([u8; DIGEST_KEY_BYTES]);

impl DigestKey {
    pub fn from_bytes(bytes: [u8; DIGEST_KEY_BYTES]) -> DigestKey {
        DigestKey(bytes)
    }

    pub fn bytes(&self) -> &[u8; DIGEST_KEY_BYTES] {
        &self.0
    }

    /// A key of its own for `purpose`, derived from this one (HMAC-SHA256 of the purpose): digests under it cannot be
    /// compared with digests under this key.
    pub fn derive(&self, purpose: &str) -> DigestKey {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.0) else { return self.clone() };
        mac.update(purpose.as_bytes());
        let mut bytes = [0; DIGEST_KEY_BYTES];
        bytes.copy_from_slice(&mac.finalize().into_bytes());
        DigestKey(bytes)
    }

    /// A stable digest of a secret value under this key, e.g. `hmac-sha256:4f1c…`, so diffs show that it changed
    /// without showing it.
    pub fn digest(&self, value: &str) -> String {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.0) else { return format!("{DIGEST_PREFIX}?") };
        mac.update(value.as_bytes());
        let hex = hex::encode(mac.finalize().into_bytes());
        format!("{DIGEST_PREFIX}{}", &hex[..SHOWN_HEX])
    }
}

impl fmt::Debug for DigestKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DigestKey(<hidden>)")
    }
}

/// The text shown in place of a secret value: `<redacted hmac-sha256:…>`, or `<redacted>` before a digest is known.
pub fn redacted(digest: Option<&str>) -> String {
    match digest {
        Some(digest) => format!("<redacted {digest}>"),
        None => "<redacted>".to_owned(),
    }
}

/// The prefix of every digest shown.
const DIGEST_PREFIX: &str = "hmac-sha256:";

/// `text` with every digest (`hmac-sha256:` and its hex) taken out, and `<redacted hmac-sha256:…>` shown as
/// `<redacted>`: for what a pull request may see, which must not become an oracle for guessing values.
pub fn strip_digests(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(DIGEST_PREFIX) {
        let (before, from) = rest.split_at(at);
        let hex_len = from[DIGEST_PREFIX.len()..].bytes().take_while(u8::is_ascii_hexdigit).count();
        let after = &from[DIGEST_PREFIX.len() + hex_len..];
        match before.strip_suffix("<redacted ") {
            // `<redacted hmac-sha256:…>` keeps its brackets: `after` starts with the `>`.
            Some(kept) => {
                out.push_str(kept);
                out.push_str("<redacted");
            }
            None => {
                out.push_str(before);
                out.push_str("<redacted>");
            }
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

/// Where the userinfo (`user:password@`, or `user@`) of a URL sits in `value`, as a byte range; `None` for text
/// that is not a URL with userinfo.
pub fn url_userinfo(value: &str) -> Option<std::ops::Range<usize>> {
    let scheme_end = value.find("://")?;
    let scheme = &value[..scheme_end];
    if scheme.is_empty() || !scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) {
        return None;
    }
    let start = scheme_end + 3;
    let rest = &value[start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let at = rest[..authority_end].rfind('@')?;
    (at > 0).then_some(start..start + at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_hold_secrets() {
        for name in [
            "DB_PASSWORD",
            "github_token",
            "STRIPE_SECRET",
            "SSH_PRIVATE_KEY",
            "API_KEY",
            "KEY",
            "AWS_ACCESS_KEY_ID",
            "DB_PASS",
            "SMTP_PASSWD",
            "STRIPE_SK",
            "GOOGLE_CREDENTIALS",
            "SIGNING_KEY",
            "PASS",
        ] {
            assert!(is_sensitive_name(name), "{name}");
        }
        for name in ["LOG_LEVEL", "PORT", "KEYBOARD_LAYOUT", "MONKEYS", "PASSENGER_COUNT", "TASK"] {
            assert!(!is_sensitive_name(name), "{name}");
        }
    }

    #[test]
    fn userinfo_of_urls() {
        let value = "postgres://app:hunter2@db:5432/shop";
        assert_eq!(url_userinfo(value).map(|range| &value[range]), Some("app:hunter2"));
        let value = "https://token@github.com/acme/repo.git";
        assert_eq!(url_userinfo(value).map(|range| &value[range]), Some("token"));
        for plain in ["https://example.com/a", "https://example.com/a@b", "not a url", "mailto:a@b", "://x@y"] {
            assert_eq!(url_userinfo(plain), None, "{plain}");
        }
    }

    #[test]
    fn digests_are_stripped_from_what_a_pull_request_sees() {
        let key = DigestKey::from_bytes([7; DIGEST_KEY_BYTES]);
        let shown = format!(
            "A: {}\nB: postgres://{}@db/x\ndigest: {}\n",
            redacted(Some(&key.digest("a"))),
            redacted(Some(&key.digest("b"))),
            key.digest("c")
        );
        let stripped = strip_digests(&shown);
        assert_eq!(stripped, "A: <redacted>\nB: postgres://<redacted>@db/x\ndigest: <redacted>\n");
        assert!(!stripped.contains("hmac"));
        assert_eq!(strip_digests("no digest here"), "no digest here");
    }

    #[test]
    fn derived_keys_digest_apart() {
        let key = DigestKey::from_bytes([7; DIGEST_KEY_BYTES]);
        let previews = key.derive("previews");
        assert_ne!(key.digest("a"), previews.digest("a"));
        assert_eq!(previews, key.derive("previews"), "the same purpose derives the same key");
        assert_ne!(previews, key.derive("other"));
    }

    #[test]
    fn digests_are_keyed_and_stable() {
        let key = DigestKey::from_bytes([7; DIGEST_KEY_BYTES]);
        let other = DigestKey::from_bytes([8; DIGEST_KEY_BYTES]);
        assert_ne!(key.digest("a"), key.digest("b"));
        assert_eq!(key.digest("a"), key.digest("a"));
        assert_ne!(key.digest("a"), other.digest("a"), "the key must change the digest");
        assert!(key.digest("a").starts_with("hmac-sha256:"));
        assert!(!format!("{key:?}").contains('7'));
    }
}
