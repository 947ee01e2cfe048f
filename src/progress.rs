//! Apply progress for people: a live line per app on a terminal, plain timestamped lines otherwise, and one JSON
//! object per line when logs are JSON.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::backend::Progress;

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

/// One spinner line per app, updated in place.
#[derive(Default)]
pub struct LiveProgress {
    bars: MultiProgress,
    by_app: Mutex<HashMap<String, ProgressBar>>,
}

impl Progress for LiveProgress {
    fn event(&self, app: &str, message: &str) {
        let Ok(mut by_app) = self.by_app.lock() else { return };
        let bar = by_app.entry(app.to_owned()).or_insert_with(|| {
            let bar = self.bars.add(ProgressBar::new_spinner());
            bar.set_style(
                ProgressStyle::with_template("{spinner} {prefix:>16} {msg} ({elapsed})")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_prefix(app.to_owned());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        let finished = ["done", "failed", "rolled back", "skipped"].iter().any(|end| message.starts_with(end));
        if finished {
            bar.finish_with_message(message.to_owned());
        } else {
            bar.set_message(message.to_owned());
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
}

impl Default for PlainProgress {
    fn default() -> Self {
        PlainProgress::new()
    }
}

impl Progress for PlainProgress {
    fn event(&self, app: &str, message: &str) {
        eprintln!("[{:6.1}s] {app}: {message}", self.started.elapsed().as_secs_f64());
    }
}

/// `{"elapsedSeconds":1.2,"app":"web","message":"creating shop-web-1"}` lines, beside `--log-format json` logs.
pub struct JsonProgress(PlainProgress);

impl Progress for JsonProgress {
    fn event(&self, app: &str, message: &str) {
        let line = serde_json::json!({
            "elapsedSeconds": (self.0.started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
            "app": app,
            "message": message,
        });
        eprintln!("{line}");
    }
}
