//! Plugin telemetry over time, and the SVG charts that draw it.
//!
//! [`daily`] turns a plugin's telemetry events and run records into one row
//! per day; [`bars`] and [`lines`] draw them as SVG drawn on the server, so
//! the page needs no script and the CSP stays strict. Pure functions.

use std::collections::BTreeMap;
use std::fmt::Write;

use secflow_core::record::{RunRecord, RunStatus};
use secflow_store::TelemetryEvent;

use crate::html::esc;

/// Days shown, newest last.
pub const MAX_DAYS: usize = 14;

const WIDTH: f64 = 420.0;
const HEIGHT: f64 = 140.0;
const LEFT: f64 = 44.0;
const BOTTOM: f64 = 22.0;
const TOP: f64 = 10.0;

/// What a chart plots of a day.
pub type Measure = fn(&Day) -> f64;

/// One day of a plugin's runs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Day {
    /// `YYYY-MM-DD` (UTC).
    pub date: String,
    pub runs: u64,
    pub p50_ms: u64,
    pub p95_ms: u64,
    pub max_memory_mb: u64,
    /// Share of runs that did not succeed, 0..=1.
    pub failure_rate: f64,
    /// Share of runs that hit their deadline, 0..=1.
    pub timeout_rate: f64,
}

/// The `q` quantile (nearest rank) of sorted values.
fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Per day (the last [`MAX_DAYS`] with any run): runs, p50/p95 duration,
/// peak memory and failure rate from telemetry; timeout rate from records.
pub fn daily(events: &[TelemetryEvent], runs: &[RunRecord]) -> Vec<Day> {
    #[derive(Default)]
    struct Acc {
        durations: Vec<u64>,
        memory: u64,
        failures: u64,
        finished: u64,
        timeouts: u64,
    }
    let mut days: BTreeMap<String, Acc> = BTreeMap::new();
    for e in events {
        let Some(date) = e.timestamp.get(..10) else {
            continue;
        };
        let acc = days.entry(date.to_owned()).or_default();
        acc.durations.push(e.duration_ms);
        acc.memory = acc.memory.max(e.memory_mb);
        acc.failures += u64::from(!e.success);
    }
    for r in runs.iter().filter(|r| r.status != RunStatus::Running) {
        let Some(date) = r.started_at.get(..10) else {
            continue;
        };
        if let Some(acc) = days.get_mut(date) {
            acc.finished += 1;
            acc.timeouts += u64::from(r.status == RunStatus::TimedOut);
        }
    }
    let mut out: Vec<Day> = days
        .into_iter()
        .map(|(date, mut acc)| {
            acc.durations.sort_unstable();
            let n = acc.durations.len() as u64;
            Day {
                date,
                runs: n,
                p50_ms: quantile(&acc.durations, 0.50),
                p95_ms: quantile(&acc.durations, 0.95),
                max_memory_mb: acc.memory,
                failure_rate: acc.failures as f64 / n.max(1) as f64,
                timeout_rate: acc.timeouts as f64 / acc.finished.max(1) as f64,
            }
        })
        .collect();
    if out.len() > MAX_DAYS {
        out.drain(..out.len() - MAX_DAYS);
    }
    out
}

fn frame(id: &str, title: &str, max: f64, unit: &str, out: &mut String) {
    let _ = write!(
        out,
        "<figure class=\"chart\"><figcaption>{}</figcaption>\
         <svg id=\"{}\" role=\"img\" aria-label=\"{}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" \
         width=\"{WIDTH}\" height=\"{HEIGHT}\" xmlns=\"http://www.w3.org/2000/svg\">\
         <line class=\"axis\" x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{y0}\"/>\
         <line class=\"axis\" x1=\"{LEFT}\" y1=\"{y0}\" x2=\"{WIDTH}\" y2=\"{y0}\"/>\
         <text class=\"tick\" x=\"{tx}\" y=\"{ty}\">{}</text>\
         <text class=\"tick\" x=\"{tx}\" y=\"{y0}\">0</text>",
        esc(title),
        esc(id),
        esc(title),
        format_value(max, unit),
        y0 = HEIGHT - BOTTOM,
        tx = LEFT - 4.0,
        ty = TOP + 8.0,
    );
}

fn format_value(value: f64, unit: &str) -> String {
    match unit {
        "%" => format!("{:.0}%", value * 100.0),
        _ if value >= 10.0 => format!("{value:.0}{unit}"),
        _ => format!("{value:.1}{unit}"),
    }
}

fn scale(max: f64) -> f64 {
    if max > 0.0 {
        max
    } else {
        1.0
    }
}

fn x_labels(days: &[Day], step: f64, out: &mut String) {
    // First and last date only: the axis stays legible at 14 days.
    for (i, day) in days.iter().enumerate() {
        if i == 0 || i + 1 == days.len() {
            let x = LEFT + step * (i as f64 + 0.5);
            let _ = write!(
                out,
                "<text class=\"date\" x=\"{x:.1}\" y=\"{:.1}\">{}</text>",
                HEIGHT - 6.0,
                esc(day.date.get(5..).unwrap_or(&day.date))
            );
        }
    }
}

/// A bar per day of `value(day)`.
pub fn bars(id: &str, title: &str, unit: &str, days: &[Day], value: Measure) -> String {
    let mut out = String::new();
    let max = days.iter().map(value).fold(0.0, f64::max);
    frame(id, title, max, unit, &mut out);
    let step = (WIDTH - LEFT) / days.len().max(1) as f64;
    let plot = HEIGHT - BOTTOM - TOP;
    for (i, day) in days.iter().enumerate() {
        let v = value(day);
        let h = plot * v / scale(max);
        let x = LEFT + step * i as f64 + step * 0.15;
        let _ = write!(
            out,
            "<rect class=\"bar\" x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\" data-date=\"{}\" data-value=\"{v}\"><title>{}: {}</title></rect>",
            HEIGHT - BOTTOM - h,
            step * 0.7,
            esc(&day.date),
            esc(&day.date),
            format_value(v, unit),
        );
    }
    x_labels(days, step, &mut out);
    out.push_str("</svg></figure>");
    out
}

/// A line per series over the days; the legend names each.
pub fn lines(
    id: &str,
    title: &str,
    unit: &str,
    days: &[Day],
    series: &[(&str, Measure)],
) -> String {
    let mut out = String::new();
    let max = series
        .iter()
        .flat_map(|(_, f)| days.iter().map(f))
        .fold(0.0, f64::max);
    frame(id, title, max, unit, &mut out);
    let step = (WIDTH - LEFT) / days.len().max(1) as f64;
    let plot = HEIGHT - BOTTOM - TOP;
    for (n, (name, value)) in series.iter().enumerate() {
        let xy: Vec<(f64, f64, &Day)> = days
            .iter()
            .enumerate()
            .map(|(i, day)| {
                let x = LEFT + step * (i as f64 + 0.5);
                let y = HEIGHT - BOTTOM - plot * value(day) / scale(max);
                (x, y, day)
            })
            .collect();
        let points: Vec<String> = xy
            .iter()
            .map(|(x, y, _)| format!("{x:.1},{y:.1}"))
            .collect();
        // A dot per day: one day of data is a point, which a line alone would not show.
        for (x, y, day) in &xy {
            let _ = write!(
                out,
                "<circle class=\"dot series-{n}\" cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"3\"><title>{} {}: {}</title></circle>",
                esc(name),
                esc(&day.date),
                format_value(value(day), unit)
            );
        }
        let _ = write!(
            out,
            "<polyline class=\"series series-{n}\" points=\"{}\"><title>{}</title></polyline>\
             <text class=\"legend series-{n}\" x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            points.join(" "),
            esc(name),
            LEFT + 8.0 + 90.0 * n as f64,
            TOP + 8.0,
            esc(name)
        );
    }
    x_labels(days, step, &mut out);
    out.push_str("</svg></figure>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(ts: &str, duration_ms: u64, success: bool) -> TelemetryEvent {
        TelemetryEvent {
            event: "plugin_executed".into(),
            plugin: "ferox".into(),
            version: "1.0.0".into(),
            run_id: String::new(),
            duration_ms,
            cpu_ms: 0,
            memory_mb: duration_ms / 10,
            findings_processed: 0,
            success,
            timestamp: ts.into(),
        }
    }

    #[test]
    fn telemetry_becomes_one_row_per_day_with_quantiles_and_rates() {
        let mut events: Vec<TelemetryEvent> = (1..=20)
            .map(|i| event("2026-12-06T10:00:00Z", i * 10, i != 20))
            .collect();
        events.push(event("2026-12-07T01:00:00Z", 500, true));
        let days = daily(&events, &[]);
        assert_eq!(days.len(), 2);
        let d = &days[0];
        assert_eq!((d.date.as_str(), d.runs), ("2026-12-06", 20));
        assert_eq!(d.p50_ms, 100);
        assert_eq!(d.p95_ms, 190);
        assert_eq!(d.max_memory_mb, 20);
        assert!((d.failure_rate - 0.05).abs() < 1e-9);
        assert_eq!(days[1].runs, 1);
    }

    #[test]
    fn a_bar_chart_draws_one_bar_per_day_scaled_to_the_highest() {
        let days = vec![
            Day {
                date: "2026-12-05".into(),
                runs: 5,
                ..Day::default()
            },
            Day {
                date: "2026-12-06".into(),
                runs: 10,
                ..Day::default()
            },
        ];
        let svg = bars("runs", "Runs per day", "", &days, |d| d.runs as f64);
        assert_eq!(svg.matches("<rect class=\"bar\"").count(), 2);
        let full = HEIGHT - BOTTOM - TOP;
        assert!(svg.contains(&format!("height=\"{full:.1}\"")), "{svg}");
        assert!(
            svg.contains(&format!("height=\"{:.1}\"", full / 2.0)),
            "{svg}"
        );
    }

    #[test]
    fn a_line_chart_draws_each_series_through_every_day() {
        let days: Vec<Day> = (1..=3)
            .map(|i| Day {
                date: format!("2026-12-0{i}"),
                p50_ms: i * 10,
                p95_ms: i * 30,
                ..Day::default()
            })
            .collect();
        let svg = lines(
            "duration",
            "Duration",
            " ms",
            &days,
            &[("p50", |d| d.p50_ms as f64), ("p95", |d| d.p95_ms as f64)],
        );
        assert_eq!(svg.matches("<polyline").count(), 2);
        let first = svg.split("points=\"").nth(1).unwrap();
        assert_eq!(first.split('"').next().unwrap().split(' ').count(), 3);
    }
}
