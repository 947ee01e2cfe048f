//! Calls railyard makes to the outside world (forges, notification targets): retried with backoff, and redirected
//! only within the origin they were sent to, so that no credential follows a redirect elsewhere.

use std::time::Duration;

use reqwest::Response;

/// Redirects followed within one origin (a renamed repository, say) before giving up.
const MAX_REDIRECTS: usize = 5;

/// `scheme://host:port` of `url`: what a token may be sent to.
fn origin(url: &reqwest::Url) -> String {
    format!("{}://{}:{}", url.scheme(), url.host_str().unwrap_or_default(), url.port_or_known_default().unwrap_or(0))
}

/// Follows redirects only within the origin the request was sent to: reqwest drops `Authorization` on a redirect to
/// another host but not GitLab's `PRIVATE-TOKEN`, and a forge (or whatever answers in its name) must not be able to
/// send any of railyard's credentials elsewhere. A redirect to another origin is returned as it is, for the caller
/// to report.
pub fn same_origin_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let same = attempt.previous().first().is_some_and(|first| origin(first) == origin(attempt.url()));
        if !same {
            attempt.stop()
        } else if attempt.previous().len() > MAX_REDIRECTS {
            attempt.error(format!("more than {MAX_REDIRECTS} redirects"))
        } else {
            attempt.follow()
        }
    })
}

/// The origin a redirect response points to, for an error message (never the path or query, which may carry a
/// signed URL's secret).
pub fn redirect_origin(response: &Response) -> String {
    response
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|location| location.to_str().ok())
        .and_then(|location| response.url().join(location).ok())
        .map_or_else(|| "an unreadable Location".to_owned(), |url| origin(&url))
}

/// Runs `attempt` until it succeeds, at most `attempts` times, waiting `first_wait` and doubling between tries.
pub async fn with_backoff<T, E, F, Fut>(attempts: u32, first_wait: Duration, attempt: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    with_backoff_unless(attempts, first_wait, attempt, |_| Retry::Backoff).await
}

/// What a failed attempt calls for.
pub enum Retry {
    /// It would only fail again: give up at once.
    No,
    /// Try again after this long (a rate limit's reset), without counting towards the backoff.
    After(Duration),
    /// Try again after the doubling wait.
    Backoff,
}

/// [`with_backoff`], with `decide` saying what each failure calls for.
pub async fn with_backoff_unless<T, E, F, Fut>(
    attempts: u32,
    first_wait: Duration,
    mut attempt: F,
    decide: impl Fn(&E) -> Retry,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut wait = first_wait;
    let mut tried = 1;
    loop {
        let error = match attempt().await {
            Ok(done) => return Ok(done),
            Err(error) => error,
        };
        match decide(&error) {
            _ if tried >= attempts.max(1) => return Err(error),
            Retry::No => return Err(error),
            Retry::After(delay) => tokio::time::sleep(delay).await,
            Retry::Backoff => {
                tokio::time::sleep(wait).await;
                wait = wait.saturating_mul(2);
            }
        }
        tried += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn backoff_doubles_and_gives_up_after_the_attempts() {
        let started = tokio::time::Instant::now();
        let mut tries = 0;
        let outcome: Result<(), &str> = with_backoff(4, Duration::from_secs(1), || {
            tries += 1;
            async { Err("down") }
        })
        .await;
        assert_eq!((outcome, tries), (Err("down"), 4));
        assert_eq!(started.elapsed(), Duration::from_secs(1 + 2 + 4));
        let mut tries = 0;
        let outcome: Result<u32, &str> = with_backoff(4, Duration::from_secs(1), || {
            tries += 1;
            let now = tries;
            async move { if now < 3 { Err("down") } else { Ok(now) } }
        })
        .await;
        assert_eq!(outcome, Ok(3));
    }
}
