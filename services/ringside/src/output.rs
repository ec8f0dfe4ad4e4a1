//! Output format shared by the tools: a human table or machine-readable JSON.

use std::io::Write;

use anyhow::Context as _;
use serde::Serialize;

/// A moved key range as the tools print it (`ring plan`, `replay diff`).
pub(crate) use ringside_replay::MovedRangeRow;

/// How a tool prints its result.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Output {
    /// Aligned columns for people.
    #[default]
    Table,
    /// One JSON document for programs.
    Json,
}

/// Writes `value` as pretty JSON followed by a newline.
pub(crate) fn write_json(out: &mut dyn Write, value: &impl Serialize) -> anyhow::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value).context("cannot encode JSON")?;
    writeln!(out)?;
    Ok(())
}

/// Writes rows as left-aligned columns under a header, two spaces apart.
pub(crate) fn write_table(
    out: &mut dyn Write,
    header: &[&str],
    rows: &[Vec<String>],
) -> anyhow::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        padded.join("  ").trim_end().to_owned()
    };
    writeln!(out, "{}", line(header.to_vec()))?;
    for row in rows {
        writeln!(out, "{}", line(row.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

/// The first `max` moved ranges as a table, and how many more there are.
pub(crate) fn write_moved_ranges(
    out: &mut dyn Write,
    ranges: &[MovedRangeRow],
    max: usize,
) -> anyhow::Result<()> {
    let shown = ranges.len().min(max);
    let rows: Vec<Vec<String>> = ranges[..shown]
        .iter()
        .map(|r| {
            vec![
                r.start.clone(),
                r.end.clone(),
                r.from.clone(),
                r.to.clone(),
                format!("{:.6}", r.fraction),
            ]
        })
        .collect();
    write_table(
        out,
        &[
            "START (EXCLUSIVE)",
            "END (INCLUSIVE)",
            "FROM",
            "TO",
            "FRACTION",
        ],
        &rows,
    )?;
    if shown < ranges.len() {
        writeln!(
            out,
            "... and {} more ranges (--max-ranges N, or --output json for all)",
            ranges.len() - shown
        )?;
    }
    Ok(())
}
