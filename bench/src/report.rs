//! The suite's figures and their three renderings: the terminal table, the
//! JSON document, and the generated part of BENCHMARKS.md. Each figure carries
//! its anchor (what it is compared with in the same run) and its target, so a
//! reader sees at once whether the target holds.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::{json, Value};

use crate::BenchError;

/// Everything above this line of BENCHMARKS.md is generated; the notes below
/// it are written by hand and kept across runs.
pub const GENERATED_END: &str = "<!-- end of generated section: notes below are kept -->";

/// How a figure must compare for its target to hold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Bound {
    /// value ≤ limit (or value / anchor ≤ limit when there is an anchor).
    AtMost(f64),
    /// value ≥ limit (or value / anchor ≥ limit when there is an anchor).
    AtLeast(f64),
}

/// One measured figure.
#[derive(Debug, Clone)]
pub struct Figure {
    pub section: &'static str,
    pub measure: String,
    pub value: f64,
    pub unit: &'static str,
    /// The figure it is compared with, in the same unit.
    pub anchor: Option<(String, f64)>,
    pub target: Option<Bound>,
}

impl Figure {
    pub fn new(
        section: &'static str,
        measure: impl Into<String>,
        value: f64,
        unit: &'static str,
    ) -> Figure {
        Figure {
            section,
            measure: measure.into(),
            value,
            unit,
            anchor: None,
            target: None,
        }
    }

    pub fn against(mut self, anchor: impl Into<String>, value: f64) -> Figure {
        self.anchor = Some((anchor.into(), value));
        self
    }

    pub fn target(mut self, bound: Bound) -> Figure {
        self.target = Some(bound);
        self
    }

    /// value / anchor.
    pub fn ratio(&self) -> Option<f64> {
        self.anchor
            .as_ref()
            .filter(|(_, a)| *a > 0.0)
            .map(|(_, a)| self.value / a)
    }

    /// Whether the target holds; `None` without a target.
    pub fn met(&self) -> Option<bool> {
        let compared = self.ratio().unwrap_or(self.value);
        self.target.map(|bound| match bound {
            Bound::AtMost(limit) => compared <= limit,
            Bound::AtLeast(limit) => compared >= limit,
        })
    }

    fn target_text(&self) -> String {
        let times = if self.anchor.is_some() { "×" } else { "" };
        let unit = if self.anchor.is_some() { "" } else { self.unit };
        match self.target {
            Some(Bound::AtMost(l)) => format!("≤ {}{times}{}", number(l), unit_suffix(unit)),
            Some(Bound::AtLeast(l)) => format!("≥ {}{times}{}", number(l), unit_suffix(unit)),
            None => String::new(),
        }
    }

    fn value_text(&self) -> String {
        format!("{}{}", number(self.value), unit_suffix(self.unit))
    }

    fn anchor_text(&self) -> String {
        match &self.anchor {
            Some((name, value)) => format!("{name} {}{}", number(*value), unit_suffix(self.unit)),
            None => String::new(),
        }
    }

    fn ratio_text(&self) -> String {
        self.ratio().map(|r| format!("{r:.2}×")).unwrap_or_default()
    }

    fn met_text(&self) -> &'static str {
        match self.met() {
            Some(true) => "met",
            Some(false) => "NOT met",
            None => "",
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "section": self.section,
            "measure": self.measure,
            "value": self.value,
            "unit": self.unit,
            "anchor": self.anchor.as_ref().map(|(name, value)| json!({"name": name, "value": value})),
            "ratio": self.ratio(),
            "target": self.target_text(),
            "met": self.met(),
        })
    }
}

fn unit_suffix(unit: &str) -> String {
    if unit.is_empty() {
        String::new()
    } else {
        format!(" {unit}")
    }
}

/// Three significant digits for small numbers, no decimals for large ones.
fn number(v: f64) -> String {
    let a = v.abs();
    if a >= 1000.0 {
        let whole = format!("{v:.0}");
        // Thin groups of three digits: 1 000 000.
        let (sign, digits) = whole.split_at(usize::from(whole.starts_with('-')));
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(' ');
            }
            out.push(c);
        }
        format!("{sign}{out}")
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

const HEADERS: [&str; 7] = [
    "section", "measure", "value", "anchor", "ratio", "target", "met",
];

fn cells(f: &Figure) -> [String; 7] {
    [
        f.section.to_string(),
        f.measure.clone(),
        f.value_text(),
        f.anchor_text(),
        f.ratio_text(),
        f.target_text(),
        f.met_text().to_string(),
    ]
}

/// The table for a terminal, columns padded.
pub fn terminal_table(figures: &[Figure]) -> String {
    let rows: Vec<[String; 7]> = figures.iter().map(cells).collect();
    let mut widths = HEADERS.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, row: &[String]| {
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            let pad = w - cell.chars().count();
            if i > 0 {
                out.push_str("  ");
            }
            out.push_str(cell);
            out.push_str(&" ".repeat(pad));
        }
        out.push('\n');
    };
    line(&mut out, &HEADERS.map(String::from));
    for row in &rows {
        line(&mut out, row);
    }
    out
}

/// The table in Markdown.
pub fn markdown_table(figures: &[Figure]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "| {} |", HEADERS.join(" | "));
    let _ = writeln!(out, "|{}", "---|".repeat(HEADERS.len()));
    for f in figures {
        let row = cells(f).map(|c| c.replace('|', "\\|"));
        let _ = writeln!(out, "| {} |", row.join(" | "));
    }
    out
}

/// The JSON document: settings, machine and figures.
pub fn json_report(settings: &Value, machine: &Value, figures: &[Figure]) -> Value {
    json!({
        "settings": settings,
        "machine": machine,
        "figures": figures.iter().map(Figure::to_json).collect::<Vec<_>>(),
        "targets_met": figures.iter().filter(|f| f.met() == Some(true)).count(),
        "targets_not_met": figures.iter().filter(|f| f.met() == Some(false)).count(),
    })
}

/// Rewrites the generated part of `path`, keeping the hand-written notes that
/// follow [`GENERATED_END`].
pub fn write_markdown(
    path: &Path,
    command: &str,
    machine: &Value,
    settings: &Value,
    figures: &[Figure],
) -> Result<(), BenchError> {
    let kept = std::fs::read_to_string(path)
        .ok()
        .and_then(|old| {
            old.split_once(GENERATED_END)
                .map(|(_, notes)| notes.to_string())
        })
        .unwrap_or_else(|| "\n\n## Notes\n".to_string());
    let mut out = String::new();
    let _ = writeln!(out, "# Benchmarks\n");
    let _ = writeln!(
        out,
        "Generated by `{command}` (the `secflow-bench` program, `bench/`); \
         the same figures are in `target/bench/secflow-bench.json`. Every figure is \
         compared with its anchor measured in the same run on the same machine.\n"
    );
    let _ = writeln!(out, "Reproduce: `scripts/bench` (full, < 10 minutes) or `scripts/bench --quick` (smoke, < 1 minute). \
                           The script installs bubblewrap and python3 from Debian's packages when missing, builds the \
                           release binaries and runs the suite as root.\n");
    let _ = writeln!(out, "## Machine\n");
    if let Value::Object(fields) = machine {
        for (key, value) in fields {
            let text = value
                .as_str()
                .map_or_else(|| value.to_string(), str::to_string);
            let _ = writeln!(out, "- {key}: {text}");
        }
    }
    let _ = writeln!(out, "\n## Settings\n");
    if let Value::Object(fields) = settings {
        for (key, value) in fields {
            let _ = writeln!(out, "- {key}: {value}");
        }
    }
    let _ = writeln!(out, "\n## Results\n");
    out.push_str(&markdown_table(figures));
    let met = figures.iter().filter(|f| f.met() == Some(true)).count();
    let missed: Vec<String> = figures
        .iter()
        .filter(|f| f.met() == Some(false))
        .map(|f| format!("{}: {}", f.section, f.measure))
        .collect();
    let _ = writeln!(
        out,
        "\nTargets met: {met} of {}.{}",
        met + missed.len(),
        if missed.is_empty() {
            String::new()
        } else {
            format!(" Not met: {}.", missed.join("; "))
        }
    );
    out.push('\n');
    out.push_str(GENERATED_END);
    out.push_str(&kept);
    std::fs::write(path, out).map_err(|source| BenchError::Io {
        what: format!("writing {}", path.display()),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ratio_target_is_judged_on_value_over_anchor() {
        let f = Figure::new("spawn", "median", 3.0, "ms")
            .against("bwrap", 10.0)
            .target(Bound::AtMost(0.35));
        assert_eq!(f.ratio(), Some(0.3));
        assert_eq!(f.met(), Some(true));
        let g = Figure::new("spawn", "median", 4.0, "ms")
            .against("bwrap", 10.0)
            .target(Bound::AtMost(0.35));
        assert_eq!(g.met(), Some(false));
    }

    #[test]
    fn an_absolute_target_is_judged_on_the_value() {
        let f = Figure::new("ingest", "rate", 300_000.0, "findings/s")
            .target(Bound::AtLeast(250_000.0));
        assert_eq!(f.met(), Some(true));
        assert_eq!(f.target_text(), "≥ 250 000 findings/s");
        assert_eq!(Figure::new("x", "y", 1.0, "").met(), None);
    }

    #[test]
    fn the_markdown_rewrite_keeps_the_hand_written_notes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("BENCHMARKS.md");
        std::fs::write(
            &path,
            format!("old table\n{GENERATED_END}\n\n## Notes\nkeep me\n"),
        )
        .unwrap();
        let figures = [Figure::new("api", "health p50", 0.05, "ms").target(Bound::AtMost(0.1))];
        write_markdown(
            &path,
            "scripts/bench",
            &json!({"cpu": "x"}),
            &json!({}),
            &figures,
        )
        .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("keep me"), "{text}");
        assert!(!text.contains("old table"), "{text}");
        assert!(text.contains("| api | health p50 | 0.050 ms |"), "{text}");
        assert!(text.contains("Targets met: 1 of 1."), "{text}");
    }
}
