//! The plan as text for a terminal or a log: one line per change, the diffs, a summary.

use std::fmt::Write;

use super::{Action, Change, ObjectKind, Plan};

const RED: &str = "\x1b[31m";
const GREEN: &str = "\x1b[32m";
const CYAN: &str = "\x1b[36m";
const BOLD: &str = "\x1b[1m";
const RESET: &str = "\x1b[0m";

/// Renders `plan`; with `color`, diff lines are colored as `git diff` colors them.
pub fn text(plan: &Plan, color: bool) -> String {
    let mut out = String::new();
    let commit = plan.commit.as_deref().map(|c| format!(" at {}", crate::model::short_sha(c))).unwrap_or_default();
    let _ = writeln!(out, "Plan for environment {} (project {}){commit}", plan.env.name, plan.env.project);
    if let Some(moving) = &plan.moving {
        let _ = writeln!(out, "\n{moving}");
    }
    for build in &plan.builds {
        let (bold, reset) = if color { (BOLD, RESET) } else { ("", "") };
        let _ = writeln!(out, "\n{bold}{build}{reset} -> {}", build.image);
    }
    for workload in plan.workloads() {
        match workload {
            super::Workload::App(action) => render_action(&mut out, ObjectKind::App, action, color),
            super::Workload::Job(action) => render_action(&mut out, ObjectKind::Job, action, color),
        }
    }
    for action in &plan.domains {
        render_action(&mut out, ObjectKind::Domain, action, color);
    }
    for orphan in &plan.orphans {
        let _ = writeln!(
            out,
            "\norphaned: project {} ({} replica(s)) was applied from this repository under its old project name and is \
             no longer declared; railyard leaves it running. Remove it with:\n  {}",
            orphan.project,
            orphan.replicas.len(),
            orphan.remove_with
        );
    }
    for warning in &plan.warnings {
        let _ = writeln!(out, "\nwarning: {warning}");
    }
    let _ = writeln!(out, "\n{}", plan.summary);
    out
}

fn render_action<S>(out: &mut String, kind: ObjectKind, action: &Action<S>, color: bool) {
    if action.change == Change::Unchanged {
        return;
    }
    let detail = match &action.change {
        Change::Unknown { reason } => format!(": {reason}"),
        Change::Update { fields } => format!(" ({})", fields.join(", ")),
        Change::Scale { from, to } => format!(" ({from} -> {to} replicas)"),
        Change::Repair { reasons } | Change::Run { reasons } => format!(" ({})", reasons.join("; ")),
        _ => String::new(),
    };
    let (bold, reset) = if color { (BOLD, RESET) } else { ("", "") };
    let _ = writeln!(out, "\n{bold}{} {kind} {}{reset}{detail}", action.change.verb(), action.name);
    for note in &action.notes {
        let _ = writeln!(out, "  note: {note}");
    }
    if let Some(diff) = &action.diff {
        for line in diff.lines() {
            let _ = writeln!(out, "{}", colored_line(line, color));
        }
    }
}

fn colored_line(line: &str, color: bool) -> String {
    let paint = match line.as_bytes().first() {
        _ if !color => None,
        Some(b'+') if !line.starts_with("+++") => Some(GREEN),
        Some(b'-') if !line.starts_with("---") => Some(RED),
        Some(b'@') => Some(CYAN),
        _ => None,
    };
    match paint {
        Some(code) => format!("{code}{line}{RESET}"),
        None => line.to_owned(),
    }
}
