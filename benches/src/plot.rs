//! A hand-written SVG line chart of drain ns/record by record size, one line per consumer.

use std::fmt::Write as _;

use crate::drain::SizeResult;
use crate::drainers::Impl;

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 440.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 190.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;

fn color(which: Impl) -> &'static str {
    match which {
        Impl::Batch => "#d62728",
        Impl::Callback => "#ff7f0e",
        Impl::Copy => "#9467bd",
        Impl::BatchMemcpy => "#8c564b",
        Impl::Libbpf => "#1f77b4",
        Impl::Aya => "#2ca02c",
        Impl::Hand => "#555555",
        Impl::HandPrefetch => "#17becf",
    }
}

/// The chart: x is the record size (log scale if `log_x`, else linear), y the median
/// ns/record (log scale), one line for each implementation measured.
pub fn svg(results: &[SizeResult], log_x: bool) -> String {
    let mut out = String::new();
    let Some(first) = results.first() else {
        return out;
    };
    let impls: Vec<Impl> = Impl::ALL.into_iter().filter(|&i| first.has(i)).collect();
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let scale = |size: usize| {
        if log_x {
            (size as f64).log2()
        } else {
            size as f64
        }
    };
    let x_min = scale(results.iter().map(|r| r.size).min().unwrap());
    let x_max = scale(results.iter().map(|r| r.size).max().unwrap());
    let x = |size: usize| {
        let span = (x_max - x_min).max(1e-9);
        LEFT + (scale(size) - x_min) / span * plot_w
    };
    // y is logarithmic: the copying reader is ten times slower at large records, and
    // the zero-copy readers differ by a few percent; a linear axis would flatten them.
    let all_ns: Vec<f64> = results
        .iter()
        .flat_map(|r| impls.iter().map(|&i| r.median(i)))
        .collect();
    let max_ns = all_ns.iter().copied().fold(0.0, f64::max);
    let min_ns = all_ns.iter().copied().fold(f64::INFINITY, f64::min);
    let ticks: Vec<f64> = (-1..4)
        .flat_map(|e| [1.0, 2.0, 5.0].map(|m| m * 10f64.powi(e)))
        .collect();
    let y_min = ticks
        .iter()
        .copied()
        .filter(|&t| t <= min_ns)
        .fold(0.1, f64::max);
    let y_max = ticks
        .iter()
        .copied()
        .find(|&t| t >= max_ns)
        .unwrap_or(max_ns);
    let y = |ns: f64| {
        let span = (y_max.log10() - y_min.log10()).max(1e-9);
        TOP + plot_h - (ns.log10() - y_min.log10()) / span * plot_h
    };

    writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12">"#
    )
    .unwrap();
    writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#).unwrap();
    writeln!(
        out,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}, {}: ns per record (median)</text>"#,
        LEFT + plot_w / 2.0,
        crate::drain::title(first.ring_size),
        first.workload.name()
    )
    .unwrap();
    // Axes and grid.
    for tick in ticks.iter().copied().filter(|&t| t >= y_min && t <= y_max) {
        let ty = y(tick);
        writeln!(
            out,
            r##"<line x1="{LEFT}" y1="{ty:.1}" x2="{:.1}" y2="{ty:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + plot_w,
            LEFT - 6.0,
            ty + 4.0,
            trim(tick)
        )
        .unwrap();
    }
    let mut last_label_x = f64::NEG_INFINITY;
    for result in results {
        // On a linear axis of many sizes, label every 32 bytes.
        if !log_x && results.len() > 12 && result.size % 32 != 0 {
            continue;
        }
        let tx = x(result.size);
        // Labels closer than 30 px to the previous one go one line lower.
        let label_y = if tx - last_label_x < 30.0 {
            TOP + plot_h + 30.0
        } else {
            last_label_x = tx;
            TOP + plot_h + 16.0
        };
        writeln!(
            out,
            r##"<line x1="{tx:.1}" y1="{TOP}" x2="{tx:.1}" y2="{:.1}" stroke="#eee"/><text x="{tx:.1}" y="{label_y:.1}" text-anchor="middle">{}</text>"##,
            TOP + plot_h,
            result.size
        )
        .unwrap();
    }
    writeln!(
        out,
        r#"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="black"/>"#
    )
    .unwrap();
    writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">record payload size, bytes{}</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 10.0,
        if log_x { " (log scale)" } else { "" }
    )
    .unwrap();
    writeln!(
        out,
        r#"<text transform="translate(18 {:.1}) rotate(-90)" text-anchor="middle">ns per record (log scale)</text>"#,
        TOP + plot_h / 2.0
    )
    .unwrap();
    // One line per implementation (ours-batch drawn last, on top), and the legend.
    for (index, &which) in impls.iter().enumerate().rev() {
        let points: Vec<String> = results
            .iter()
            .map(|r| format!("{:.1},{:.1}", x(r.size), y(r.median(which))))
            .collect();
        let dash = if matches!(which, Impl::Hand | Impl::HandPrefetch) {
            r#" stroke-dasharray="5,4""#
        } else {
            ""
        };
        writeln!(
            out,
            r#"<polyline fill="none" stroke="{}" stroke-width="2"{dash} points="{}"/>"#,
            color(which),
            points.join(" ")
        )
        .unwrap();
        for point in &points {
            let (px, py) = point.split_once(',').unwrap();
            writeln!(
                out,
                r#"<circle cx="{px}" cy="{py}" r="3" fill="{}"/>"#,
                color(which)
            )
            .unwrap();
        }
        let ly = TOP + 10.0 + index as f64 * 20.0;
        let lx = LEFT + plot_w + 15.0;
        writeln!(
            out,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{}" stroke-width="2"{dash}/><text x="{}" y="{}">{}</text>"#,
            lx + 24.0,
            color(which),
            lx + 30.0,
            ly + 4.0,
            which.name()
        )
        .unwrap();
    }
    writeln!(out, "</svg>").unwrap();
    out
}

fn trim(value: f64) -> String {
    let text = format!("{value:.2}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}
