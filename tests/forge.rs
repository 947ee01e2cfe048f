//! The forge clients (GitHub, GitLab, Gitea) against the fake forge of tests/support, each in its own API's shapes:
//! open pull requests read over several pages, a failed or short page failing the whole read (previews are never
//! torn down on a partial list), the commit status `railyard/plan`, and one sticky comment edited in place.

mod support;

use std::time::Duration;

use railyard::daemon::previews::PullRequestReport;
use railyard::forge::{COMMENT_MARKER, ForgeClient, ForgeKind, ForgeSettings};
use support::fake_forge::{FakeForge, FakePullRequest, Speaks};

const FORGES: [(Speaks, ForgeKind); 3] =
    [(Speaks::GitHub, ForgeKind::GitHub), (Speaks::GitLab, ForgeKind::GitLab), (Speaks::Gitea, ForgeKind::Gitea)];

fn client(fake: &FakeForge, kind: ForgeKind) -> ForgeClient {
    ForgeClient::new(ForgeSettings {
        kind,
        api: fake.api(),
        repo: fake.repo().to_owned(),
        token: "forge-token-canary-51c3".to_owned(),
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
        let listings = fake.requests().iter().filter(|request| request.starts_with("GET")).count();
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
        assert!(!text.contains("forge-token-canary-51c3"), "the token stays out of errors: {text}");
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
