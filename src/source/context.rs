//! Build contexts read from the repository: what the model needs to know of one (that it is a directory, holds its
//! Dockerfile, has no symlink leading out of it, fits the size limit, and a digest of its content) and the tar
//! archive a build is sent. A git context comes straight from the commit's tree (no worktree), a plain directory's
//! from disk; both are listed as [`Entry`]s first, so that the rules and the archive are one piece of code.

use std::collections::HashMap;

use crate::model::build::{ContextFacts, ContextRequest};

/// One entry of a context, by its path inside the context (`/`-separated).
#[derive(Debug, Clone)]
pub(super) struct Entry<Id> {
    pub path: String,
    pub kind: EntryKind<Id>,
}

#[derive(Debug, Clone)]
pub(super) enum EntryKind<Id> {
    Dir,
    File { size: u64, executable: bool, id: Id },
    Symlink { target: String },
}

/// The facts of a listed context: its Dockerfile, symlinks leading out, its size; `digest` names its content.
pub(super) fn facts_of<Id>(
    request: &ContextRequest,
    entries: &[Entry<Id>],
    digest: String,
    limit: u64,
) -> ContextFacts {
    let bytes: u64 = entries
        .iter()
        .map(|entry| match entry.kind {
            EntryKind::File { size, .. } => size,
            _ => 0,
        })
        .sum();
    if bytes > limit {
        return ContextFacts::TooLarge { bytes, limit };
    }
    let links: HashMap<&str, &str> = entries
        .iter()
        .filter_map(|entry| match &entry.kind {
            EntryKind::Symlink { target } => Some((entry.path.as_str(), target.as_str())),
            _ => None,
        })
        .collect();
    for (link, target) in &links {
        if resolve(&links, link).is_none() {
            return ContextFacts::SymlinkLeaves { link: (*link).to_owned(), target: (*target).to_owned() };
        }
    }
    let dockerfile = resolve(&links, request.dockerfile_in_context());
    let is_file =
        |path: &str| entries.iter().any(|entry| entry.path == path && matches!(entry.kind, EntryKind::File { .. }));
    if !dockerfile.is_some_and(|path| is_file(&path)) {
        return ContextFacts::NoDockerfile;
    }
    let files = entries.iter().filter(|entry| matches!(entry.kind, EntryKind::File { .. })).count();
    ContextFacts::Found { digest, bytes, files: files as u64 }
}

/// Symlinks followed at most, in all, to resolve one path (a loop is refused as leaving).
const MAX_LINK_HOPS: u32 = 16;

/// Where `path` of the context leads once every symlink on the way is followed (links through links, `..` after
/// a link); `None` when it leaves the context, is absolute, or loops.
fn resolve(links: &HashMap<&str, &str>, path: &str) -> Option<String> {
    let mut hops = 0;
    walk(links, Vec::new(), path, &mut hops).map(|parts| parts.join("/"))
}

fn walk(links: &HashMap<&str, &str>, mut parts: Vec<String>, path: &str, hops: &mut u32) -> Option<Vec<String>> {
    if path.starts_with('/') {
        return None;
    }
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            name => {
                parts.push(name.to_owned());
                if let Some(target) = links.get(parts.join("/").as_str()) {
                    *hops += 1;
                    if *hops > MAX_LINK_HOPS {
                        return None;
                    }
                    parts.pop();
                    parts = walk(links, parts, target, hops)?;
                }
            }
        }
    }
    Some(parts)
}

/// The tar archive of a context: every entry with fixed owners and times, so that the same content makes the same
/// archive; `read` gives a file's bytes.
pub(super) fn archive<Id>(
    entries: &[Entry<Id>],
    mut read: impl FnMut(&Id) -> Result<Vec<u8>, String>,
) -> Result<Vec<u8>, String> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        let written = match &entry.kind {
            EntryKind::Dir => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                builder.append_data(&mut header, format!("{}/", entry.path), std::io::empty())
            }
            EntryKind::File { executable, id, .. } => {
                let bytes = read(id)?;
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(if *executable { 0o755 } else { 0o644 });
                header.set_size(bytes.len() as u64);
                builder.append_data(&mut header, &entry.path, bytes.as_slice())
            }
            EntryKind::Symlink { target } => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_mode(0o777);
                header.set_size(0);
                builder.append_link(&mut header, &entry.path, target)
            }
        };
        written.map_err(|error| format!("cannot add `{}` to the build's archive: {error}", entry.path))?;
    }
    builder.into_inner().map_err(|error| format!("cannot finish the build's archive: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, size: u64) -> Entry<u32> {
        Entry { path: path.into(), kind: EntryKind::File { size, executable: false, id: 0 } }
    }

    fn link(path: &str, target: &str) -> Entry<u32> {
        Entry { path: path.into(), kind: EntryKind::Symlink { target: target.into() } }
    }

    fn request() -> ContextRequest {
        ContextRequest { context: "services/web".into(), dockerfile: "services/web/Dockerfile".into() }
    }

    #[test]
    fn a_context_is_found_with_its_dockerfile_and_refused_for_each_rule() {
        let found = facts_of(&request(), &[file("Dockerfile", 10), file("app.sh", 5)], "d".into(), 100);
        assert_eq!(found, ContextFacts::Found { digest: "d".into(), bytes: 15, files: 2 });
        let linked = facts_of(
            &request(),
            &[link("Dockerfile", "docker/Dockerfile"), file("docker/Dockerfile", 3)],
            "d".into(),
            100,
        );
        assert!(matches!(linked, ContextFacts::Found { .. }), "{linked:?}");
        assert_eq!(facts_of(&request(), &[file("app.sh", 5)], "d".into(), 100), ContextFacts::NoDockerfile);
        assert_eq!(
            facts_of(&request(), &[file("Dockerfile", 10), link("conf/key", "../../../etc/passwd")], "d".into(), 100),
            ContextFacts::SymlinkLeaves { link: "conf/key".into(), target: "../../../etc/passwd".into() }
        );
        assert!(matches!(
            facts_of(&request(), &[file("Dockerfile", 10), link("abs", "/etc/passwd")], "d".into(), 100),
            ContextFacts::SymlinkLeaves { .. }
        ));
        // Through another link: `up` leads out, so `esc -> up/x` does too, although it reads as inside.
        let through = [file("Dockerfile", 10), link("up", ".."), link("esc", "up/x")];
        assert!(matches!(facts_of(&request(), &through, "d".into(), 100), ContextFacts::SymlinkLeaves { .. }));
        let looping = [file("Dockerfile", 10), link("a", "b"), link("b", "a")];
        assert!(matches!(facts_of(&request(), &looping, "d".into(), 100), ContextFacts::SymlinkLeaves { .. }));
        let inside =
            [file("conf/app.yaml", 1), link("lib", "conf"), link("app", "lib/app.yaml"), file("Dockerfile", 1)];
        assert!(matches!(facts_of(&request(), &inside, "d".into(), 100), ContextFacts::Found { .. }));
        assert_eq!(
            facts_of(&request(), &[file("Dockerfile", 60), file("big", 50)], "d".into(), 100),
            ContextFacts::TooLarge { bytes: 110, limit: 100 }
        );
    }

    #[test]
    fn the_archive_is_the_same_for_the_same_content() {
        let entries = vec![
            Entry { path: "bin".into(), kind: EntryKind::Dir },
            Entry { path: "bin/run".into(), kind: EntryKind::File { size: 2, executable: true, id: 1 } },
            link("run", "bin/run"),
        ];
        let read = |_: &u32| Ok(b"hi".to_vec());
        let first = archive(&entries, read).expect("archive");
        assert_eq!(first, archive(&entries, read).expect("archive"));
        let mut names = Vec::new();
        let mut reader = tar::Archive::new(first.as_slice());
        for entry in reader.entries().expect("entries") {
            let entry = entry.expect("entry");
            names.push((entry.path().expect("path").display().to_string(), entry.header().mode().expect("mode")));
        }
        assert_eq!(names, vec![("bin/".into(), 0o755), ("bin/run".into(), 0o755), ("run".into(), 0o777)]);
    }
}
