//! Charts of a benchmark report (SVG, drawn with `plotters`): latency percentiles, fan-out
//! scaling and size scaling.

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::prelude::*;
use serde_json::Value;

/// One line of a chart: a name and (x, y) points.
/// One line: the transport, whether it is memchan (drawn thicker), its points.
type Series = (String, bool, Vec<(f64, f64)>);

/// Series of `metric` in `group`, one per transport, with x from `x_of(row)`.
fn series(
    report: &Value,
    group: &str,
    metric: &str,
    x_of: impl Fn(&Value) -> Option<f64>,
) -> Vec<Series> {
    let mut out: Vec<Series> = Vec::new();
    for row in report["rows"].as_array().into_iter().flatten() {
        if row["group"] != group || row["metric"] != metric {
            continue;
        }
        let Some(x) = x_of(row) else { continue };
        let name = row["transport"].as_str().unwrap_or("?").to_string();
        let y = crate::rows::stats(row).0;
        let memchan = crate::rows::role(row) == crate::rows::Role::Memchan;
        match out.iter_mut().find(|(n, _, _)| *n == name) {
            Some((_, _, pts)) => pts.push((x, y)),
            None => out.push((name, memchan, vec![(x, y)])),
        }
    }
    out
}

/// A line chart with a log-scale y axis; x positions are labelled by `x_label_of`.
fn chart(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    lines: &[Series],
    x_label_of: &dyn Fn(f64) -> String,
) -> Result<()> {
    let err = |e: &dyn std::fmt::Display| anyhow!("drawing {}: {e}", path.display());
    let pts = lines.iter().flat_map(|(_, _, p)| p.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if lines.is_empty() || y0 <= 0.0 {
        return Err(anyhow!("nothing to draw for {}", path.display()));
    }
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut c = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(x0 - 0.3..x1 + 0.3, (y0 * 0.7..y1 * 1.4).log_scale())
        .map_err(|e| err(&e))?;
    c.configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        // One label per whole x position (positions are integers: index, readers, log2 size).
        .x_labels(((x1 - x0).round() as usize).saturating_add(1))
        .x_label_formatter(&|x: &f64| x_label_of(*x))
        .draw()
        .map_err(|e| err(&e))?;
    for (i, (name, memchan, p)) in lines.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let style = if *memchan {
            color.stroke_width(3)
        } else {
            color.stroke_width(1)
        };
        c.draw_series(LineSeries::new(p.iter().copied(), style))
            .map_err(|e| err(&e))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        c.draw_series(p.iter().map(|&pt| Circle::new(pt, 3, color.filled())))
            .map_err(|e| err(&e))?;
    }
    c.configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// Draws every chart of `report` as `<prefix>-<name>.svg`; returns the files.
pub fn draw(report: &Value, prefix: &Path) -> Result<Vec<std::path::PathBuf>> {
    let file = |name: &str| {
        let mut p = prefix.as_os_str().to_owned();
        p.push(format!("-{name}.svg"));
        std::path::PathBuf::from(p)
    };
    let mut made = Vec::new();
    // Latency percentiles at 64 B: x = percentile.
    let pcts = ["p50 ns", "p99 ns", "p99.9 ns", "max ns"];
    let mut lat: Vec<Series> = Vec::new();
    for (i, m) in pcts.iter().enumerate() {
        for (name, memchan, p) in series(report, "latency", m, |r| {
            (r["size"] == 64).then_some(i as f64)
        }) {
            match lat.iter_mut().find(|(n, _, _)| *n == name) {
                Some((_, _, v)) => v.extend(p),
                None => lat.push((name, memchan, p)),
            }
        }
    }
    let f = file("latency");
    chart(
        &f,
        "one-way latency, 64 B (ping-pong / 2)",
        "percentile",
        "ns (log)",
        &lat,
        &|x| {
            pcts.get(x.round() as usize)
                .map_or(String::new(), |s| s.trim_end_matches(" ns").to_string())
        },
    )?;
    made.push(f);
    let readers = |r: &Value| r["readers"].as_f64();
    let f = file("fanout");
    chart(
        &f,
        "fan-out 1 -> N, 64 B: deliveries per second",
        "readers",
        "deliveries/s (log)",
        &series(report, "fanout", "deliveries/s", readers),
        &|x| format!("{x:.0}"),
    )?;
    made.push(f);
    let f = file("fanout-writer-cost");
    chart(
        &f,
        "fan-out 1 -> N: writer CPU time per message",
        "readers",
        "ns (log)",
        &series(report, "fanout", "writer CPU ns/msg", readers),
        &|x| format!("{x:.0}"),
    )?;
    made.push(f);
    let log_size = |r: &Value| r["size"].as_f64().map(f64::log2);
    let size_label = |x: f64| {
        let b = 2f64.powf(x).round();
        if b >= 1024.0 {
            format!("{:.0}K", b / 1024.0)
        } else {
            format!("{b:.0}")
        }
    };
    let f = file("size-throughput");
    chart(
        &f,
        "throughput by message size",
        "message size (bytes)",
        "MB/s (log)",
        &series(report, "size", "MB/s", log_size),
        &size_label,
    )?;
    made.push(f);
    let f = file("size-latency");
    chart(
        &f,
        "one-way latency p50 by message size",
        "message size (bytes)",
        "ns (log)",
        &series(report, "size", "p50 ns", log_size),
        &size_label,
    )?;
    made.push(f);
    Ok(made)
}
