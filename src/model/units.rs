//! Durations (`2s`, `72h`, `1h30m`), memory quantities (`256Mi`, `1G`) and CPU amounts (`0.5`, `500m`), and the
//! shapes of names: DNS labels, host names, secret names, environment variables, git branches.

use std::time::Duration;

/// The longest duration accepted anywhere: a year, far beyond any sensible timeout or TTL, and far from the overflows
/// of clocks and nanosecond counters.
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);

/// Parses a duration written as a number followed by a unit (`ms`, `s`, `m`, `h`, `d`), parts concatenated.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() || trimmed.starts_with(|c: char| !c.is_ascii_digit()) {
        return Err(format!("`{text}` is not a duration; write a number and a unit, e.g. `2s`, `500ms`, `72h`"));
    }
    let duration = humantime::parse_duration(trimmed)
        .map_err(|_| format!("`{text}` is not a duration; write a number and a unit, e.g. `2s`, `500ms`, `72h`"))?;
    if duration > MAX_DURATION {
        return Err(format!("`{text}` is longer than the limit of 366d; use a shorter duration"));
    }
    Ok(duration)
}

/// The most memory an app may ask for: 1 PiB.
pub const MAX_MEMORY_BYTES: u64 = 1 << 50;
/// The most CPU an app may ask for, in millicores: 1024 CPUs.
pub const MAX_CPU_MILLIS: u64 = 1024 * 1000;

/// Parses a memory amount into bytes: a plain number of bytes, or a number with a binary (`Ki`, `Mi`, `Gi`, `Ti`)
/// or decimal (`k`, `M`, `G`, `T`) suffix, as Kubernetes writes them.
pub fn parse_memory(text: &str) -> Result<u64, String> {
    const UNITS: [(&str, u64); 8] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
    ];
    let invalid = || format!("`{text}` is not a memory amount; write e.g. `256Mi`, `1Gi`, `512M` or a number of bytes");
    let trimmed = text.trim();
    let (number, factor) = UNITS
        .iter()
        .find_map(|(suffix, factor)| trimmed.strip_suffix(suffix).map(|number| (number, *factor)))
        .unwrap_or((trimmed, 1));
    let value: u64 = number.parse().map_err(|_| invalid())?;
    let bytes = value.checked_mul(factor).ok_or_else(invalid)?;
    if bytes > MAX_MEMORY_BYTES {
        return Err(format!("`{text}` is over the limit of 1Pi; use a smaller amount"));
    }
    if bytes < 4 * (1 << 20) {
        return Err(format!("`{text}` is below the 4Mi that a container needs at least; raise it"));
    }
    Ok(bytes)
}

/// Parses a CPU amount into millicores: a decimal number of CPUs (`"0.5"`, `"2"`) or millicores (`"500m"`).
pub fn parse_cpus(text: &str) -> Result<u64, String> {
    let invalid =
        || format!("`{text}` is not a CPU amount; write a number of CPUs like `0.5` or millicores like `500m`");
    let over_limit = || format!("`{text}` is over the limit of 1024 CPUs; use at most `1024` or `1024000m`");
    let trimmed = text.trim();
    let millis = if let Some(millis) = trimmed.strip_suffix('m') {
        millis.parse::<u64>().map_err(|_| invalid())?
    } else {
        let cpus: f64 = trimmed.parse().map_err(|_| invalid())?;
        if cpus.is_nan() || cpus < 0.0 || cpus.is_infinite() {
            return Err(invalid());
        }
        if cpus > MAX_CPU_MILLIS as f64 / 1000.0 {
            return Err(over_limit());
        }
        (cpus * 1000.0).round() as u64
    };
    if millis == 0 {
        return Err(format!("`{text}` gives the app no CPU at all; use at least `1m`"));
    }
    if millis > MAX_CPU_MILLIS {
        return Err(over_limit());
    }
    Ok(millis)
}

/// True for an RFC 1123 DNS label: 1-63 lowercase letters, digits and `-`, starting and ending alphanumeric.
pub fn is_dns_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
}

/// True for a host name made of DNS labels, optionally starting with one `*.` wildcard label.
pub fn is_host_name(host: &str) -> bool {
    let rest = host.strip_prefix("*.").unwrap_or(host);
    rest.len() <= 253 && rest.contains('.') && rest.split('.').all(is_dns_label)
}

/// Why `name` cannot be a git branch name, or `None` when it can: the common rules of
/// `git check-ref-format --branch` (no spaces or control characters, no `..`, no `~^:?*[\\`, no leading `-` or `/`,
/// no `//` or `@{`, not ending in `.lock` or `/`).
pub fn git_branch_problem(name: &str) -> Option<&'static str> {
    let forbidden = |c: char| c.is_whitespace() || c.is_control() || "~^:?*[\\".contains(c);
    if name.is_empty() {
        Some("it is empty")
    } else if name.chars().any(forbidden) {
        Some("it holds a space, a control character or one of `~^:?*[\\`")
    } else if name.contains("..") {
        Some("it holds `..`")
    } else if name.starts_with('-') {
        Some("it starts with `-`")
    } else if name.starts_with('/') || name.ends_with('/') || name.contains("//") {
        Some("it starts or ends with `/` or holds `//`")
    } else if name.ends_with(".lock") {
        Some("it ends with `.lock`")
    } else if name.contains("@{") || name == "@" {
        Some("it holds `@{` or is `@`")
    } else if name.split('/').any(|part| part.starts_with('.')) {
        Some("a part of it starts with `.`")
    } else {
        None
    }
}

/// The longest secret name.
pub const MAX_SECRET_NAME: usize = 64;

/// True for a secret name: `[a-z0-9]([a-z0-9._-]{0,62}[a-z0-9])?` without `..`, so that it names a file directly
/// inside the secrets directory and nothing else.
pub fn is_secret_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let inner = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b".-_".contains(b);
    !bytes.is_empty()
        && bytes.len() <= MAX_SECRET_NAME
        && bytes.iter().all(inner)
        && bytes.first().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && bytes.last().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && !name.contains("..")
}

/// True for a POSIX-style environment variable name.
pub fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("72h"), Ok(Duration::from_secs(72 * 3600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        for bad in ["", "2", "two seconds", "-1s", "2 parsecs", "s", "367d", "99999999999999999h"] {
            assert!(parse_duration(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn memory() {
        assert_eq!(parse_memory("256Mi"), Ok(256 << 20));
        assert_eq!(parse_memory("1Gi"), Ok(1 << 30));
        assert_eq!(parse_memory("512M"), Ok(512_000_000));
        assert_eq!(parse_memory("104857600"), Ok(104_857_600));
        for bad in ["", "256MB", "lots", "-1Mi", "1Mi", "99999999999999Ti"] {
            assert!(parse_memory(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn cpus() {
        assert_eq!(parse_cpus("0.5"), Ok(500));
        assert_eq!(parse_cpus("2"), Ok(2000));
        assert_eq!(parse_cpus("250m"), Ok(250));
        for bad in ["", "0", "half", "-1", "NaN", "inf", "0m", "1.5m", "18446744073709551615m", "1024001m", "2000"] {
            assert!(parse_cpus(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn names() {
        assert!(is_dns_label("web-1"));
        for bad in ["", "Web", "-web", "web-", "we_b", &"a".repeat(64)] {
            assert!(!is_dns_label(bad), "{bad} accepted");
        }
        assert!(is_host_name("shop.example.com"));
        assert!(is_host_name("*.preview.example.com"));
        assert!(!is_host_name("localhost"));
        assert!(!is_host_name("shop..example.com"));
        assert!(!is_host_name("Shop.example.com"));
        for good in ["db-password", "a", "api.token_2", &"a".repeat(64)] {
            assert!(is_secret_name(good), "{good} refused");
        }
        for bad in ["", "../../etc/shadow", "a/b", "a..b", ".hidden", "Upper", "x-", &"a".repeat(65), "a b"] {
            assert!(!is_secret_name(bad), "{bad} accepted");
        }
        for good in ["main", "staging", "release/2.0", "feature/x-1_y", "v1.2"] {
            assert_eq!(git_branch_problem(good), None, "{good} refused");
        }
        for bad in [
            "", "a b", "a..b", "-main", "a~1", "a^", "a:b", "a?", "a*", "a[b", "a\\b", "x.lock", "x/", "/x", "a//b",
            "a@{1}", "@", ".hidden", "a/.b", "tab\t",
        ] {
            assert!(git_branch_problem(bad).is_some(), "{bad:?} accepted");
        }
        assert!(is_env_name("LOG_LEVEL"));
        assert!(!is_env_name("1X"));
        assert!(!is_env_name("A-B"));
    }
}
