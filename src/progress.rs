//! Apply progress for people: a live line per object on a terminal, plain timestamped lines otherwise, and one JSON
//! object per line (the event's typed fields) when logs are JSON. Each renders a [`ProgressEvent`]; none reads
//! text back.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::backend::{Progress, ProgressEvent};
use crate::plan::ObjectKind;

/// JSON lines when `json`, else the live display when standard error is a terminal, else plain lines.
pub fn for_stderr(json: bool) -> Box<dyn Progress> {
    if json {
        Box::new(JsonProgress(PlainProgress::new()))
    } else if std::io::stderr().is_terminal() {
        Box::new(LiveProgress::default())
    } else {
        Box::new(PlainProgress::new())
    }
}

/// One spinner line per object, updated in place.
#[derive(Default)]
pub struct LiveProgress {
    bars: MultiProgress,
    by_object: Mutex<HashMap<(ObjectKind, String), ProgressBar>>,
}

impl Progress for LiveProgress {
    fn event(&self, event: &ProgressEvent) {
        let Ok(mut by_object) = self.by_object.lock() else { return };
        let bar = by_object.entry((event.kind, event.name.clone())).or_insert_with(|| {
            let bar = self.bars.add(ProgressBar::new_spinner());
            bar.set_style(
                ProgressStyle::with_template("{spinner} {prefix:>16} {msg} ({elapsed})")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_prefix(event.name.clone());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        if event.step.is_final() {
            bar.finish_with_message(event.step.to_string());
        } else {
            bar.set_message(event.step.to_string());
        }
    }
}

/// `[  1.2s] web: creating shop-web-1` lines, for logs and pipes.
pub struct PlainProgress {
    started: Instant,
}

impl PlainProgress {
    pub fn new() -> PlainProgress {
        PlainProgress { started: Instant::now() }
    }

    /// Seconds since the apply began, to a tenth.
    fn elapsed_seconds(&self) -> f64 {
        (self.started.elapsed().as_secs_f64() * 10.0).round() / 10.0
    }
}

impl Default for PlainProgress {
    fn default() -> Self {
        PlainProgress::new()
    }
}

impl Progress for PlainProgress {
    fn event(&self, event: &ProgressEvent) {
        eprintln!("[{:6.1}s] {}: {}", self.elapsed_seconds(), event.name, event.step);
    }
}

/// One JSON object per event, beside `--log-format json` logs: the object under its kind's name, the step's typed
/// fields, and the line a person would read:
/// `{"elapsedSeconds":1.2,"app":"web","step":"creating","container":"shop-web-1","message":"creating shop-web-1"}`.
pub struct JsonProgress(PlainProgress);

impl Progress for JsonProgress {
    fn event(&self, event: &ProgressEvent) {
        eprintln!("{}", json_line(event, self.0.elapsed_seconds()));
    }
}

fn json_line(event: &ProgressEvent, elapsed_seconds: f64) -> serde_json::Value {
    let mut line = serde_json::json!({
        "elapsedSeconds": elapsed_seconds,
        object_key(event.kind): event.name,
    });
    if let (Some(line), Ok(serde_json::Value::Object(step))) = (line.as_object_mut(), serde_json::to_value(&event.step))
    {
        line.extend(step);
        line.insert("message".to_owned(), event.step.to_string().into());
    }
    line
}

/// `app` or `domain`: the key that names the object in a JSON line.
fn object_key(kind: ObjectKind) -> &'static str {
    match kind {
        ObjectKind::App => "app",
        ObjectKind::Domain => "domain",
        ObjectKind::Job => "job",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Step;

    #[test]
    fn a_json_line_carries_the_objects_name_under_its_kind_and_the_steps_fields() {
        let event = ProgressEvent::app("web", Step::Pulling { image: "ghcr.io/acme/web:1".into() });
        assert_eq!(
            json_line(&event, 1.2),
            serde_json::json!({
                "elapsedSeconds": 1.2,
                "app": "web",
                "step": "pulling",
                "image": "ghcr.io/acme/web:1",
                "message": "pulling ghcr.io/acme/web:1",
            })
        );
        let domain = ProgressEvent::domain("shop.example.com", Step::Done);
        let line = json_line(&domain, 0.0);
        assert_eq!((line["domain"].as_str(), line["step"].as_str()), (Some("shop.example.com"), Some("done")));
        assert!(line.get("app").is_none(), "{line}");
    }
}
