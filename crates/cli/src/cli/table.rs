//! Aligned plain-text tables for human output.

use std::io::Write;

/// A table printed with columns padded to their widest cell.
#[derive(Debug, Default)]
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

/// Longest cell printed; longer ones are cut with an ellipsis so one long
/// value cannot stretch the table past the screen.
const MAX_CELL: usize = 72;

impl Table {
    pub fn new(headers: &[&'static str]) -> Table {
        Table {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(
            cells
                .into_iter()
                .map(|c| shorten(&c.replace(['\n', '\t'], " ")))
                .collect(),
        );
    }

    pub fn write(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: Vec<&str>| {
            let mut s = String::new();
            for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
                if i + 1 == cells.len() {
                    s.push_str(cell);
                } else {
                    s.push_str(cell);
                    s.extend(std::iter::repeat_n(' ', w - cell.chars().count() + 2));
                }
            }
            s.trim_end().to_string()
        };
        writeln!(out, "{}", line(self.headers.to_vec()))?;
        for row in &self.rows {
            writeln!(out, "{}", line(row.iter().map(String::as_str).collect()))?;
        }
        Ok(())
    }
}

fn shorten(s: &str) -> String {
    if s.chars().count() <= MAX_CELL {
        return s.to_string();
    }
    let mut cut: String = s.chars().take(MAX_CELL - 1).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_on_the_widest_cell() {
        let mut t = Table::new(&["NAME", "STATUS"]);
        t.row(vec!["analytics".into(), "active".into()]);
        t.row(vec!["x".into(), "rejected".into()]);
        let mut out = Vec::new();
        t.write(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "NAME       STATUS\nanalytics  active\nx          rejected\n"
        );
    }
}
