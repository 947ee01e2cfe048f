//! Turns the files of a config repository into typed documents, collecting every problem as a [`Diagnostic`].
//!
//! Each file is split into its YAML documents first (by the parser's own document events, so `---` inside a block
//! scalar is not mistaken for a separator), then each document is read as the type its `kind` names.

use std::sync::Arc;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_saphyr::granit_parser::{Event, Parser};

use super::kinds::{App, Domain, Job, Kind, Located, Project, ScalingRule};
use super::{Diagnostic, FileContent, RepoFile};

/// The largest config file railyard reads, so that a hostile repository cannot exhaust memory.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// The most config files (`*.yaml`, `*.yml`) one commit may hold, and the most bytes read from all of them: a tree of
/// 20,000 paths naming one 1 MiB blob must not be read 20,000 times.
pub const MAX_CONFIG_FILES: usize = 20_000;
pub const MAX_CONFIG_BYTES: u64 = 64 << 20;

/// What a source may still read of one commit; each file read is taken from it.
#[derive(Debug, Clone)]
pub struct ReadBudget {
    files: usize,
    bytes: u64,
}

impl Default for ReadBudget {
    fn default() -> Self {
        ReadBudget { files: MAX_CONFIG_FILES, bytes: MAX_CONFIG_BYTES }
    }
}

impl ReadBudget {
    /// Why a commit whose config files add up to more than [`MAX_CONFIG_BYTES`] is not read.
    pub fn too_many_bytes() -> String {
        format!(
            "the commit's config files add up to more than {} MiB; railyard reads at most that much of one commit: \
             remove large or repeated files",
            MAX_CONFIG_BYTES >> 20
        )
    }

    /// Why a commit with more than [`MAX_CONFIG_FILES`] config files is not read.
    pub fn too_many_files() -> String {
        format!(
            "the commit holds more than {MAX_CONFIG_FILES} config files (*.yaml, *.yml); railyard reads at most that \
             many: move the others under a hidden folder or out of the config repository"
        )
    }

    /// Takes one file as the source read it (only bytes read count); the error says which limit the commit went
    /// over and what to do.
    pub fn take(&mut self, content: &FileContent) -> Result<(), String> {
        let bytes = match content {
            FileContent::Bytes(bytes) => bytes.len() as u64,
            FileContent::TooLarge { .. } | FileContent::Rejected { .. } => 0,
        };
        self.files = self.files.checked_sub(1).ok_or_else(ReadBudget::too_many_files)?;
        self.bytes = self.bytes.checked_sub(bytes).ok_or_else(ReadBudget::too_many_bytes)?;
        Ok(())
    }
}

/// A document together with the file it came from.
#[derive(Debug, Clone)]
pub struct Sourced<T> {
    pub file: Arc<str>,
    /// Line of the file where the document's text starts, minus one.
    pub line_offset: u64,
    pub doc: T,
}

impl<T> Sourced<T> {
    /// A diagnostic pointing at `at`, a value inside this document.
    pub fn error_at<V>(&self, at: &Located<V>, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            file: self.file.to_string(),
            line: at.referenced.line() + self.line_offset,
            column: at.referenced.column(),
            message: message.into(),
        }
    }

    /// `file:line` of a value inside this document, for messages that refer to another place.
    pub fn place_of<V>(&self, at: &Located<V>) -> String {
        format!("{}:{}", self.file, at.referenced.line() + self.line_offset)
    }
}

/// Every document of the repository, by kind, before cross-document validation.
#[derive(Debug, Default, Clone)]
pub struct Documents {
    pub projects: Vec<Sourced<Project>>,
    pub apps: Vec<Sourced<App>>,
    pub domains: Vec<Sourced<Domain>>,
    pub scaling_rules: Vec<Sourced<ScalingRule>>,
    pub jobs: Vec<Sourced<Job>>,
}

/// Repositories with fewer files than this per core are read on one thread.
const FILES_PER_WORKER: usize = 64;

/// Reads every document of every file; problems are appended to `diagnostics` and the faulty document skipped.
/// Large repositories are read on every core: files are independent, and parsing is most of the load time.
pub fn read_documents(files: &[RepoFile], diagnostics: &mut Vec<Diagnostic>) -> Documents {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let workers = cores.min(files.len() / FILES_PER_WORKER).max(1);
    if workers == 1 {
        return read_files(files, diagnostics);
    }
    let parts: Vec<(Documents, Vec<Diagnostic>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = files
            .chunks(files.len().div_ceil(workers))
            .map(|part| {
                scope.spawn(move || {
                    let mut found = Vec::new();
                    (read_files(part, &mut found), found)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
            .collect()
    });
    let mut documents = Documents::default();
    for (part, found) in parts {
        documents.append(part);
        diagnostics.extend(found);
    }
    documents
}

fn read_files(files: &[RepoFile], diagnostics: &mut Vec<Diagnostic>) -> Documents {
    let mut documents = Documents::default();
    for file in files {
        let name: Arc<str> = Arc::from(file.path.as_str());
        match file_text(file) {
            // SOPS-encrypted secrets files live in the repository beside the config; the secret source reads them.
            Ok(text) if is_sops_file(&file.path, text) => {}
            Ok(text) => read_file(&name, text, &mut documents, diagnostics),
            Err(diagnostic) => diagnostics.push(diagnostic),
        }
    }
    documents
}

/// sops's own files: its configuration `.sops.yaml`, and documents named `*.sops.yaml` or carrying a top-level
/// `sops:` block.
fn is_sops_file(path: &str, text: &str) -> bool {
    path == ".sops.yaml"
        || path.ends_with(".sops.yaml")
        || path.ends_with(".sops.yml")
        || text.lines().any(|line| line.trim_end() == "sops:")
}

impl Documents {
    fn append(&mut self, mut other: Documents) {
        self.projects.append(&mut other.projects);
        self.apps.append(&mut other.apps);
        self.domains.append(&mut other.domains);
        self.scaling_rules.append(&mut other.scaling_rules);
        self.jobs.append(&mut other.jobs);
    }
}

fn file_text(file: &RepoFile) -> Result<&str, Diagnostic> {
    let at_start = |message: String| Diagnostic::new(&file.path, 1, 1, message);
    match &file.content {
        FileContent::TooLarge { size } => Err(at_start(format!(
            "file is {size} bytes, over the limit of {MAX_FILE_BYTES} bytes (1 MiB); split it into several files"
        ))),
        FileContent::Rejected { reason } => Err(at_start(reason.clone())),
        FileContent::Bytes(bytes) if bytes.len() as u64 > MAX_FILE_BYTES => Err(at_start(format!(
            "file is {} bytes, over the limit of {MAX_FILE_BYTES} bytes (1 MiB); split it into several files",
            bytes.len()
        ))),
        FileContent::Bytes(bytes) => std::str::from_utf8(bytes).map_err(|error| {
            let valid = &bytes[..error.valid_up_to()];
            let line = valid.iter().filter(|b| **b == b'\n').count() as u64 + 1;
            let line_start = valid.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
            let column = String::from_utf8_lossy(&valid[line_start..]).chars().count() as u64 + 1;
            Diagnostic::new(&file.path, line, column, "file is not valid UTF-8; save it as UTF-8 text".to_owned())
        }),
    }
}

fn read_file(file: &Arc<str>, text: &str, documents: &mut Documents, diagnostics: &mut Vec<Diagnostic>) {
    let slices = if !has_document_markers(text) {
        vec![(0, text)]
    } else {
        match split_documents(file, text) {
            Ok(slices) => slices,
            Err(diagnostic) => {
                diagnostics.push(diagnostic);
                return;
            }
        }
    };
    for (line_offset, slice) in slices {
        if let Err(diagnostic) = read_document(file, line_offset, slice, documents, diagnostics) {
            diagnostics.push(diagnostic);
        }
    }
}

/// Without `---`, `...` or a directive at the start of a line, a YAML stream is one document.
fn has_document_markers(text: &str) -> bool {
    text.lines().any(|line| line.starts_with("---") || line.starts_with("...") || line.starts_with('%'))
}

/// The text of each document and the number of lines before it.
fn split_documents<'a>(file: &str, text: &'a str) -> Result<Vec<(u64, &'a str)>, Diagnostic> {
    let mut start_lines = Vec::new();
    for event in Parser::new_from_str(text) {
        match event {
            Ok((Event::DocumentStart(..), span)) => start_lines.push(span.start.line()),
            Ok(_) => {}
            Err(error) => {
                let mark = error.marker();
                let message =
                    limit_message(&error.info()).unwrap_or_else(|| format!("YAML syntax error: {}", error.info()));
                return Err(Diagnostic::new(file, mark.line() as u64, mark.col() as u64 + 1, message));
            }
        }
    }
    start_lines.dedup();
    let line_starts = line_start_offsets(text);
    let offset_of_line = |line: usize| line_starts.get(line.saturating_sub(1)).copied().unwrap_or(text.len());
    Ok(start_lines
        .iter()
        .enumerate()
        .map(|(index, &line)| {
            let end = start_lines.get(index + 1).map_or(text.len(), |&next| offset_of_line(next));
            ((line as u64).saturating_sub(1), &text[offset_of_line(line)..end])
        })
        .collect())
}

fn line_start_offsets(text: &str) -> Vec<usize> {
    std::iter::once(0).chain(text.match_indices('\n').map(|(index, _)| index + 1)).collect()
}

/// Just the `kind` of a document; every other field is ignored at this stage.
#[derive(Deserialize)]
struct KindProbe {
    kind: Option<Located<String>>,
}

fn read_document(
    file: &Arc<str>,
    line_offset: u64,
    text: &str,
    documents: &mut Documents,
    diagnostics: &mut Vec<Diagnostic>,
) -> Result<(), Diagnostic> {
    let place = Sourced { file: Arc::clone(file), line_offset, doc: () };
    let kind_value = match top_level_kind(text) {
        Some(kind) => kind,
        None => match probe_kind(&place, text)? {
            Some(kind) => kind,
            None => return Ok(()),
        },
    };
    let mut found = Vec::new();
    match kind_value {
        Kind::Project => documents.projects.extend(parse_all(&place, text, &mut found).map(|doc| place.with(doc))),
        Kind::App => documents.apps.extend(parse_all(&place, text, &mut found).map(|doc| place.with(doc))),
        Kind::Domain => documents.domains.extend(parse_all(&place, text, &mut found).map(|doc| place.with(doc))),
        Kind::ScalingRule => {
            documents.scaling_rules.extend(parse_all(&place, text, &mut found).map(|doc| place.with(doc)))
        }
        Kind::Job => documents.jobs.extend(parse_all(&place, text, &mut found).map(|doc| place.with(doc))),
    }
    diagnostics.extend(found);
    Ok(())
}

/// Most type errors reported for one document in one run.
const MAX_ERRORS_PER_DOCUMENT: usize = 16;

/// Reads a document, reporting every type error it holds, not only the first: each faulty value is replaced by a
/// neutral one of the accepted type in a copy of the text (lines kept in place) and the copy read again, so that
/// the next error, and the checks of the rest of the document, are reached in the same run. A document read after
/// such repairs never becomes a [`super::Config`]: its errors are already reported.
fn parse_all<T: DeserializeOwned>(place: &Sourced<()>, text: &str, diagnostics: &mut Vec<Diagnostic>) -> Option<T> {
    let mut current = std::borrow::Cow::Borrowed(text);
    for _ in 0..MAX_ERRORS_PER_DOCUMENT {
        let options = serde_saphyr::options! { with_snippet: false };
        let error = match serde_saphyr::from_str_with_options::<T>(&current, options) {
            Ok(doc) => return Some(doc),
            Err(error) => error,
        };
        let is_first = diagnostics.is_empty();
        if is_first && let Err(mut syntax) = split_documents(&place.file, text) {
            // A type mismatch can be the first symptom of broken syntax; the syntax error is what the user must fix.
            syntax.line += place.line_offset;
            diagnostics.push(syntax);
            return None;
        }
        let raw = error.to_string();
        let (line, column) = error.location().map_or((1, 1), |at| (at.line().max(1), at.column().max(1)));
        let message = plain_message(&raw, field_at(&current, line, column));
        diagnostics.push(Diagnostic::new(&place.file, line + place.line_offset, column, message));
        let repaired = neutralised(&current, line, column, &raw)
            .filter(|repaired| split_documents(&place.file, repaired).is_ok())?;
        current = std::borrow::Cow::Owned(repaired);
    }
    None
}

/// `text` with the faulty value at `line`:`column` replaced by a neutral value of the type `raw` (serde's message)
/// asks for, or an unknown block-style field blanked out; `None` when no safe repair is known.
fn neutralised(text: &str, line: u64, column: u64, raw: &str) -> Option<String> {
    let index = usize::try_from(line).ok()?.checked_sub(1)?;
    let mut lines: Vec<&str> = text.split('\n').collect();
    let source = *lines.get(index)?;
    let at = source.char_indices().nth(usize::try_from(column).ok()?.checked_sub(1)?).map(|(i, _)| i)?;
    let (before, value) = source.split_at(at);
    let first_line = raw.lines().next().unwrap_or_default();
    let replacement = if first_line.starts_with("unknown field `") {
        let (_, after_key) = value.split_once(':')?;
        let after_key = after_key.trim();
        let alone = before.trim().is_empty() && !after_key.is_empty() && !after_key.starts_with(['|', '>', '&']);
        if !alone || token_len(after_key)? != after_key.split(" #").next().unwrap_or(after_key).trim_end().len() {
            return None;
        }
        let mut owned: Vec<String> = lines.iter().map(|line| (*line).to_owned()).collect();
        owned[index] = String::new();
        return Some(owned.join("\n"));
    } else if let Some(rest) = first_line.strip_prefix("unknown variant `") {
        let (_, known) = rest.split_once("`, expected one of ")?;
        known.split([',', ' ', '`']).find(|name| !name.is_empty())?.to_owned()
    } else if first_line.starts_with("invalid u") || first_line.starts_with("invalid i") {
        "1".to_owned()
    } else if first_line.starts_with("expected string scalar") || first_line.starts_with("env value is") {
        "x".to_owned()
    } else if first_line.starts_with("expected sequence start") {
        "[]".to_owned()
    } else if first_line.starts_with("expected mapping start") {
        "{}".to_owned()
    } else {
        return None;
    };
    let length = token_len(value)?;
    let padded = format!("{replacement:<length$}");
    let repaired_line = format!("{before}{padded}{}", &value[length..]);
    lines[index] = &repaired_line;
    Some(lines.join("\n"))
}

/// Bytes of the value at the start of `value`: a flow collection up to its closing bracket on this line, or a
/// plain scalar up to the next `,`, `}`, `]` or comment; `None` for what continues on later lines.
fn token_len(value: &str) -> Option<usize> {
    if value.starts_with(['[', '{']) {
        let mut depth = 0usize;
        for (index, c) in value.char_indices() {
            match c {
                '[' | '{' => depth += 1,
                ']' | '}' => {
                    depth = depth.checked_sub(1)?;
                    if depth == 0 {
                        return Some(index + 1);
                    }
                }
                _ => {}
            }
        }
        return None;
    }
    if value.starts_with(['"', '\'', '|', '>', '&', '*', '!']) {
        return None;
    }
    let end = value.find([',', '}', ']']).unwrap_or(value.len());
    let end = value[..end].find(" #").unwrap_or(end);
    Some(value[..end].trim_end().len())
}

/// The kind of a block-style document read straight off its one `kind:` line at column 0, which is how nearly every
/// document is written; anything else (flow style, an unknown or repeated kind) goes through the parser.
fn top_level_kind(text: &str) -> Option<Kind> {
    let mut kinds = text.lines().filter_map(|line| line.strip_prefix("kind:"));
    let value = kinds.next()?;
    if kinds.next().is_some() {
        return None;
    }
    let value = value.split(" #").next().unwrap_or(value).trim().trim_matches(|c| c == '"' || c == '\'');
    Kind::parse(value)
}

/// The kind as the parser reads it; `None` for an empty document; an error when it is missing or unknown.
fn probe_kind(place: &Sourced<()>, text: &str) -> Result<Option<Kind>, Diagnostic> {
    let probe: Option<Located<KindProbe>> = parse(place, text)?;
    let Some(probe) = probe else { return Ok(None) };
    let Some(kind) = probe.value.kind else {
        return Err(place.error_at(
            &probe,
            "document has no `kind`; add `kind: Project`, `kind: App`, `kind: Domain` or `kind: ScalingRule`",
        ));
    };
    let name = &kind.value;
    if let Some(kind) = Kind::parse(name) {
        return Ok(Some(kind));
    }
    let close = Kind::ALL.into_iter().find(|known| {
        known.as_str().eq_ignore_ascii_case(name.replace(['-', '_'], "").as_str())
            || super::suggest::edit_distance(known.as_str(), name) <= 2
    });
    let message = match close {
        Some(known) => format!("unknown kind `{name}`; did you mean `{known}`?"),
        None => format!("unknown kind `{name}`; use one of Project, App, Domain, ScalingRule"),
    };
    Err(place.error_at(&kind, message))
}

impl Sourced<()> {
    fn with<T>(&self, doc: T) -> Sourced<T> {
        Sourced { file: Arc::clone(&self.file), line_offset: self.line_offset, doc }
    }
}

fn parse<T: DeserializeOwned>(place: &Sourced<()>, text: &str) -> Result<T, Diagnostic> {
    let options = serde_saphyr::options! { with_snippet: false };
    serde_saphyr::from_str_with_options(text, options).map_err(|error| {
        // A type mismatch can be the first symptom of broken syntax; the syntax error is what the user must fix.
        if let Err(mut syntax) = split_documents(&place.file, text) {
            syntax.line += place.line_offset;
            return syntax;
        }
        let (line, column) = error.location().map_or((1, 1), |at| (at.line().max(1), at.column().max(1)));
        let message = plain_message(&error.to_string(), field_at(text, line, column));
        Diagnostic::new(&place.file, line + place.line_offset, column, message)
    })
}

/// The field whose value starts at `line`:`column` (1-based) of `text`, and that value as written: the key before
/// the last `:` ahead of the column, in block (`replicas: two`) and flow (`{ name: http, port: 99999 }`) style.
fn field_at(text: &str, line: u64, column: u64) -> Option<(String, String)> {
    let source = text.lines().nth(usize::try_from(line).ok()?.checked_sub(1)?)?;
    let at = source.char_indices().nth(usize::try_from(column).ok()?.checked_sub(1)?).map_or(source.len(), |(i, _)| i);
    let (before, value) = source.split_at(at);
    let key_end = before.rfind(':')?;
    let key: String = before[..key_end]
        .chars()
        .rev()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let value = value.trim_start();
    let found = if value.starts_with('{') {
        "a mapping".to_owned()
    } else if value.starts_with('[') {
        "a list".to_owned()
    } else if value.is_empty() {
        "nothing on this line".to_owned()
    } else {
        format!("`{}`", value.split([',', '}', ']', '#']).next().unwrap_or_default().trim())
    };
    (!key.is_empty()).then_some((key, found))
}

/// serde-saphyr appends ` at line L, column C`; the diagnostic carries the place itself. serde's terse messages are
/// turned into ones that name the field, what was found and what is accepted, without serde's internal words.
fn plain_message(message: &str, field: Option<(String, String)>) -> String {
    let without_place = message.rsplit_once(" at line ").map_or(message, |(text, _)| text);
    let first_line = without_place.lines().next().unwrap_or(without_place);
    if let Some(rest) = first_line.strip_prefix("unknown field `") {
        return unknown_field_message(first_line, rest);
    }
    if let Some(limit) = limit_message(first_line) {
        return limit;
    }
    if let Some(rest) = first_line.strip_prefix("missing field `") {
        let name = rest.trim_end_matches('`');
        return format!("missing field `{name}`; add `{name}:` to this document");
    }
    let accepted = match first_line {
        "invalid u16" => Some("a whole number from 0 to 65535".to_owned()),
        "invalid u32" => Some("a whole number from 0 to 4294967295".to_owned()),
        "invalid i64" | "invalid u64" => Some("a whole number".to_owned()),
        "expected string scalar" => Some("text (quote it if it looks like a number or holds `: `)".to_owned()),
        "expected sequence start" => Some("a list: `[a, b]` or one `- item` per line".to_owned()),
        "expected mapping start" => Some("a mapping: `{ key: value }` or indented `key: value` lines".to_owned()),
        _ if first_line.contains("untagged enum") => Some("a value of the documented form".to_owned()),
        _ => first_line.strip_prefix("unknown variant `").and_then(|rest| {
            rest.split_once("`, expected one of ").map(|(_, known)| format!("one of {}", known.replace('`', "")))
        }),
    };
    match (field, accepted) {
        (Some((field, found)), Some(accepted)) => format!("{field}: found {found}; use {accepted}"),
        (None, Some(accepted)) => format!("this value is not accepted here; use {accepted}"),
        (Some((field, _)), None) if !first_line.starts_with(&format!("{field}:")) => format!("{field}: {first_line}"),
        _ => first_line.to_owned(),
    }
}

/// The limits that keep a hostile file from exhausting the stack or memory, in words; `None` for other messages.
fn limit_message(message: &str) -> Option<String> {
    let text = if message.contains("recursion limit exceeded") {
        "nesting is deeper than 256 levels, the YAML parser's nesting limit; flatten the document"
    } else if message.contains("budget breached: Depth") {
        "nesting is deeper than 64 levels, the depth budget; flatten the document"
    } else if message.contains("budget breached: Aliases") {
        "more than 50000 aliases (`*name`) in one document, the alias budget; write the values out"
    } else if message.contains("budget breached: ScalarBytes") {
        "aliases expand to more than 64 MiB of text, the alias budget (an alias bomb); write the values out"
    } else if message.contains("budget breached") || message.contains("alias expansion limit") {
        "the document expands beyond the parser's budget (aliases, nodes or size); write it out plainly"
    } else {
        return None;
    };
    Some(text.to_owned())
}

/// Adds "did you mean" to serde's "unknown field `x`, expected one of a, b".
fn unknown_field_message(message: &str, rest: &str) -> String {
    let Some((field, expected)) = rest.split_once("`, expected one of ") else { return message.to_owned() };
    let known: Vec<&str> = expected.split(", ").map(|name| name.trim_matches('`')).collect();
    match known.iter().min_by_key(|name| super::suggest::edit_distance(field, name)) {
        Some(best) if super::suggest::edit_distance(field, best) <= 2 => {
            format!("unknown field `{field}`; did you mean `{best}`?")
        }
        _ => format!("unknown field `{field}`; the fields are {}", known.join(", ")),
    }
}
