//! Preview environments: which pull requests (and preview branches) run a preview, which wait for a slot, which are
//! refused and why, and which running previews go. Pure: the daemon feeds in the open pull requests it knows (from
//! the forge's list, or from webhooks without forge access), the previews that run, the policy of the tracked branch
//! and the time, and applies the [`Decision`].
//!
//! What the peers got wrong is ruled out here by construction: a preview is torn down only when its pull request is
//! known closed (the caller never hands in a list it could not read in full), a fork's pull request gets nothing
//! unless the tracked branch's policy says `allowForks`, and a pull request cannot change the policy it is judged by.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::kinds::{Previews, Project};
use crate::model::units::parse_duration;

/// A pull (or merge) request that is open on the forge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PullRequest {
    pub number: u64,
    pub title: String,
    pub author: String,
    pub head_sha: String,
    /// The branch it proposes to merge.
    pub head_branch: String,
    /// Its head lives in another repository than the one railyard follows.
    pub from_fork: bool,
    pub labels: Vec<String>,
    /// The forge says its author may push to the repository (GitHub `author_association` OWNER, MEMBER or
    /// COLLABORATOR; a GitLab maintainer; a Gitea collaborator): a label then approves every later push too.
    #[serde(default)]
    pub author_trusted: bool,
    /// The head commit a `previews.labels` label was added on (railyard's memory, not the forge's): a later push
    /// waits until the label is added again, unless the author is trusted.
    #[serde(default)]
    pub approved_sha: Option<String>,
    /// When its head last changed, as railyard saw it (milliseconds since the epoch): the TTL and the queue count
    /// from here.
    pub pushed_ms: i64,
}

/// The tracked branch's `previews` policy, read once.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PreviewPolicy {
    pub allow_forks: bool,
    pub labels: Vec<String>,
    pub max: u32,
    pub ttl: Option<Duration>,
    pub resync: Duration,
    pub branches: Vec<String>,
    pub comment: bool,
    pub share_secrets: bool,
    pub trusted_authors: Vec<String>,
}

impl PreviewPolicy {
    /// The policy when the Project enables previews.
    pub fn of(project: &Project) -> Option<PreviewPolicy> {
        let previews: &Previews = project.previews.as_ref().filter(|previews| previews.enabled)?;
        let duration = |text: Option<&String>| text.and_then(|text| parse_duration(text).ok());
        Some(PreviewPolicy {
            allow_forks: previews.allow_forks,
            labels: previews.labels.clone(),
            max: previews.max(),
            ttl: duration(previews.ttl.as_ref().map(|ttl| &ttl.value)),
            resync: duration(previews.resync.as_ref().map(|resync| &resync.value))
                .unwrap_or(Duration::from_secs(5 * 60)),
            branches: previews.branches.clone(),
            comment: previews.comments(),
            share_secrets: previews.share_secrets,
            trusted_authors: previews.trusted_authors.clone(),
        })
    }
}

/// Something that may get a preview: an open pull request, or a branch matching `previews.branches`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// `pr-<number>` or `branch-<slug>`.
    pub env: String,
    /// The git ref its config is read from: `refs/pull/<n>/head`, `refs/merge-requests/<n>/head` or the branch.
    pub git_ref: String,
    pub pushed_ms: i64,
    pub pull_request: Option<PullRequest>,
}

/// Where a candidate stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "state")]
pub enum Standing {
    Running,
    /// Waiting for one of `previews.max` slots; 1 is next.
    Queued {
        position: usize,
    },
    /// Never previewed under this policy (a fork, a missing label).
    Refused {
        reason: String,
    },
    /// No push within `previews.ttl`: torn down until the next push.
    Expired,
}

/// What to do with the previews.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    /// Every candidate, by environment name.
    pub standings: BTreeMap<String, Standing>,
    /// Running previews to tear down, with why.
    pub destroy: BTreeMap<String, String>,
}

impl Decision {
    pub fn runs(&self, env: &str) -> bool {
        self.standings.get(env) == Some(&Standing::Running)
    }
}

/// Decides which candidates run. Running previews keep their slot; free slots go to the waiting candidates whose
/// last push is oldest. A running preview that is no candidate any more (its pull request closed, its branch gone)
/// or that expired or is now refused is torn down.
pub fn decide(policy: &PreviewPolicy, candidates: &[Candidate], running: &BTreeSet<String>, now_ms: i64) -> Decision {
    let mut decision = Decision::default();
    let mut eligible: Vec<&Candidate> = Vec::new();
    for candidate in candidates {
        let standing = if let Some(reason) = candidate.pull_request.as_ref().and_then(|pr| refusal(policy, pr)) {
            Standing::Refused { reason }
        } else if expired(policy, candidate.pushed_ms, now_ms) {
            Standing::Expired
        } else {
            eligible.push(candidate);
            continue;
        };
        decision.standings.insert(candidate.env.clone(), standing);
    }
    let (mut keep, mut waiting): (Vec<&Candidate>, Vec<&Candidate>) =
        eligible.into_iter().partition(|candidate| running.contains(&candidate.env));
    keep.sort_by_key(|candidate| (candidate.pushed_ms, candidate.env.clone()));
    waiting.sort_by_key(|candidate| (candidate.pushed_ms, candidate.env.clone()));
    let slots = usize::try_from(policy.max).unwrap_or(usize::MAX);
    // A lowered `max` takes the slots of the newest pushes back.
    let overflow = keep.split_off(keep.len().min(slots));
    waiting.splice(0..0, overflow);
    let free = slots - keep.len();
    for candidate in &keep {
        decision.standings.insert(candidate.env.clone(), Standing::Running);
    }
    for (index, candidate) in waiting.iter().enumerate() {
        let standing = if index < free { Standing::Running } else { Standing::Queued { position: index - free + 1 } };
        decision.standings.insert(candidate.env.clone(), standing);
    }
    for env in running {
        let reason = match decision.standings.get(env) {
            Some(Standing::Running) => continue,
            None => "its pull request is closed (or its branch is gone)".to_owned(),
            Some(Standing::Expired) => "no push within previews.ttl".to_owned(),
            Some(Standing::Refused { reason }) => reason.clone(),
            Some(Standing::Queued { .. }) => "previews.max was lowered; it waits for a slot".to_owned(),
        };
        decision.destroy.insert(env.clone(), reason);
    }
    decision
}

/// Why this pull request gets no preview under `policy`, if it does not.
fn refusal(policy: &PreviewPolicy, pr: &PullRequest) -> Option<String> {
    if pr.from_fork && !policy.allow_forks {
        return Some(
            "it comes from a fork, and the tracked branch's previews.allowForks is false: forks get no preview"
                .to_owned(),
        );
    }
    if !policy.labels.is_empty() && !pr.labels.iter().any(|label| policy.labels.contains(label)) {
        return Some(format!("it carries none of the labels previews.labels asks for: {}", policy.labels.join(", ")));
    }
    awaiting_approval(policy, pr)
}

/// Why `pr`'s head may not run yet although it carries a label: the label was added on another commit, and its
/// author is not trusted (by the forge, or `previews.trustedAuthors`). `None` when it may run.
pub fn awaiting_approval(policy: &PreviewPolicy, pr: &PullRequest) -> Option<String> {
    let trusted = pr.author_trusted || policy.trusted_authors.contains(&pr.author);
    if policy.labels.is_empty() || trusted || pr.approved_sha.as_deref() == Some(pr.head_sha.as_str()) {
        return None;
    }
    Some(format!(
        "awaiting approval: new commits since the label ({}) was added; add it again to preview {}",
        policy.labels.join(", "),
        &pr.head_sha[..pr.head_sha.len().min(12)]
    ))
}

/// The head commit `incoming` is approved for, as railyard remembers it: none without a `previews.labels` label;
/// the event's head when the label was just added (`label_added`); else what `known` (the same pull request as last
/// seen) was approved for, or, seen labelled for the first time, its current head.
pub fn approval(
    labels: &[String],
    known: Option<&PullRequest>,
    incoming: &PullRequest,
    label_added: bool,
) -> Option<String> {
    if !incoming.labels.iter().any(|label| labels.contains(label)) {
        return None;
    }
    if label_added {
        return Some(incoming.head_sha.clone());
    }
    known.and_then(|known| known.approved_sha.clone()).or_else(|| Some(incoming.head_sha.clone()))
}

fn expired(policy: &PreviewPolicy, pushed_ms: i64, now_ms: i64) -> bool {
    policy.ttl.is_some_and(|ttl| now_ms.saturating_sub(pushed_ms) > i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX))
}

/// Whether `branch` matches one of the `previews.branches` globs (`*` within a path segment, `**` across them).
pub fn branch_previewed(patterns: &[String], branch: &str) -> bool {
    patterns.iter().any(|pattern| glob_matches(pattern.as_bytes(), branch.as_bytes()))
}

fn glob_matches(pattern: &[u8], text: &[u8]) -> bool {
    match pattern {
        [] => text.is_empty(),
        [b'*', b'*', rest @ ..] => (0..=text.len()).any(|skip| glob_matches(rest, &text[skip..])),
        [b'*', rest @ ..] => (0..=text.len())
            .take_while(|&skip| skip == 0 || text[skip - 1] != b'/')
            .any(|skip| glob_matches(rest, &text[skip..])),
        [first, rest @ ..] => text.first() == Some(first) && glob_matches(rest, &text[1..]),
    }
}

/// What railyard tells the forge about one pull request: the commit status `railyard/plan` on its head and the
/// sticky comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequestReport {
    pub number: u64,
    pub head_sha: String,
    /// The plan could be made (`success`), or not (`failure`: invalid config, production unreadable).
    pub success: bool,
    /// "2 to update, 1 to create", or the first error.
    pub summary: String,
    /// The plan as text (secrets are references by construction); empty without one.
    pub diff: String,
    /// Where the preview answers.
    pub urls: Vec<String>,
    /// The preview's state in words: running, queued, refused (and why), torn down.
    pub preview: String,
    /// The pull request's page on railyard's status page, relative to its public URL.
    pub page: String,
    /// `previews.comment`: whether to keep the sticky comment.
    pub comment: bool,
}

/// Access to a forge: its list of open pull requests, where it publishes their heads, and the reports.
#[async_trait::async_trait]
pub trait PullRequestSource: Send + Sync {
    /// Every open pull request, or an error when the list could not be read in full.
    async fn open_pull_requests(&self) -> Result<Vec<PullRequest>, String>;
    /// GitLab publishes merge requests' heads under `refs/merge-requests/`.
    fn uses_merge_requests(&self) -> bool;
    /// Posts the commit status and keeps the sticky comment (retrying with backoff); called off the reconcile.
    async fn report(&self, report: PullRequestReport) -> Result<(), String>;
}

/// What happened to a pull request, as a forge's webhook says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PullRequestAction {
    /// Opened or reopened.
    Opened,
    /// New commits on its head.
    Updated,
    /// Its labels changed.
    Labeled,
    /// Closed or merged.
    Closed,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> PreviewPolicy {
        PreviewPolicy {
            allow_forks: false,
            labels: Vec::new(),
            max: 2,
            ttl: Some(Duration::from_secs(3600)),
            resync: Duration::from_secs(300),
            branches: Vec::new(),
            comment: true,
            share_secrets: false,
            trusted_authors: Vec::new(),
        }
    }

    fn pr(number: u64, pushed_ms: i64) -> Candidate {
        Candidate {
            env: format!("pr-{number}"),
            git_ref: format!("refs/pull/{number}/head"),
            pushed_ms,
            pull_request: Some(PullRequest {
                number,
                title: format!("change {number}"),
                author: "ada".to_owned(),
                head_sha: "a".repeat(40),
                head_branch: format!("feature-{number}"),
                from_fork: false,
                labels: Vec::new(),
                author_trusted: false,
                approved_sha: None,
                pushed_ms,
            }),
        }
    }

    fn running(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|name| (*name).to_owned()).collect()
    }

    #[test]
    fn beyond_max_the_newest_pushes_wait_in_order_and_running_previews_keep_their_slot() {
        let candidates = [pr(1, 300), pr(2, 100), pr(3, 200), pr(4, 50)];
        let decision = decide(&policy(), &candidates, &running(&["pr-1"]), 400);
        assert_eq!(decision.standings["pr-1"], Standing::Running, "a running preview keeps its slot");
        assert_eq!(decision.standings["pr-4"], Standing::Running, "the oldest push takes the free slot");
        assert_eq!(decision.standings["pr-2"], Standing::Queued { position: 1 });
        assert_eq!(decision.standings["pr-3"], Standing::Queued { position: 2 });
        assert!(decision.destroy.is_empty());
    }

    #[test]
    fn a_freed_slot_goes_to_the_first_in_the_queue() {
        let decision = decide(&policy(), &[pr(2, 100), pr(3, 200), pr(4, 300)], &running(&["pr-2"]), 400);
        assert_eq!(decision.standings["pr-3"], Standing::Running);
        assert_eq!(decision.standings["pr-4"], Standing::Queued { position: 1 });
    }

    #[test]
    fn a_preview_whose_pull_request_is_not_open_is_torn_down_and_only_that_one() {
        let decision = decide(&policy(), &[pr(2, 100)], &running(&["pr-1", "pr-2"]), 400);
        assert_eq!(decision.destroy.keys().collect::<Vec<_>>(), ["pr-1"]);
        assert!(decision.destroy["pr-1"].contains("closed"));
    }

    #[test]
    fn forks_get_no_preview_unless_allowed() {
        let mut fork = pr(5, 100);
        if let Some(pr) = fork.pull_request.as_mut() {
            pr.from_fork = true;
        }
        let refused = decide(&policy(), std::slice::from_ref(&fork), &running(&["pr-5"]), 200);
        assert!(
            matches!(&refused.standings["pr-5"], Standing::Refused { reason } if reason.contains("fork")),
            "{refused:?}"
        );
        assert!(refused.destroy.contains_key("pr-5"), "a running fork preview goes once the policy refuses it");
        let allowed = PreviewPolicy { allow_forks: true, ..policy() };
        assert!(decide(&allowed, &[fork], &running(&[]), 200).runs("pr-5"));
    }

    #[test]
    fn labels_when_set_select_the_pull_requests() {
        let labelled = PreviewPolicy { labels: vec!["preview".to_owned()], ..policy() };
        let mut with_label = pr(6, 100);
        if let Some(pr) = with_label.pull_request.as_mut() {
            pr.labels = vec!["preview".to_owned()];
            pr.approved_sha = Some(pr.head_sha.clone());
        }
        let decision = decide(&labelled, &[with_label, pr(7, 100)], &running(&[]), 200);
        assert!(decision.runs("pr-6"));
        assert!(matches!(&decision.standings["pr-7"], Standing::Refused { reason } if reason.contains("preview")));
    }

    #[test]
    fn a_label_approves_the_commit_it_was_added_on_and_a_later_push_waits_for_it_again() {
        let labels = vec!["preview".to_owned()];
        let policy = PreviewPolicy { labels: labels.clone(), ..policy() };
        let labelled = |sha: &str| PullRequest {
            labels: labels.clone(),
            head_sha: sha.to_owned(),
            ..pr(1, 0).pull_request.expect("a pull request")
        };
        // Labelled on A (the event says so): A is approved.
        let at_a = PullRequest { approved_sha: approval(&labels, None, &labelled("a"), true), ..labelled("a") };
        assert_eq!(at_a.approved_sha.as_deref(), Some("a"));
        assert_eq!(awaiting_approval(&policy, &at_a), None);
        // The author pushes B: the approval stays on A, and B waits.
        let at_b = PullRequest { approved_sha: approval(&labels, Some(&at_a), &labelled("b"), false), ..labelled("b") };
        assert_eq!(at_b.approved_sha.as_deref(), Some("a"));
        let waiting = awaiting_approval(&policy, &at_b).expect("waits");
        assert!(waiting.contains("awaiting approval") && waiting.contains("preview"), "{waiting}");
        let candidate = Candidate { pull_request: Some(at_b.clone()), ..pr(1, 0) };
        let decision = decide(&policy, &[candidate], &running(&["pr-1"]), 1);
        assert!(decision.destroy.contains_key("pr-1"), "the unapproved head does not keep running");
        // The label added again approves B.
        assert_eq!(approval(&labels, Some(&at_b), &labelled("b"), true).as_deref(), Some("b"));
        // The label removed forgets the approval.
        let unlabelled = PullRequest { labels: Vec::new(), ..labelled("b") };
        assert_eq!(approval(&labels, Some(&at_b), &unlabelled, true), None);
        // Seen labelled for the first time (railyard was down, or no webhook): the head it has then.
        assert_eq!(approval(&labels, None, &labelled("c"), false).as_deref(), Some("c"));
        // A trusted author's label covers every push.
        assert_eq!(awaiting_approval(&policy, &PullRequest { author_trusted: true, ..at_b.clone() }), None);
        let trusting = PreviewPolicy { trusted_authors: vec![at_b.author.clone()], ..policy.clone() };
        assert_eq!(awaiting_approval(&trusting, &at_b), None);
        // Without previews.labels, nothing waits.
        assert_eq!(awaiting_approval(&PreviewPolicy { labels: Vec::new(), ..policy }, &at_b), None);
    }

    #[test]
    fn no_push_within_the_ttl_expires_the_preview_and_a_new_push_brings_it_back() {
        let hour = 3_600_000;
        let decision = decide(&policy(), &[pr(8, 0)], &running(&["pr-8"]), hour + 1);
        assert_eq!(decision.standings["pr-8"], Standing::Expired);
        assert!(decision.destroy.contains_key("pr-8"));
        assert!(decide(&policy(), &[pr(8, hour)], &running(&[]), hour + 1).runs("pr-8"));
    }

    #[test]
    fn a_lowered_max_stops_the_newest_pushes() {
        let one = PreviewPolicy { max: 1, ..policy() };
        let decision = decide(&one, &[pr(1, 100), pr(2, 200)], &running(&["pr-1", "pr-2"]), 300);
        assert!(decision.runs("pr-1"));
        assert_eq!(decision.standings["pr-2"], Standing::Queued { position: 1 });
        assert!(decision.destroy.contains_key("pr-2"));
    }

    #[test]
    fn branch_patterns_match_within_and_across_segments() {
        let patterns = vec!["preview/*".to_owned(), "demo-**".to_owned()];
        assert!(branch_previewed(&patterns, "preview/login"));
        assert!(!branch_previewed(&patterns, "preview/a/b"));
        assert!(!branch_previewed(&patterns, "main"));
        assert!(branch_previewed(&patterns, "demo-x/y"));
    }
}
