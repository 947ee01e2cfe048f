//! Named API tokens and what each may do. `--api-token-file` holds one token (the whole file, as before: its holder
//! is called `api-token` and may do everything), or `name:token` lines, each optionally limited to environments
//! (`envs=staging,pr-*`) and verbs (`verbs=sync,read`), or is a directory of files named after their token (a
//! Kubernetes Secret mounted as a volume) holding `token [envs=...] [verbs=...]`. A token used outside its scope is
//! refused with what it lacks. Pure: reading the file is the caller's.

use std::collections::BTreeSet;
use std::fmt;

use subtle::ConstantTimeEq;

/// The name the holder of a single-token file (or of `RAILYARD_API_TOKEN`) goes by in the audit trail.
pub const SINGLE_TOKEN_NAME: &str = "api-token";

/// What a request asks to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verb {
    /// Pages, the read API, live events, logs and `/metrics`.
    Read,
    /// Sync now (from the API or the page's button).
    Sync,
    /// Roll back to an earlier commit, and unpin (follow the branch again).
    Rollback,
    /// Start a Job's run.
    Run,
    /// Sync an environment removed from the Project's list, which tears it down.
    Destroy,
}

impl Verb {
    pub const ALL: [Verb; 5] = [Verb::Read, Verb::Sync, Verb::Rollback, Verb::Run, Verb::Destroy];

    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Read => "read",
            Verb::Sync => "sync",
            Verb::Rollback => "rollback",
            Verb::Run => "run",
            Verb::Destroy => "destroy",
        }
    }

    fn parse(word: &str) -> Option<Verb> {
        Verb::ALL.into_iter().find(|verb| verb.as_str() == word)
    }
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One token, its holder's name and its scope.
#[derive(Clone)]
pub struct NamedToken {
    pub name: String,
    secret: String,
    /// Environment name patterns (`*` matches any run of characters); `None`: every environment.
    envs: Option<Vec<String>>,
    /// `None`: every verb.
    verbs: Option<BTreeSet<Verb>>,
}

impl fmt::Debug for NamedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NamedToken")
            .field("name", &self.name)
            .field("envs", &self.envs)
            .field("verbs", &self.verbs)
            .finish()
    }
}

/// Why a known token may not do what it asked; the message names what it lacks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error(
        "the token `{token}` may not {verb}: its verbs are {granted}; add `{verb}` to its verbs= in --api-token-file"
    )]
    Verb { token: String, verb: Verb, granted: String },
    #[error(
        "the token `{token}` may not {verb} environment `{env}`: its environments are {granted}; add it to its envs= in --api-token-file"
    )]
    Environment { token: String, verb: Verb, env: String, granted: String },
    #[error(
        "the token `{token}` may read only environments {granted}, and this is about every environment (a list, an id, the audit trail, /metrics): read it through an environment's own page, or use a token without envs="
    )]
    EveryEnvironment { token: String, granted: String },
}

impl Denied {
    /// The name of the token refused.
    pub fn token(&self) -> &str {
        match self {
            Denied::Verb { token, .. } | Denied::Environment { token, .. } | Denied::EveryEnvironment { token, .. } => {
                token
            }
        }
    }
}

impl NamedToken {
    /// Whether this token may do `verb` (on `env`, when the request names one).
    pub fn allows(&self, verb: Verb, env: Option<&str>) -> Result<(), Denied> {
        if let Some(verbs) = &self.verbs
            && !verbs.contains(&verb)
        {
            let granted = verbs.iter().map(|verb| verb.as_str()).collect::<Vec<_>>().join(", ");
            return Err(Denied::Verb { token: self.name.clone(), verb, granted });
        }
        if let (Some(patterns), Some(env)) = (&self.envs, env)
            && !patterns.iter().any(|pattern| glob_matches(pattern, env))
        {
            let granted = patterns.join(", ");
            return Err(Denied::Environment { token: self.name.clone(), verb, env: env.to_owned(), granted });
        }
        Ok(())
    }

    /// Whether this token may read `env`, or (`everywhere`) what is about every environment, which a token limited to
    /// some environments may not: it would show the others.
    pub fn allows_read(&self, env: Option<&str>, everywhere: bool) -> Result<(), Denied> {
        self.allows(Verb::Read, env)?;
        match &self.envs {
            Some(patterns) if everywhere => {
                Err(Denied::EveryEnvironment { token: self.name.clone(), granted: patterns.join(", ") })
            }
            _ => Ok(()),
        }
    }

    /// What it may do, in words ("everything", "sync, read on staging, pr-*").
    pub fn scope(&self) -> String {
        let verbs = self.verbs.as_ref().map_or_else(
            || "every verb".to_owned(),
            |verbs| verbs.iter().map(|verb| verb.as_str()).collect::<Vec<_>>().join(", "),
        );
        let envs = self.envs.as_ref().map_or_else(|| "every environment".to_owned(), |envs| envs.join(", "));
        format!("{verbs} on {envs}")
    }
}

/// `*` matches any run of characters (none included); everything else matches itself.
fn glob_matches(pattern: &str, name: &str) -> bool {
    let Some((head, rest)) = pattern.split_once('*') else { return pattern == name };
    let Some(mut remaining) = name.strip_prefix(head) else { return false };
    let mut parts: Vec<&str> = rest.split('*').collect();
    let last = parts.pop().unwrap_or_default();
    for part in parts {
        match remaining.find(part) {
            Some(at) => remaining = &remaining[at + part.len()..],
            None => return false,
        }
    }
    remaining.len() >= last.len() && remaining.ends_with(last)
}

/// Every token serve accepts. Empty: the API is read-only.
#[derive(Debug, Clone, Default)]
pub struct ApiTokens {
    tokens: Vec<NamedToken>,
}

/// A token file or directory that cannot be used; the message names the place and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenFileError {
    #[error("{origin}: expected `name:token [envs=a,b*] [verbs=sync,read]`, got a line without `:`")]
    NoName { origin: String },
    #[error(
        "{origin}: the part before `:` is not a token name: a name holds only letters, digits, `.`, `_` and `-` (at most 64)"
    )]
    BadName { origin: String },
    #[error("{origin}: the token of `{name}` is empty")]
    Empty { origin: String, name: String },
    #[error("{origin}: after the token only envs=PATTERN,... and verbs=VERB,... may follow")]
    UnknownScope { origin: String },
    #[error("{origin}: `{verb}` is not a verb; use read, sync, rollback, run or destroy")]
    UnknownVerb { origin: String, verb: String },
    #[error("{origin}: `{pattern}` is not an environment pattern; use lowercase names, digits, `-` and `*`")]
    BadPattern { origin: String, pattern: String },
    #[error("{origin}: `{what}` is empty; leave it out to allow all")]
    EmptyScope { origin: String, what: String },
    #[error("{origin}: the name `{name}` is given twice; each token needs its own name for the audit trail")]
    DuplicateName { origin: String, name: String },
    #[error("{origin}: `{first}` and `{second}` have the same token; give each holder its own")]
    SharedSecret { origin: String, first: String, second: String },
}

impl ApiTokens {
    /// One token that may do everything, named [`SINGLE_TOKEN_NAME`] (`RAILYARD_API_TOKEN`, the settings file).
    pub fn single(secret: &str) -> ApiTokens {
        let secret = secret.trim();
        if secret.is_empty() {
            return ApiTokens::default();
        }
        ApiTokens {
            tokens: vec![NamedToken {
                name: SINGLE_TOKEN_NAME.to_owned(),
                secret: secret.to_owned(),
                envs: None,
                verbs: None,
            }],
        }
    }

    /// A token file's text: the whole file one token (the older form: a single line that does not start with
    /// `name:`), or `name:token [scope]` lines (`#` comments and blank lines skipped). `origin` names the file in
    /// errors, which never quote a token.
    pub fn parse(text: &str, origin: &str) -> Result<ApiTokens, TokenFileError> {
        let whole = text.trim();
        let starts_named = |line: &str| line.split_once(':').is_some_and(|(name, _)| valid_name(name));
        if !whole.contains('\n') && !starts_named(whole) {
            return Ok(ApiTokens::single(whole));
        }
        let lines = text
            .lines()
            .enumerate()
            .map(|(index, line)| (index + 1, line.trim()))
            .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'));
        let mut tokens = Vec::new();
        for (number, line) in lines {
            let origin = format!("{origin} line {number}");
            let Some((name, rest)) = line.split_once(':') else { return Err(TokenFileError::NoName { origin }) };
            tokens.push(named(name.trim(), rest, &origin)?);
        }
        ApiTokens::checked(tokens, origin)
    }

    /// A directory's files (`(file name, text)`, hidden ones already left out): each file is one token named after
    /// it, holding `token [envs=...] [verbs=...]`.
    pub fn from_files(files: &[(String, String)], origin: &str) -> Result<ApiTokens, TokenFileError> {
        let tokens = files
            .iter()
            .map(|(name, text)| named(name, text, &format!("{origin}/{name}")))
            .collect::<Result<Vec<_>, _>>()?;
        ApiTokens::checked(tokens, origin)
    }

    fn checked(tokens: Vec<NamedToken>, origin: &str) -> Result<ApiTokens, TokenFileError> {
        for (index, token) in tokens.iter().enumerate() {
            for earlier in &tokens[..index] {
                if earlier.name == token.name {
                    return Err(TokenFileError::DuplicateName { origin: origin.to_owned(), name: token.name.clone() });
                }
                if earlier.secret == token.secret {
                    return Err(TokenFileError::SharedSecret {
                        origin: origin.to_owned(),
                        first: earlier.name.clone(),
                        second: token.name.clone(),
                    });
                }
            }
        }
        Ok(ApiTokens { tokens })
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    pub fn names(&self) -> impl Iterator<Item = &NamedToken> {
        self.tokens.iter()
    }

    /// The token `given` is, compared in constant time against every token (which one matched does not show in the
    /// time taken).
    pub fn identify(&self, given: &str) -> Option<&NamedToken> {
        let given = given.trim().as_bytes();
        let mut found = None;
        for token in &self.tokens {
            if bool::from(given.ct_eq(token.secret.as_bytes())) {
                found = Some(token);
            }
        }
        found
    }

    /// The one token a client file holds (the CLI sends it); `None` when the file holds several.
    pub fn only_secret(&self) -> Option<&str> {
        match self.tokens.as_slice() {
            [only] => Some(&only.secret),
            _ => None,
        }
    }
}

/// A token from its name and `token [envs=...] [verbs=...]`.
fn named(name: &str, rest: &str, origin: &str) -> Result<NamedToken, TokenFileError> {
    let origin = || origin.to_owned();
    if !valid_name(name) {
        return Err(TokenFileError::BadName { origin: origin() });
    }
    let mut words = rest.split_whitespace();
    let Some(secret) = words.next() else {
        return Err(TokenFileError::Empty { origin: origin(), name: name.to_owned() });
    };
    let mut token = NamedToken { name: name.to_owned(), secret: secret.to_owned(), envs: None, verbs: None };
    for word in words {
        let (key, values) = word.split_once('=').unwrap_or((word, ""));
        let values: Vec<&str> = values.split(',').filter(|value| !value.is_empty()).collect();
        match key {
            "envs" | "verbs" if values.is_empty() => {
                return Err(TokenFileError::EmptyScope { origin: origin(), what: key.to_owned() });
            }
            "envs" => token.envs = Some(patterns(&values, origin)?),
            "verbs" => token.verbs = Some(verbs(&values, origin)?),
            _ => return Err(TokenFileError::UnknownScope { origin: origin() }),
        }
    }
    Ok(token)
}

/// Letters, digits, `.`, `_` and `-`, at most 64: a name fit for the audit trail.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn patterns(values: &[&str], origin: impl Fn() -> String) -> Result<Vec<String>, TokenFileError> {
    values
        .iter()
        .map(|pattern| {
            let valid = pattern.len() <= 128
                && pattern.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '*'));
            if valid {
                Ok((*pattern).to_owned())
            } else {
                Err(TokenFileError::BadPattern { origin: origin(), pattern: (*pattern).to_owned() })
            }
        })
        .collect()
}

fn verbs(values: &[&str], origin: impl Fn() -> String) -> Result<BTreeSet<Verb>, TokenFileError> {
    values
        .iter()
        .map(|word| {
            Verb::parse(word).ok_or_else(|| TokenFileError::UnknownVerb { origin: origin(), verb: (*word).to_owned() })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "# who may do what\n\
        ops:ops-secret-0123456789\n\
        ci:ci-secret-0123456789 envs=staging,pr-* verbs=sync,run,read\n\
        \n\
        viewer:viewer-secret-0123 verbs=read\n";

    fn tokens() -> ApiTokens {
        ApiTokens::parse(FILE, "tokens.txt").expect("valid")
    }

    #[test]
    fn a_bare_token_is_the_older_single_token_with_every_right() {
        let tokens = ApiTokens::parse("  s3cret-value\n", "f").expect("valid");
        let holder = tokens.identify("s3cret-value").expect("known");
        assert_eq!(holder.name, SINGLE_TOKEN_NAME);
        for verb in Verb::ALL {
            assert_eq!(holder.allows(verb, Some("production")), Ok(()));
        }
        assert!(ApiTokens::parse("", "f").expect("empty").is_empty());
        // Tokens of the older form that hold `:`, `#` or spaces stay whole.
        for older in ["abc+/9:xyz==", "#starts-with-hash", "two words", "ab cd:ef"] {
            let tokens = ApiTokens::parse(&format!("{older}\n"), "f").expect(older);
            assert_eq!(tokens.identify(older).map(|t| t.name.as_str()), Some(SINGLE_TOKEN_NAME), "{older}");
        }
    }

    #[test]
    fn errors_never_quote_a_token() {
        for text in ["a:x\nsecret+part/1:rest", "ci:tok s3cret-part", "ops:one\nsecret-line-without-colon"] {
            let error = ApiTokens::parse(text, "tokens.txt").expect_err(text).to_string();
            assert!(!error.contains("secret") && !error.contains("s3cret"), "{error}");
        }
    }

    #[test]
    fn named_tokens_are_told_apart_and_scoped() {
        let tokens = tokens();
        assert_eq!(tokens.identify("ops-secret-0123456789").map(|t| t.name.as_str()), Some("ops"));
        assert_eq!(tokens.identify(" ci-secret-0123456789\n").map(|t| t.name.as_str()), Some("ci"));
        assert!(tokens.identify("ops-secret").is_none(), "a prefix is not the token");
        assert!(tokens.identify("").is_none());
        let ci = tokens.identify("ci-secret-0123456789").expect("ci");
        assert_eq!(ci.allows(Verb::Sync, Some("staging")), Ok(()));
        assert_eq!(ci.allows(Verb::Run, Some("pr-17")), Ok(()));
        assert_eq!(ci.allows(Verb::Read, None), Ok(()));
        let denied = ci.allows(Verb::Sync, Some("production")).expect_err("outside its environments");
        assert!(denied.to_string().contains("may not sync environment `production`"), "{denied}");
        assert!(denied.to_string().contains("staging, pr-*"), "{denied}");
        let denied = ci.allows(Verb::Rollback, Some("staging")).expect_err("not its verb");
        assert!(denied.to_string().contains("may not rollback: its verbs are read, sync, run"), "{denied}");
        let viewer = tokens.identify("viewer-secret-0123").expect("viewer");
        assert!(viewer.allows(Verb::Sync, Some("staging")).is_err());
        assert_eq!(viewer.allows(Verb::Read, Some("production")), Ok(()));
        assert_eq!(ci.scope(), "read, sync, run on staging, pr-*");
    }

    #[test]
    fn the_debug_form_never_shows_a_token() {
        let shown = format!("{:?}", tokens());
        assert!(!shown.contains("secret-0123"), "{shown}");
        assert!(shown.contains("ops"));
    }

    #[test]
    fn a_directory_names_each_token_by_its_file() {
        let files = vec![
            ("deploy-bot".to_owned(), "bot-token-0123456789 verbs=sync\n".to_owned()),
            ("alice".to_owned(), "alice-token-0123456789\n".to_owned()),
        ];
        let tokens = ApiTokens::from_files(&files, "/run/tokens").expect("valid");
        let bot = tokens.identify("bot-token-0123456789").expect("bot");
        assert_eq!(bot.name, "deploy-bot");
        assert!(bot.allows(Verb::Run, None).is_err());
        assert_eq!(tokens.identify("alice-token-0123456789").map(|t| t.name.as_str()), Some("alice"));
    }

    #[test]
    fn every_malformed_line_is_refused_with_where_and_why() {
        let cases = [
            ("a:x\nsecond-line-without-colon", "line 2: expected `name:token"),
            ("bad name:x\nok:y", "line 1: the part before `:` is not a token name"),
            ("ci:", "the token of `ci` is empty"),
            ("ci:tok colour=red", "after the token only envs="),
            ("ci:tok verbs=sync,deploy", "`deploy` is not a verb"),
            ("ci:tok envs=Prod", "`Prod` is not an environment pattern"),
            ("ci:tok envs=", "`envs` is empty"),
            ("ci:one\nci:two", "the name `ci` is given twice"),
            ("a:same\nb:same", "`a` and `b` have the same token"),
        ];
        for (text, expected) in cases {
            let error = ApiTokens::parse(text, "tokens.txt").expect_err(text).to_string();
            assert!(error.contains(expected), "{text:?}: {error}");
            assert!(error.starts_with("tokens.txt"), "{error}");
        }
    }

    #[test]
    fn environment_patterns_match_as_globs() {
        for (pattern, name, matches) in [
            ("pr-*", "pr-12", true),
            ("pr-*", "pr-", true),
            ("pr-*", "prod", false),
            ("*", "production", true),
            ("staging", "staging", true),
            ("staging", "staging-2", false),
            ("*-eu", "web-eu", true),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "acb", false),
            ("a*a", "a", false),
        ] {
            assert_eq!(glob_matches(pattern, name), matches, "{pattern} {name}");
        }
    }
}
