//! The docs a newcomer walks (README.md, the mdBook in docs/, the examples' READMEs) stay true to the repository:
//! every relative link resolves, every page is in the book's summary, and every `railyard <command> --flag` they
//! show names a command that exists and flags that the command's `--help` lists.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// README.md, every docs/**/*.md and the examples' READMEs: (path from the repository's root, text).
fn documents() -> Vec<(PathBuf, String)> {
    let mut paths = vec![PathBuf::from("README.md"), PathBuf::from("examples/repo-layout/README.md")];
    let mut dirs = vec![root().join("docs")];
    while let Some(dir) = dirs.pop() {
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|error| panic!("{}: {error}", dir.display()));
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|extension| extension == "md") {
                paths.push(path.strip_prefix(root()).expect("under the root").to_path_buf());
            }
        }
    }
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(root().join(&path))
                .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
            (path, text)
        })
        .collect()
}

/// Markdown split into prose and code: (the prose outside fenced blocks with inline code removed, the lines of
/// fenced blocks, the inline code spans).
struct Parts {
    prose: String,
    block_lines: Vec<String>,
    inline_code: Vec<String>,
}

fn parts(markdown: &str) -> Parts {
    let (mut outside, mut block_lines, mut fenced) = (String::new(), Vec::new(), false);
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if fenced {
            block_lines.push(line.to_owned());
        } else {
            outside.push_str(line);
            outside.push('\n');
        }
    }
    // Inline code may wrap over a line break; odd pieces between backticks are code.
    let (mut prose, mut inline_code) = (String::new(), Vec::new());
    for (index, piece) in outside.split('`').enumerate() {
        if index % 2 == 0 {
            prose.push_str(piece);
        } else {
            inline_code.push(piece.split_whitespace().collect::<Vec<_>>().join(" "));
        }
    }
    Parts { prose, block_lines, inline_code }
}

/// The targets of the markdown links `[text](target)` in prose that point into the repository: no http(s) or mailto
/// links, no links to an anchor of the same page.
fn relative_links(markdown: &str) -> Vec<String> {
    let prose = parts(markdown).prose;
    let mut links = Vec::new();
    for (_, rest) in prose.match_indices("](").map(|(at, _)| prose.split_at(at + 2)) {
        let Some(end) = rest.find(')') else { continue };
        let target = rest[..end].split_whitespace().next().unwrap_or_default();
        let target = target.trim_start_matches('<').trim_end_matches('>');
        let external = ["http://", "https://", "mailto:"].iter().any(|scheme| target.starts_with(scheme));
        if !target.is_empty() && !external && !target.starts_with('#') {
            links.push(target.to_owned());
        }
    }
    links
}

/// The ids mdBook (and GitHub) give a page's headings: lower case, spaces as `-`, other punctuation dropped.
fn heading_ids(markdown: &str) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    let mut fenced = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced && line.starts_with('#') {
            let heading = line.trim_start_matches('#').trim();
            let id = heading
                .chars()
                .filter_map(|c| match c {
                    c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c.to_ascii_lowercase()),
                    c if c.is_whitespace() => Some('-'),
                    _ => None,
                })
                .collect();
            ids.insert(id);
        }
    }
    ids
}

/// A railyard command line the docs show: the words before the first argument that is not a plain word (the
/// command and perhaps its subcommand; `plan|apply` stands for both) and every `--flag` given.
#[derive(Debug, PartialEq)]
struct Shown {
    words: Vec<String>,
    flags: Vec<String>,
}

/// What follows `railyard ` (or `./target/release/railyard `, `cargo run -- `) on a shell line, after any leading
/// `VARIABLE=value` assignments and a `$ ` prompt; None for any other line.
fn railyard_arguments(line: &str) -> Option<&str> {
    let mut line = line.trim();
    line = line.strip_prefix("$ ").unwrap_or(line);
    while let Some((first, rest)) = line.split_once(' ') {
        let assignment = first.split_once('=').is_some_and(|(name, _)| {
            !name.is_empty() && name.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        });
        if !assignment {
            break;
        }
        line = rest.trim_start();
    }
    ["railyard ", "./target/release/railyard ", "cargo run -- "].iter().find_map(|program| line.strip_prefix(program))
}

fn is_word(token: &str) -> bool {
    token.starts_with(|c: char| c.is_ascii_lowercase())
        && token.chars().all(|c| c.is_ascii_lowercase() || c == '-' || c == '|')
}

/// Parses one shell line; it ends at a pipe, a redirection, `&&`, `;` or a comment. Placeholders (`<...>`,
/// `[DIR]`, `COMMIT`) are arguments, never checked.
fn parse_shown(line: &str) -> Option<Shown> {
    let arguments = railyard_arguments(line)?;
    let mut tokens = Vec::new();
    for token in arguments.split_whitespace() {
        let operator = ["|", "||", "&&", ";", "<", "\\"].contains(&token)
            || token.starts_with(['#', '>'])
            || token.starts_with("2>");
        if operator {
            break;
        }
        tokens.push(token);
    }
    let words: Vec<String> = tokens.iter().take_while(|token| is_word(token)).take(2).map(|w| w.to_string()).collect();
    if words.is_empty() && !tokens.first().is_some_and(|token| token.starts_with("--")) {
        return None;
    }
    let flags = tokens
        .iter()
        .map(|token| token.trim_start_matches(['[', '(']))
        .filter_map(|token| token.strip_prefix("--"))
        .map(|flag| flag.split(['=', ']', ')', ',', '|']).next().unwrap_or_default())
        .filter(|flag| {
            flag.starts_with(|c: char| c.is_ascii_lowercase())
                && flag.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
        .map(|flag| format!("--{flag}"))
        .collect();
    Some(Shown { words, flags })
}

/// Every railyard command line of a page: the lines of its code blocks (a line ending in `\` goes on) and its
/// inline code spans.
fn shown_commands(markdown: &str) -> Vec<Shown> {
    let Parts { block_lines, inline_code, .. } = parts(markdown);
    let mut lines = Vec::new();
    let mut joined = String::new();
    for line in block_lines {
        match line.trim_end().strip_suffix('\\') {
            Some(start) => joined.push_str(start),
            None => {
                joined.push_str(&line);
                lines.push(std::mem::take(&mut joined));
            }
        }
    }
    lines.extend(inline_code);
    lines.iter().map(String::as_str).filter_map(parse_shown).collect()
}

/// `railyard <path> --help`, asked once per command path.
fn help(cache: &mut BTreeMap<Vec<String>, Option<String>>, path: &[String]) -> Option<String> {
    cache
        .entry(path.to_vec())
        .or_insert_with(|| {
            let output = Command::new(env!("CARGO_BIN_EXE_railyard"))
                .args(path)
                .arg("--help")
                .env("NO_COLOR", "1")
                .output()
                .expect("railyard runs");
            output.status.success().then(|| String::from_utf8_lossy(&output.stdout).into_owned())
        })
        .clone()
}

/// Whether `text` holds `flag` as a whole flag (`--env` is not in `--env-file`).
fn mentions_flag(text: &str, flag: &str) -> bool {
    text.match_indices(flag)
        .any(|(at, _)| !text[at + flag.len()..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '-'))
}

#[test]
fn every_relative_link_resolves() {
    let mut broken = Vec::new();
    for (document, text) in documents() {
        let dir = document.parent().unwrap_or(Path::new(""));
        for link in relative_links(&text) {
            let (path, anchor) = link.split_once('#').unwrap_or((link.as_str(), ""));
            let target = if path.is_empty() { document.clone() } else { dir.join(path) };
            // Stay inside the repository: `..` may not climb above its root.
            let depth = target.components().try_fold(0i32, |depth, part| match part {
                Component::ParentDir => (depth > 0).then_some(depth - 1),
                Component::Normal(_) => Some(depth + 1),
                _ => Some(depth),
            });
            if depth.is_none() || !root().join(&target).exists() {
                broken.push(format!("{}: {link} (no {})", document.display(), target.display()));
                continue;
            }
            if !anchor.is_empty() && target.extension().is_some_and(|extension| extension == "md") {
                let page = std::fs::read_to_string(root().join(&target)).unwrap_or_default();
                if !heading_ids(&page).contains(anchor) {
                    broken.push(format!(
                        "{}: {link} (no heading #{anchor} in {})",
                        document.display(),
                        target.display()
                    ));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn every_page_of_the_book_is_in_its_summary() {
    let summary = std::fs::read_to_string(root().join("docs/SUMMARY.md")).expect("docs/SUMMARY.md");
    let listed: BTreeSet<String> = relative_links(&summary).into_iter().collect();
    let book = std::fs::read_to_string(root().join("docs/book.toml")).expect("docs/book.toml");
    assert!(book.contains("title = \"railyard\"") && book.contains("src = \".\""), "{book}");
    for (document, _) in documents() {
        let Ok(page) = document.strip_prefix("docs") else { continue };
        let page = page.to_string_lossy().into_owned();
        assert!(page == "SUMMARY.md" || listed.contains(&page), "docs/{page} is not in docs/SUMMARY.md");
    }
}

#[test]
fn every_command_and_flag_shown_exists() {
    let mut cache = BTreeMap::new();
    let mut wrong = Vec::new();
    let mut checked = 0;
    for (document, text) in documents() {
        for shown in shown_commands(&text) {
            let firsts: Vec<&str> = shown.words.first().map_or(vec![""], |word| word.split('|').collect());
            for first in firsts {
                let mut path: Vec<String> = if first.is_empty() { vec![] } else { vec![first.to_owned()] };
                let Some(mut usage) = help(&mut cache, &path) else {
                    wrong.push(format!("{}: `railyard {first}` is not a command", document.display()));
                    continue;
                };
                // A second word is a subcommand only where the command has subcommands.
                if let Some(second) = shown.words.get(1)
                    && usage.contains("\nCommands:\n")
                {
                    path.push(second.clone());
                    let Some(sub) = help(&mut cache, &path) else {
                        wrong.push(format!("{}: `railyard {}` is not a command", document.display(), path.join(" ")));
                        continue;
                    };
                    usage = sub;
                }
                for flag in &shown.flags {
                    checked += 1;
                    if !mentions_flag(&usage, flag) {
                        let command = path.join(" ");
                        wrong.push(format!("{}: `railyard {command}` has no {flag}", document.display()));
                    }
                }
            }
        }
    }
    assert!(wrong.is_empty(), "the docs show commands or flags that do not exist:\n{}", wrong.join("\n"));
    assert!(checked >= 30, "only {checked} flags found in the docs: is the parser still finding them?");
}

#[test]
fn the_parser_reads_shell_lines_as_a_user_types_them() {
    let shown = |line: &str| parse_shown(line).map(|s| (s.words, s.flags));
    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|item| item.to_string()).collect()
    }
    assert_eq!(
        shown("RAILYARD_API_TOKEN=… railyard rollback --env production 4f2a9c1   # shows the plan --not-a-flag"),
        Some((strings(&["rollback"]), strings(&["--env"])))
    );
    assert_eq!(
        shown("railyard plan [DIR] [--env production] [--output text|json] [--detailed-exitcode]"),
        Some((strings(&["plan"]), strings(&["--env", "--output", "--detailed-exitcode"])))
    );
    assert_eq!(
        shown("railyard export kubernetes path/to/repo --env=staging | kubectl apply -f -"),
        Some((strings(&["export", "kubernetes"]), strings(&["--env"])))
    );
    assert_eq!(
        shown("cargo run -- schema --settings > schemas/settings.schema.json").map(|s| s.1),
        Some(strings(&["--settings"]))
    );
    assert_eq!(shown("railyard --help"), Some((vec![], strings(&["--help"]))));
    assert_eq!(shown("railyard <command> --<flag>"), None);
    assert_eq!(shown("railyard.yaml          kind: Project"), None);
    assert_eq!(shown("git commit -m 'railyard --yes'"), None);
}

#[test]
fn the_parser_finds_code_links_and_continued_lines() {
    let page = "See [the CLI](cli.md#cli) and [Argo](https://argo-cd.readthedocs.io) or [up](#top).\n\
                A name `[a-z]([a-z0-9])?` is not a link; `railyard plan|apply --repo URL` is a command.\n\
                ```sh\n\
                railyard serve --repo https://example.com/config.git \\\n  \
                --api-token-file token\n\
                ```\n";
    assert_eq!(relative_links(page), vec!["cli.md#cli".to_owned()]);
    let commands = shown_commands(page);
    assert_eq!(commands.len(), 2, "{commands:?}");
    assert_eq!(commands[0].flags, vec!["--repo", "--api-token-file"]);
    assert_eq!(commands[1].words, vec!["plan|apply"]);
    assert!(heading_ids("## The daemon: `railyard serve`\n").contains("the-daemon-railyard-serve"));
    assert!(heading_ids("## Secrets in git (SOPS + age)\n").contains("secrets-in-git-sops--age"));
    assert!(mentions_flag("  --env <ENV>\n", "--env") && !mentions_flag("  --env-file <F>\n", "--env"));
}
