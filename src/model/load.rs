//! Turns the files of a config repository into typed documents, collecting every problem as a [`Diagnostic`].
//!
//! Each file is split into its YAML documents first (by the parser's own document events, so `---` inside a block
//! scalar is not mistaken for a separator), then each document is read as the type its `kind` names.

use std::sync::Arc;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_saphyr::granit_parser::{Event, Parser};

use super::kinds::{App, Domain, Kind, Located, Project, ScalingRule};
use super::{Diagnostic, FileContent, RepoFile};

/// The largest config file railyard reads, so that a hostile repository cannot exhaust memory.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

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
}

/// Reads every document of every file; problems are appended to `diagnostics` and the faulty document skipped.
pub fn read_documents(files: &[RepoFile], diagnostics: &mut Vec<Diagnostic>) -> Documents {
    let mut documents = Documents::default();
    for file in files {
        let name: Arc<str> = Arc::from(file.path.as_str());
        match file_text(file) {
            Ok(text) => read_file(&name, text, &mut documents, diagnostics),
            Err(diagnostic) => diagnostics.push(diagnostic),
        }
    }
    documents
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
            Diagnostic::new(
                &file.path,
                line,
                column,
                "file is not valid UTF-8; save it as UTF-8 text".to_owned(),
            )
        }),
    }
}

fn read_file(file: &Arc<str>, text: &str, documents: &mut Documents, diagnostics: &mut Vec<Diagnostic>) {
    let slices = match split_documents(text) {
        Ok(slices) => slices,
        Err((line, column, message)) => {
            diagnostics.push(Diagnostic::new(file, line, column, format!("YAML syntax error: {message}")));
            return;
        }
    };
    for (line_offset, slice) in slices {
        if let Err(diagnostic) = read_document(file, line_offset, slice, documents) {
            diagnostics.push(diagnostic);
        }
    }
}

/// The text of each document and the number of lines before it.
fn split_documents(text: &str) -> Result<Vec<(u64, &str)>, (u64, u64, String)> {
    let mut start_lines = Vec::new();
    for event in Parser::new_from_str(text) {
        match event {
            Ok((Event::DocumentStart(..), span)) => start_lines.push(span.start.line()),
            Ok(_) => {}
            Err(error) => {
                let mark = error.marker();
                return Err((mark.line() as u64, mark.col() as u64 + 1, error.info().to_owned()));
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

fn read_document(file: &Arc<str>, line_offset: u64, text: &str, documents: &mut Documents) -> Result<(), Diagnostic> {
    let place = Sourced { file: Arc::clone(file), line_offset, doc: () };
    let probe: Option<Located<KindProbe>> = parse(&place, text)?;
    let Some(probe) = probe else { return Ok(()) };
    let Some(kind) = probe.value.kind else {
        return Err(place.error_at(
            &probe,
            "document has no `kind`; add `kind: Project`, `kind: App`, `kind: Domain` or `kind: ScalingRule`",
        ));
    };
    let name = &kind.value;
    let Some(kind_value) = Kind::parse(name) else {
        return Err(place.error_at(
            &kind,
            format!("unknown kind `{name}`; use one of Project, App, Domain, ScalingRule"),
        ));
    };
    match kind_value {
        Kind::Project => documents.projects.push(place.with(parse(&place, text)?)),
        Kind::App => documents.apps.push(place.with(parse(&place, text)?)),
        Kind::Domain => documents.domains.push(place.with(parse(&place, text)?)),
        Kind::ScalingRule => documents.scaling_rules.push(place.with(parse(&place, text)?)),
    }
    Ok(())
}

impl Sourced<()> {
    fn with<T>(&self, doc: T) -> Sourced<T> {
        Sourced { file: Arc::clone(&self.file), line_offset: self.line_offset, doc }
    }
}

fn parse<T: DeserializeOwned>(place: &Sourced<()>, text: &str) -> Result<T, Diagnostic> {
    let options = serde_saphyr::options! { with_snippet: false };
    serde_saphyr::from_str_with_options(text, options).map_err(|error| {
        let (line, column) = error.location().map_or((1, 1), |at| (at.line().max(1), at.column().max(1)));
        Diagnostic::new(&place.file, line + place.line_offset, column, plain_message(&error.to_string()))
    })
}

/// serde-saphyr appends ` at line L, column C`; the diagnostic carries the place itself.
fn plain_message(message: &str) -> String {
    let without_place = message.rsplit_once(" at line ").map_or(message, |(text, _)| text);
    let first_line = without_place.lines().next().unwrap_or(without_place);
    first_line.to_owned()
}
