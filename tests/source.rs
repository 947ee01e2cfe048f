//! The git source against real repositories made with the `git` program: one fetch of every branch, reading a
//! branch from the mirror without network, pruning of deleted branches, force pushes, and the directory source.

use crate::support;

use std::path::Path;
use std::time::Duration;

use railyard::model::FileContent;
use railyard::source::{DIRECTORY_BRANCH, Fetched, GitError, GitSource, Snapshot, Source};
use support::git;
use tempfile::TempDir;

/// A config repository on `main` with a Project document, and a source following it through a mirror of its own.
struct Repo {
    work: TempDir,
    state: TempDir,
}

impl Repo {
    fn new() -> Repo {
        let repo = Repo { work: tempfile::tempdir().expect("tempdir"), state: tempfile::tempdir().expect("tempdir") };
        git(repo.dir(), &["init", "-q", "-b", "main"]);
        repo.commit_file("railyard.yaml", "kind: Project\nname: shop\n", "project");
        repo
    }

    fn dir(&self) -> &Path {
        self.work.path()
    }

    /// Writes `path` on the checked-out branch, commits it and returns the commit's sha.
    fn commit_file(&self, path: &str, text: &str, message: &str) -> String {
        std::fs::write(self.dir().join(path), text).expect("write");
        git(self.dir(), &["add", "-A"]);
        git(self.dir(), &["commit", "-q", "-m", message]);
        git(self.dir(), &["rev-parse", "HEAD"])
    }

    fn source(&self) -> GitSource {
        GitSource {
            url: format!("file://{}", self.dir().display()),
            branch: "main".to_owned(),
            mirror: self.state.path().join("mirror.git"),
            token: None,
            timeout: Duration::from_secs(30),
        }
    }

    fn fetch_all(&self) -> Snapshot {
        self.source().fetch_all().unwrap_or_else(|error| panic!("fetch_all: {error}"))
    }

    fn read(&self, snapshot: &Snapshot, branch: &str) -> Fetched {
        self.source().read_branch(snapshot, branch).unwrap_or_else(|error| panic!("read_branch {branch}: {error}"))
    }

    /// The branches the mirror holds, as `git` sees them.
    fn mirrored_branches(&self) -> Vec<String> {
        let mirror = self.state.path().join("mirror.git");
        git(&mirror, &["for-each-ref", "--format=%(refname:strip=3)", "refs/remotes/origin/"])
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

fn text_of(fetched: &Fetched, path: &str) -> String {
    let file = fetched.files.iter().find(|file| file.path == path);
    match file.map(|file| &file.content) {
        Some(FileContent::Bytes(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
        other => panic!("{path} in {}: {other:?}", fetched.commit.sha),
    }
}

fn branches(snapshot: &Snapshot) -> Vec<&str> {
    snapshot.branches.keys().map(String::as_str).collect()
}

#[test]
fn one_fetch_brings_every_branch_and_each_reads_its_own_commit() {
    let repo = Repo::new();
    let main = repo.commit_file("web.yaml", "kind: App\nname: web\nimage: web:main\n", "web on main");
    git(repo.dir(), &["checkout", "-q", "-b", "staging"]);
    let staging = repo.commit_file("web.yaml", "kind: App\nname: web\nimage: web:staging\n", "web on staging");
    git(repo.dir(), &["checkout", "-q", "-b", "feature/login", "main"]);
    let feature = repo.commit_file("notes.txt", "not config\n", "notes");

    let snapshot = repo.fetch_all();
    assert_eq!(branches(&snapshot), ["feature/login", "main", "staging"]);
    assert_eq!(snapshot.branches["main"], main);
    assert_eq!(snapshot.branches["staging"], staging);
    assert_eq!(snapshot.branches["feature/login"], feature);

    let on_staging = repo.read(&snapshot, "staging");
    assert_eq!(on_staging.commit.sha, staging);
    assert_eq!(on_staging.commit.summary, "web on staging");
    assert_eq!(on_staging.commit.author, "Railyard Test");
    assert_eq!(text_of(&on_staging, "web.yaml"), "kind: App\nname: web\nimage: web:staging\n");
    let on_main = repo.read(&snapshot, "main");
    assert_eq!(on_main.commit.sha, main);
    assert_eq!(text_of(&on_main, "web.yaml"), "kind: App\nname: web\nimage: web:main\n");
    // Only config files are read: the feature branch's notes are not among them.
    let paths: Vec<_> = repo.read(&snapshot, "feature/login").files.into_iter().map(|file| file.path).collect();
    assert_eq!(paths, ["railyard.yaml", "web.yaml"]);

    // The one-branch fetch keeps working on a mirror that fetch_all filled.
    assert_eq!(repo.source().fetch().map(|fetched| fetched.commit.sha).ok(), Some(main));
}

#[test]
fn reading_a_branch_needs_no_network() {
    let repo = Repo::new();
    let snapshot = repo.fetch_all();
    let moved = repo.dir().with_extension("moved");
    std::fs::rename(repo.dir(), &moved).expect("move the remote away");
    let read = repo.source().read_branch(&snapshot, "main");
    std::fs::rename(&moved, repo.dir()).expect("move the remote back");
    assert_eq!(read.map(|fetched| fetched.commit.sha).ok(), snapshot.branches.get("main").cloned());
}

#[test]
fn a_branch_deleted_on_the_remote_disappears_from_the_next_snapshot_and_the_mirror() {
    let repo = Repo::new();
    git(repo.dir(), &["branch", "staging"]);
    git(repo.dir(), &["branch", "old-feature"]);
    assert_eq!(branches(&repo.fetch_all()), ["main", "old-feature", "staging"]);
    assert_eq!(repo.mirrored_branches(), ["main", "old-feature", "staging"]);

    git(repo.dir(), &["branch", "-D", "old-feature"]);
    let snapshot = repo.fetch_all();
    assert_eq!(branches(&snapshot), ["main", "staging"]);
    assert_eq!(repo.mirrored_branches(), ["main", "staging"]);
    let error = repo.source().read_branch(&snapshot, "old-feature").err();
    assert!(
        matches!(&error, Some(GitError::NoBranch { branch, existing, .. })
            if branch == "old-feature" && existing == &["main", "staging"]),
        "{error:?}"
    );
}

#[test]
fn a_missing_branch_names_the_branches_that_exist() {
    let repo = Repo::new();
    git(repo.dir(), &["branch", "staging"]);
    let snapshot = repo.fetch_all();
    let error = repo.source().read_branch(&snapshot, "stagign").err().map(|error| error.to_string());
    let url = format!("file://{}", repo.dir().display());
    assert_eq!(
        error.as_deref(),
        Some(
            format!(
                "branch `stagign` does not exist in {url}; it has `main`, `staging`; pass one of them with --branch \
                 (RAILYARD_BRANCH) or as the environment's `branch` in the Project, or push the branch"
            )
            .as_str()
        )
    );
}

#[test]
fn a_force_pushed_branch_is_read_at_its_new_commit_and_old_snapshots_still_read() {
    let repo = Repo::new();
    git(repo.dir(), &["checkout", "-q", "-b", "staging"]);
    let before = repo.commit_file("web.yaml", "kind: App\nname: web\nimage: web:1\n", "web 1");
    let old_snapshot = repo.fetch_all();

    // Rewrite staging's history: the old commit is no ancestor of the new one.
    git(repo.dir(), &["reset", "-q", "--hard", "main"]);
    let after = repo.commit_file("web.yaml", "kind: App\nname: web\nimage: web:2\n", "web 2, rewritten");
    git(repo.dir(), &["reflog", "expire", "--expire=now", "--all"]);
    git(repo.dir(), &["gc", "-q", "--prune=now"]);
    assert_ne!(before, after);

    let snapshot = repo.fetch_all();
    assert_eq!(snapshot.branches["staging"], after);
    assert_eq!(text_of(&repo.read(&snapshot, "staging"), "web.yaml"), "kind: App\nname: web\nimage: web:2\n");
    // A snapshot taken before the force push still reads what it saw (the mirror keeps the objects).
    assert_eq!(text_of(&repo.read(&old_snapshot, "staging"), "web.yaml"), "kind: App\nname: web\nimage: web:1\n");
}

#[test]
fn a_repository_without_branches_is_an_empty_snapshot() {
    let work = tempfile::tempdir().expect("tempdir");
    let state = tempfile::tempdir().expect("tempdir");
    git(work.path(), &["init", "-q", "-b", "main"]);
    let source = GitSource {
        url: format!("file://{}", work.path().display()),
        branch: "main".to_owned(),
        mirror: state.path().join("mirror.git"),
        token: None,
        timeout: Duration::from_secs(30),
    };
    let snapshot = source.fetch_all().unwrap_or_else(|error| panic!("fetch_all: {error}"));
    assert_eq!(snapshot, Snapshot::default());
    let error = source.read_branch(&snapshot, "main").err().map(|error| error.to_string()).unwrap_or_default();
    assert!(error.contains("the repository has no branches yet; push one"), "{error}");
}

#[test]
fn a_directory_is_one_pseudo_branch_that_every_name_reads() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("railyard.yaml"), "kind: Project\nname: shop\n").expect("write");
    let source = Source::Dir(dir.path().to_owned());
    let snapshot = source.fetch_all().unwrap_or_else(|error| panic!("fetch_all: {error}"));
    assert_eq!(branches(&snapshot), [DIRECTORY_BRANCH]);
    let digest = snapshot.branches[DIRECTORY_BRANCH].clone();
    assert!(digest.starts_with("dir-"), "{digest}");
    assert_eq!(snapshot.commit_of("staging"), Some(digest.as_str()));
    for branch in ["main", "staging"] {
        let fetched = source.read_branch(&snapshot, branch).unwrap_or_else(|error| panic!("read {branch}: {error}"));
        assert_eq!(fetched.commit.sha, digest);
        assert_eq!(text_of(&fetched, "railyard.yaml"), "kind: Project\nname: shop\n");
    }
    std::fs::write(dir.path().join("railyard.yaml"), "kind: Project\nname: shop2\n").expect("write");
    let changed = source.fetch_all().unwrap_or_else(|error| panic!("fetch_all: {error}"));
    assert_ne!(changed.commit_of("main"), Some(digest.as_str()));
}

#[test]
fn a_git_snapshot_knows_only_its_branches() {
    let repo = Repo::new();
    let snapshot = repo.fetch_all();
    assert_eq!(snapshot.commit_of("main"), snapshot.branches.get("main").map(String::as_str));
    assert_eq!(snapshot.commit_of("staging"), None);
}

#[test]
#[ignore = "measurement"]
fn measure_fetch_cost() {
    let repo = Repo::new();
    for i in 0..20 {
        repo.commit_file(&format!("app{i}.yaml"), &format!("kind: App\nname: app{i}\nimage: a:{i}\n"), "app");
    }
    git(repo.dir(), &["checkout", "-q", "-b", "staging"]);
    repo.commit_file("app0.yaml", "kind: App\nname: app0\nimage: a:staging\n", "staging");
    git(repo.dir(), &["checkout", "-q", "main"]);
    let median = |mut times: Vec<Duration>| {
        times.sort();
        times[times.len() / 2]
    };
    let runs = 9;
    let mut cold_one = Vec::new();
    let mut cold_all = Vec::new();
    let mut warm_one = Vec::new();
    let mut warm_all = Vec::new();
    let mut all_read2 = Vec::new();
    for _ in 0..runs {
        let a = repo.source();
        let _ = std::fs::remove_dir_all(&a.mirror);
        let t = std::time::Instant::now();
        a.fetch().expect("fetch");
        cold_one.push(t.elapsed());
        let t = std::time::Instant::now();
        a.fetch().expect("fetch");
        warm_one.push(t.elapsed());
        let _ = std::fs::remove_dir_all(&a.mirror);
        let t = std::time::Instant::now();
        a.fetch_all().expect("fetch_all");
        cold_all.push(t.elapsed());
        let t = std::time::Instant::now();
        let s = a.fetch_all().expect("fetch_all");
        warm_all.push(t.elapsed());
        let t = std::time::Instant::now();
        a.read_branch(&s, "main").expect("read");
        a.read_branch(&s, "staging").expect("read");
        all_read2.push(t.elapsed());
    }
    println!(
        "cold fetch {:?} fetch_all {:?}; warm fetch {:?} fetch_all {:?}; read_branch x2 {:?}",
        median(cold_one),
        median(cold_all),
        median(warm_one),
        median(warm_all),
        median(all_read2)
    );
}

/// Commits `count` paths under `bulk/` that all name one blob of `bytes` bytes, with git's plumbing (a hostile tree
/// costs its author nothing); returns the commit's sha.
fn commit_one_blob_many_times(repo: &Repo, count: usize, bytes: usize) -> String {
    use std::io::Write;
    let blob_file = repo.state.path().join("blob.yaml");
    std::fs::write(&blob_file, format!("# {}\n", "x".repeat(bytes.saturating_sub(3)))).expect("blob");
    let blob = git(repo.dir(), &["hash-object", "-w", &blob_file.to_string_lossy()]);
    let entries: String = (0..count).map(|n| format!("100644 blob {blob}\tbulk/f{n:05}.yaml\n")).collect();
    let mut update = std::process::Command::new("git")
        .args(["update-index", "--index-info"])
        .current_dir(repo.dir())
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("git runs");
    update.stdin.take().expect("stdin").write_all(entries.as_bytes()).expect("index info");
    assert!(update.wait().expect("git exits").success());
    git(repo.dir(), &["commit", "-q", "-m", "many paths, one blob"]);
    git(repo.dir(), &["rm", "-q", "-r", "--cached", "bulk"]);
    git(repo.dir(), &["commit", "-q", "-m", "back to normal"]);
    git(repo.dir(), &["rev-parse", "HEAD~1"])
}

/// Issue 21, attack 6: a tree of many paths naming one blob must not be read that many times: a commit is read up to
/// 20,000 config files and 64 MiB in all, and beyond that is a clear error, not a crash.
#[test]
fn a_commit_is_read_within_a_bound_of_files_and_bytes() {
    let repo = Repo::new();
    let many_files = commit_one_blob_many_times(&repo, railyard::model::MAX_CONFIG_FILES + 1, 100);
    let many_bytes = commit_one_blob_many_times(&repo, 70, 1_000_000);
    git(repo.dir(), &["branch", "many-files", &many_files]);
    git(repo.dir(), &["branch", "many-bytes", &many_bytes]);
    let snapshot = repo.fetch_all();
    let too_many = repo.source().read_branch(&snapshot, "many-files").map(|_| ()).expect_err("refused");
    assert!(too_many.to_string().contains("more than 20000 config files"), "{too_many}");
    let too_big = repo.source().read_branch(&snapshot, "many-bytes").map(|_| ()).expect_err("refused");
    assert!(too_big.to_string().contains("more than 64 MiB"), "{too_big}");
    assert!(repo.source().read_branch(&snapshot, "main").is_ok(), "main, back to normal, reads");
}
