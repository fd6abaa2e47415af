//! Training progress: a bar per epoch on a terminal, plain lines otherwise.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};
use twinseal_siamese::train::Event;

/// Renders [`Event`]s on stderr.
pub struct TrainProgress {
    bar: Option<ProgressBar>,
    tty: bool,
    quiet: bool,
}

impl TrainProgress {
    pub fn new(quiet: bool) -> Self {
        Self {
            bar: None,
            tty: std::io::stderr().is_terminal(),
            quiet,
        }
    }

    pub fn event(&mut self, e: Event) {
        if self.quiet {
            return;
        }
        match e {
            Event::EpochStart {
                epoch,
                epochs,
                steps,
            } => {
                if self.tty {
                    let bar = ProgressBar::new(steps as u64);
                    bar.set_style(
                        ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg}")
                            .expect("valid template")
                            .progress_chars("=> "),
                    );
                    bar.set_prefix(format!("{epoch}/{epochs}"));
                    self.bar = Some(bar);
                }
            }
            Event::Step {
                step,
                loss,
                accuracy,
                throughput,
            } => {
                if let Some(bar) = &self.bar {
                    bar.set_position(step as u64);
                    bar.set_message(format!(
                        "loss {loss:.4} acc {accuracy:.4} {throughput:.0}/s"
                    ));
                }
            }
            Event::EpochEnd(s) => {
                let line = format!(
                    "epoch {}: loss {:.4} acc {:.4} {:.2}s ({:.0}/s)",
                    s.epoch, s.loss, s.accuracy, s.seconds, s.throughput
                );
                match self.bar.take() {
                    Some(bar) => bar.finish_with_message(format!(
                        "loss {:.4} acc {:.4} {:.2}s",
                        s.loss, s.accuracy, s.seconds
                    )),
                    None => eprintln!("{line}"),
                }
            }
            Event::Note(n) => match &self.bar {
                Some(bar) => bar.println(n),
                None => eprintln!("{n}"),
            },
        }
    }
}

/// A counting bar on stderr when it is a terminal; hidden otherwise.
pub fn bar(len: u64, unit: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::new(len);
    b.set_style(
        ProgressStyle::with_template(&format!(
            "   [{{bar:40}}] {{pos}}/{{len}} {unit} ({{per_sec}})"
        ))
        .expect("valid template")
        .progress_chars("=> "),
    );
    b
}

/// A line above `bar` (or on stderr when the bar is hidden).
pub fn line(bar: &ProgressBar, text: String) {
    if bar.is_hidden() {
        eprintln!("{text}");
    } else {
        bar.println(text);
    }
}
