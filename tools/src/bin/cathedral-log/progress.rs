//! Progress bars on a terminal (indicatif); nothing at all when stderr is not a terminal,
//! so pipes and logs get only the plain report.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// A byte-progress bar, or nothing.
pub struct Bar(Option<ProgressBar>);

impl Bar {
    pub fn new(label: &'static str) -> Bar {
        if !std::io::stderr().is_terminal() {
            return Bar(None);
        }
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{msg:>9} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("template parses")
            .progress_chars("=> "),
        );
        bar.set_message(label);
        Bar(Some(bar))
    }

    pub fn update(&self, done: u64, total: u64) {
        if let Some(b) = &self.0 {
            b.set_length(total);
            b.set_position(done);
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}
