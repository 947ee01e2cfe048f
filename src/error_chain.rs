//! An error and its causes as one line, for the places that show errors to people (the command line's `error:`,
//! a fetch's message): each cause is appended after `: ` unless the text so far already says it, since many errors
//! repeat their cause in their own message and a reader should see it once.

/// `error` and every error under it, joined with ": ", each cause once.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::chain;

    #[derive(Debug, thiserror::Error)]
    #[error("Transport handshake failed")]
    struct Outer(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read x: {source}")]
    struct Repeats {
        #[source]
        source: std::io::Error,
    }

    #[test]
    fn causes_follow_the_message() {
        let error = Outer(std::io::Error::other("Will not send credentials in clear text over http"));
        assert_eq!(chain(&error), "Transport handshake failed: Will not send credentials in clear text over http");
    }

    #[test]
    fn a_cause_the_message_already_says_is_not_repeated() {
        let error = Repeats { source: std::io::Error::other("permission denied") };
        assert_eq!(chain(&error), "cannot read x: permission denied");
    }
}
