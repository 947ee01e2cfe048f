//! The forge clients (GitHub, GitLab, Gitea) against the fake forge of tests/support, each in its own API's shapes:
//! open pull requests read over several pages, a failed or short page failing the whole read (previews are never
//! torn down on a partial list), the commit status `railyard/plan`, and one sticky comment edited in place.
//! The hostile side too: a marker in someone else's comment, quoted text that would render as links, mentions or
//! HTML, a redirect to another address that would take the token along, and who the forge says may push.

use crate::support;

use std::time::Duration;

use railyard::forge::{COMMENT_MARKER, ForgeClient, ForgeKind, ForgeSettings};
use railyard::previews::PullRequestReport;
use support::fake_forge::{FakeForge, FakePullRequest, Refusal, SELF_ID, SELF_LOGIN, Speaks, TOKEN};

const FORGES: [(Speaks, ForgeKind); 3] =
    [(Speaks::GitHub, ForgeKind::GitHub), (Speaks::GitLab, ForgeKind::GitLab), (Speaks::Gitea, ForgeKind::Gitea)];

fn client(fake: &FakeForge, kind: ForgeKind) -> ForgeClient {
    ForgeClient::new(ForgeSettings {
        kind,
        api: fake.api(),
        repo: fake.repo().to_owned(),
        token: TOKEN.to_owned(),
        public_url: Some("https://deploy.example.com".to_owned()),
    })
}

fn open_five(fake: &FakeForge) {
    for number in 1..=5 {
        fake.open(FakePullRequest {
            number,
            sha: format!("{number:040}"),
            branch: format!("change-{number}"),
            fork: number == 4,
            labels: if number == 2 { vec!["preview".to_owned()] } else { Vec::new() },
        });
    }
}

fn report(comment: bool, summary: &str) -> PullRequestReport {
    PullRequestReport {
        number: 3,
        head_sha: format!("{:040}", 3),
        success: true,
        summary: summary.to_owned(),
        diff: "~ app web (update)\n  env.MESSAGE: a -> b\n".to_owned(),
        urls: vec!["http://web-pr-3.preview.test".to_owned()],
        preview: "running".to_owned(),
        page: "/env/pr-3".to_owned(),
        comment,
    }
}

#[tokio::test]
async fn open_pull_requests_are_read_over_every_page_in_each_forges_shape() {
    for (speaks, kind) in FORGES {
        let fake = FakeForge::start(speaks);
        open_five(&fake);
        let open = client(&fake, kind).list_open().await.unwrap_or_else(|error| panic!("{kind:?}: {error}"));
        let numbers: Vec<u64> = open.iter().map(|pr| pr.number).collect();
        assert_eq!(numbers, [1, 2, 3, 4, 5], "{kind:?}: {:?}", fake.requests());
        let listings = fake
            .requests()
            .iter()
            .filter(|request| {
                request.starts_with("GET") && (request.contains("/pulls") || request.contains("/merge_requests"))
            })
            .count();
        assert_eq!(listings, 3, "{kind:?}: five pull requests at two per page: {:?}", fake.requests());
        assert_eq!(open[0].head_sha, format!("{:040}", 1));
        assert_eq!(open[0].head_branch, "change-1");
        assert!(open[3].from_fork && !open[0].from_fork, "{kind:?}: the fork is told apart");
        assert_eq!(open[1].labels, ["preview"], "{kind:?}");
    }
}

#[tokio::test]
async fn a_failed_page_fails_the_whole_read() {
    for (speaks, kind) in FORGES {
        let fake = FakeForge::start(speaks);
        open_five(&fake);
        fake.fail_after(1);
        let error = client(&fake, kind).list_open().await.expect_err("page 2 failed");
        let text = error.to_string();
        assert!(text.contains("500"), "{kind:?}: {text}");
        assert!(!text.contains(TOKEN), "the token stays out of errors: {text}");
        fake.fail_next(1);
        assert!(client(&fake, kind).list_open().await.is_err(), "{kind:?}: a failed first page fails too");
        assert_eq!(client(&fake, kind).list_open().await.map(|open| open.len()).ok(), Some(5), "{kind:?}");
    }
}

#[tokio::test]
async fn the_status_and_one_sticky_comment_are_posted_and_the_comment_is_edited_in_place() {
    for (speaks, kind) in FORGES {
        let fake = FakeForge::start(speaks);
        open_five(&fake);
        let client = client(&fake, kind);
        client.post_report(&report(true, "1 to update"), 1, Duration::ZERO).await.expect("first report");
        client.post_report(&report(true, "2 to update"), 1, Duration::ZERO).await.expect("second report");
        let statuses = fake.statuses();
        assert_eq!(statuses.len(), 2, "{kind:?}");
        assert_eq!(statuses[0].sha, format!("{:040}", 3));
        let status = &statuses[1].body;
        let (context, state) = match kind {
            ForgeKind::GitLab => ("name", "success"),
            _ => ("context", "success"),
        };
        assert_eq!(status[context], "railyard/plan", "{kind:?}: {status}");
        assert_eq!(status["state"], state, "{kind:?}: {status}");
        assert_eq!(status["description"], "2 to update");
        assert_eq!(status["target_url"], "https://deploy.example.com/env/pr-3");
        let comments = fake.comments(3);
        assert_eq!(comments.len(), 1, "{kind:?}: one comment, edited: {comments:?}");
        assert!(comments[0].contains(COMMENT_MARKER) && comments[0].contains("2 to update"), "{}", comments[0]);
        assert!(comments[0].contains("env.MESSAGE: a -> b") && comments[0].contains("http://web-pr-3.preview.test"));
    }
}

#[tokio::test]
async fn a_failure_status_names_the_problem_and_comments_can_be_turned_off() {
    let fake = FakeForge::start(Speaks::GitLab);
    let client = client(&fake, ForgeKind::GitLab);
    let mut failed = report(false, "the pull request's config is invalid: apps/web.yaml:3:1: unknown field");
    failed.success = false;
    client.post_report(&failed, 1, Duration::ZERO).await.expect("report");
    assert_eq!(fake.statuses()[0].body["state"], "failed");
    assert!(fake.statuses()[0].body["description"].as_str().is_some_and(|d| d.contains("apps/web.yaml:3:1")));
    assert!(fake.comments(3).is_empty(), "previews.comment: false posts no comment");
}

#[tokio::test]
async fn posting_is_retried_after_a_server_error() {
    let fake = FakeForge::start(Speaks::GitHub);
    fake.fail_next(2);
    client(&fake, ForgeKind::GitHub)
        .post_report(&report(true, "1 to create"), 3, Duration::from_millis(10))
        .await
        .expect("the third try goes through");
    assert_eq!(fake.statuses().len(), 1);
    assert_eq!(fake.comments(3).len(), 1);
}

#[tokio::test]
async fn a_marker_in_someone_elses_comment_is_never_edited() {
    for (speaks, kind) in FORGES {
        let fake = FakeForge::start(speaks);
        let bait = format!("{COMMENT_MARKER}\n### railyard: all good, merge away");
        fake.comment_as(3, "mallory", &bait);
        let client = client(&fake, kind);
        client.post_report(&report(true, "1 to update"), 1, Duration::ZERO).await.expect("first report");
        client.post_report(&report(true, "2 to update"), 1, Duration::ZERO).await.expect("second report");
        let comments = fake.comments_with_authors(3);
        assert_eq!(comments.len(), 2, "{kind:?}: mallory's and railyard's own: {comments:?}");
        assert_eq!((comments[0].author.as_str(), comments[0].body.as_str()), ("mallory", bait.as_str()), "{kind:?}");
        assert_eq!(comments[1].author, SELF_LOGIN, "{kind:?}");
        assert!(comments[1].body.contains("2 to update"), "{kind:?}: railyard's own comment is edited: {comments:?}");
        let asked = fake
            .requests()
            .iter()
            .filter(|request| request.split('?').next().is_some_and(|r| r.ends_with("/user")))
            .count();
        assert_eq!(asked, 1, "{kind:?}: the token's user is asked once: {:?}", fake.requests());
    }
}

#[tokio::test]
async fn without_knowing_its_own_user_railyard_posts_no_comment() {
    let fake = FakeForge::start(Speaks::GitHub);
    fake.comment_as(3, "mallory", COMMENT_MARKER);
    let client = client(&fake, ForgeKind::GitHub);
    fake.fail_after(1); // the status goes through, `GET /user` answers 500
    let error = client.post_report(&report(true, "1 to update"), 1, Duration::ZERO).await.expect_err("no identity");
    let text = error.to_string();
    assert!(text.contains("GET user") && text.contains("did not say who the token belongs to"), "{text}");
    assert_eq!(fake.comments(3), [COMMENT_MARKER], "nothing is edited or posted on a guess");
}

/// `markdown` without its fenced code blocks and code spans (CommonMark's rules for backtick fences and spans):
/// what a forge renders as Markdown and HTML. Fails on a fence that is never closed.
fn outside_code(markdown: &str) -> String {
    let mut out = String::new();
    let mut fence: Option<usize> = None;
    for line in markdown.lines() {
        let ticks = line.chars().take_while(|c| *c == '`').count();
        match fence {
            Some(open) if ticks >= open && line[ticks..].trim().is_empty() => fence = None,
            Some(_) => {}
            None if ticks >= 3 => fence = Some(ticks),
            None => {
                out.push_str(&outside_spans(line));
                out.push('\n');
            }
        }
    }
    assert_eq!(fence, None, "a fence is left open:\n{markdown}");
    out
}

/// One line without its code spans: a run of n backticks opens a span closed by the next run of exactly n.
fn outside_spans(line: &str) -> String {
    let chars: Vec<char> = line.chars().collect();
    let run_at = |at: usize| chars[at..].iter().take_while(|c| **c == '`').count();
    let mut out = String::new();
    let mut at = 0;
    while at < chars.len() {
        if chars[at] != '`' {
            out.push(chars[at]);
            at += 1;
            continue;
        }
        let run = run_at(at);
        let mut close = at + run;
        let mut closed = None;
        while close < chars.len() {
            if chars[close] == '`' {
                let length = run_at(close);
                if length == run {
                    closed = Some(close + length);
                    break;
                }
                close += length;
            } else {
                close += 1;
            }
        }
        match closed {
            Some(end) => at = end,
            None => {
                out.extend(&chars[at..at + run]);
                at += run;
            }
        }
    }
    out
}

#[tokio::test]
async fn quoted_text_reaches_the_comment_as_code_that_links_mentions_and_shows_nothing() {
    let fake = FakeForge::start(Speaks::GitHub);
    let client = client(&fake, ForgeKind::GitHub);
    let hostile =
        "`` @mallory <img src=http://evil.example/i.png> [merge](http://evil.example) ![x](http://evil.example/x)";
    let mut sent = report(true, &format!("web: {hostile}\n# Approved by @admins"));
    sent.diff = format!("~ app web (update)\n```\n</details>\n{hostile}\n``````\n<script>alert(1)</script>\n");
    sent.preview = "refused: <b>@mallory</b> says hi".to_owned();
    client.post_report(&sent, 1, Duration::ZERO).await.expect("report");
    let comment = fake.comments(3).pop().expect("the comment");
    let rendered = outside_code(&comment);
    for needle in ["@mallory", "@admins", "evil.example", "<img", "<script", "<b>", "# Approved"] {
        assert!(!rendered.contains(needle), "`{needle}` is rendered outside code:\n{rendered}\n---\n{comment}");
    }
    // What a reader sees: the text itself, whole, in code.
    assert!(comment.contains(hostile) && comment.contains("<script>alert(1)</script>"), "{comment}");
    assert!(rendered.contains("railyard: what merging changes in production"), "{rendered}");
}

#[tokio::test]
async fn the_token_never_follows_a_redirect_to_another_origin() {
    for (speaks, kind) in FORGES {
        let elsewhere = FakeForge::start(speaks);
        let fake = FakeForge::start(speaks);
        open_five(&fake);
        fake.redirect_to(&format!("http://127.0.0.1:{}", elsewhere.port));
        let client = client(&fake, kind);
        let error = client.list_open().await.expect_err("the redirect is not followed");
        let text = error.to_string();
        assert!(
            text.contains("redirected to another origin")
                && text.contains(&format!("http://127.0.0.1:{}", elsewhere.port)),
            "{kind:?}: the error says what happened: {text}"
        );
        assert!(!text.contains(TOKEN), "{text}");
        let error = client.post_report(&report(true, "1 to update"), 1, Duration::ZERO).await.expect_err("no status");
        assert!(error.to_string().contains("redirected to another origin"), "{kind:?}: {error}");
        let seen = elsewhere.request_headers();
        assert!(
            seen.iter().flatten().all(|(_, value)| !value.contains(TOKEN)),
            "{kind:?}: the other origin saw the token: {seen:?}"
        );
        assert!(seen.is_empty(), "{kind:?}: nothing is sent there at all: {:?}", elsewhere.requests());
        let sent_home = fake.request_headers();
        assert!(
            sent_home.iter().flatten().any(|(_, value)| value.contains(TOKEN)),
            "{kind:?}: the forge itself gets it"
        );
    }
}

#[tokio::test]
async fn who_may_push_is_the_forges_word_asked_once_per_author_and_failing_closed() {
    for (speaks, kind) in FORGES {
        let fake = FakeForge::start(speaks);
        open_five(&fake);
        for (number, author) in [(1, "maintainer"), (2, "developer"), (3, "stranger"), (4, "flaky"), (5, "maintainer")]
        {
            fake.set_author(number, author);
        }
        fake.set_access("maintainer", 40);
        fake.set_access("developer", 30);
        fake.fail_lookups_of("flaky");
        let open = client(&fake, kind).list_open().await.unwrap_or_else(|error| panic!("{kind:?}: {error}"));
        let trusted: Vec<(&str, bool)> = open.iter().map(|pr| (pr.author.as_str(), pr.author_trusted)).collect();
        // GitLab trusts Maintainers and above; GitHub's collaborators and Gitea's may push (write access).
        let developer = kind != ForgeKind::GitLab;
        assert_eq!(
            trusted,
            [
                ("maintainer", true),
                ("developer", developer),
                ("stranger", false),
                ("flaky", false),
                ("maintainer", true)
            ],
            "{kind:?}"
        );
        let lookups = fake
            .requests()
            .iter()
            .filter(|request| request.contains("/collaborators/") || request.contains("/members/"))
            .count();
        let expected = if kind == ForgeKind::GitHub { 0 } else { 4 };
        assert_eq!(lookups, expected, "{kind:?}: one lookup per author per list: {:?}", fake.requests());
    }
}

fn client_with_token(fake: &FakeForge, kind: ForgeKind, token: &str) -> ForgeClient {
    ForgeClient::new(ForgeSettings {
        kind,
        api: fake.api(),
        repo: fake.repo().to_owned(),
        token: token.to_owned(),
        public_url: None,
    })
}

/// How many requests `fake` received whose `METHOD path` contains `text`.
fn requests_to(fake: &FakeForge, text: &str) -> usize {
    fake.requests().iter().filter(|request| request.contains(text)).count()
}

#[tokio::test]
async fn a_token_the_forge_refuses_is_reported_as_such_and_not_tried_again() {
    for (speaks, kind) in FORGES {
        let fake = FakeForge::start(speaks);
        open_five(&fake);
        let wrong = client_with_token(&fake, kind, "revoked-token-0000");
        let text = wrong.list_open().await.expect_err("a refused token lists nothing").to_string();
        let forge = kind.as_str();
        assert!(
            text.starts_with(forge) && text.contains("401") && text.contains("does not accept the token"),
            "{kind:?}: names the forge and what happened: {text}"
        );
        assert!(text.contains("--forge-token-file"), "{kind:?}: says where the token comes from: {text}");
        let error = wrong.post_report(&report(true, "1 to update"), 5, Duration::from_millis(10)).await;
        let text = error.expect_err("a refused token posts nothing").to_string();
        assert!(text.contains("does not accept the token"), "{kind:?}: {text}");
        assert_eq!(requests_to(&fake, "/statuses/"), 1, "{kind:?}: not retried: {:?}", fake.requests());
        assert!(fake.statuses().is_empty() && fake.comments(3).is_empty(), "{kind:?}");
        // The right token, in the header this forge documents, is taken.
        assert_eq!(client(&fake, kind).list_open().await.map(|open| open.len()).ok(), Some(5), "{kind:?}");
    }
}

#[tokio::test]
async fn missing_rights_and_a_refused_status_are_reported_at_once_with_the_fix() {
    for (speaks, kind) in FORGES {
        let fake = FakeForge::start(speaks);
        let client = client(&fake, kind);
        fake.refuse("/statuses/", 1, Refusal::Forbidden);
        let error = client.post_report(&report(true, "1 to update"), 5, Duration::from_millis(10)).await;
        let text = error.expect_err("403").to_string();
        assert!(text.starts_with(kind.as_str()) && text.contains("/statuses/"), "{kind:?}: what failed: {text}");
        assert!(text.contains("403 Forbidden") && text.contains("scopes"), "{kind:?}: the fix: {text}");
        assert_eq!(requests_to(&fake, "/statuses/"), 1, "{kind:?}: not retried: {:?}", fake.requests());

        fake.refuse("/statuses/", 1, Refusal::Unprocessable);
        let error = client.post_report(&report(true, "1 to update"), 5, Duration::from_millis(10)).await;
        let text = error.expect_err("422").to_string();
        assert!(text.contains("refused the request as invalid (4") && text.contains("\"message\""), "{kind:?}: {text}");
        assert!(text.contains("--forge-repo"), "{kind:?}: the fix: {text}");
        assert_eq!(requests_to(&fake, "/statuses/"), 2, "{kind:?}: not retried: {:?}", fake.requests());
        assert!(
            fake.statuses().is_empty() && fake.comments(3).is_empty(),
            "{kind:?}: no comment after a failed status"
        );
    }
}

#[tokio::test]
async fn a_rate_limit_that_resets_soon_is_waited_out_and_one_that_does_not_is_reported() {
    for (speaks, kind) in FORGES {
        let fake = FakeForge::start(speaks);
        let client = client(&fake, kind);
        // Resetting now: tried again at once, not after the hour of backoff given.
        fake.refuse("/statuses/", 1, Refusal::RateLimited { reset_in_secs: 0 });
        let posted = tokio::time::timeout(
            Duration::from_secs(20),
            client.post_report(&report(false, "1"), 2, Duration::from_secs(3600)),
        )
        .await
        .unwrap_or_else(|_| panic!("{kind:?}: waited for the backoff instead of the reset"));
        posted.unwrap_or_else(|error| panic!("{kind:?}: {error}"));
        assert_eq!(fake.statuses().len(), 1, "{kind:?}");
        assert_eq!(requests_to(&fake, "/statuses/"), 2, "{kind:?}: {:?}", fake.requests());

        // Resetting in an hour: reported at once, without hammering the forge.
        fake.refuse("/statuses/", 5, Refusal::RateLimited { reset_in_secs: 3600 });
        let error = client.post_report(&report(false, "2"), 5, Duration::ZERO).await.expect_err("limited");
        let text = error.to_string();
        assert!(text.starts_with(kind.as_str()) && text.contains("rate limit is used up"), "{kind:?}: {text}");
        let resets: u64 = text
            .split("resets in ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|secs| secs.parse().ok())
            .unwrap_or_else(|| panic!("{kind:?}: says when it resets: {text}"));
        assert!((3590..=3600).contains(&resets), "{kind:?}: {text}");
        assert_eq!(requests_to(&fake, "/statuses/"), 3, "{kind:?}: asked once: {:?}", fake.requests());

        // A listing is not waited for: the error says why, and the previews stay until the list reads again.
        fake.refuse("/pulls", 1, Refusal::RateLimited { reset_in_secs: 30 });
        fake.refuse("/merge_requests", 1, Refusal::RateLimited { reset_in_secs: 30 });
        let text = client.list_open().await.expect_err("limited").to_string();
        assert!(text.contains("rate limit is used up") && text.contains("resets in"), "{kind:?}: {text}");
        assert_eq!(client.list_open().await.map(|open| open.len()).ok(), Some(0), "{kind:?}: the next read works");
    }
}

#[tokio::test]
async fn closed_and_merged_pull_requests_are_not_listed() {
    for (speaks, kind) in FORGES {
        let fake = FakeForge::start(speaks);
        open_five(&fake);
        fake.close(2);
        fake.merge(3);
        let open = client(&fake, kind).list_open().await.unwrap_or_else(|error| panic!("{kind:?}: {error}"));
        let numbers: Vec<u64> = open.iter().map(|pr| pr.number).collect();
        assert_eq!(numbers, [1, 4, 5], "{kind:?}: {:?}", fake.requests());
        fake.open(FakePullRequest {
            number: 2,
            sha: format!("{:040}", 2),
            branch: "change-2".to_owned(),
            fork: false,
            labels: Vec::new(),
        });
        let open = client(&fake, kind).list_open().await.unwrap_or_else(|error| panic!("{kind:?}: {error}"));
        assert_eq!(open.iter().map(|pr| pr.number).collect::<Vec<_>>(), [1, 2, 4, 5], "{kind:?}: reopened");
    }
}

#[tokio::test]
async fn totals_that_the_pages_do_not_hold_fail_the_read() {
    // GitHub's listings announce no total; GitLab's `X-Total` and Gitea's `X-Total-Count` do.
    for (speaks, kind) in [(Speaks::GitLab, ForgeKind::GitLab), (Speaks::Gitea, ForgeKind::Gitea)] {
        let fake = FakeForge::start(speaks);
        open_five(&fake);
        for (offset, announced) in [(1, 6), (-1, 4)] {
            fake.miscount_totals(offset);
            let text = client(&fake, kind).list_open().await.expect_err("a short or long read").to_string();
            assert!(
                text.starts_with(kind.as_str()) && text.contains(&format!("5 items read of the {announced} announced")),
                "{kind:?}: {text}"
            );
            assert!(text.contains("nothing is torn down"), "{kind:?}: {text}");
        }
        fake.miscount_totals(0);
        assert_eq!(client(&fake, kind).list_open().await.map(|open| open.len()).ok(), Some(5), "{kind:?}");
    }
}

#[tokio::test]
async fn among_other_peoples_comments_railyard_edits_only_its_own_marked_one() {
    for (speaks, kind) in FORGES {
        let fake = FakeForge::start(speaks);
        // A maintainer's token may edit anyone's comment: no 403 would stop a careless client.
        fake.token_may_edit_any_comment();
        let bait = format!("{COMMENT_MARKER}\n### railyard: all good, merge away");
        fake.comment_as(3, "alice", "LGTM, but let's see the preview");
        fake.comment_as(3, "mallory", &bait);
        fake.comment_as(3, SELF_LOGIN, "a note of the bot's own, without the marker");
        // Another account under railyard's login (renamed and reused): the id tells it apart.
        fake.comment_as_id(3, SELF_LOGIN, SELF_ID + 1000, &bait);
        fake.comment_as(3, SELF_LOGIN, &format!("{COMMENT_MARKER}\nthe plan of an earlier push"));
        fake.comment_as(3, "bob", &format!("quoting: {COMMENT_MARKER}"));
        let before = fake.comments_with_authors(3);

        client(&fake, kind).post_report(&report(true, "1 to update"), 1, Duration::ZERO).await.expect("report");
        let after = fake.comments_with_authors(3);
        assert_eq!(after.len(), before.len(), "{kind:?}: edited, not added: {after:#?}");
        for (index, (old, new)) in before.iter().zip(&after).enumerate() {
            if index == 4 {
                assert!(new.body.contains("1 to update") && new.id == old.id, "{kind:?}: its own is edited: {new:?}");
            } else {
                assert_eq!(old, new, "{kind:?}: comment {index} is not railyard's to edit");
            }
        }
    }
}
