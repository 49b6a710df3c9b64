//! Turns the output of `shmpipe bench --json` into an SVG chart: two panels of grouped bars, one
//! group per message size and one bar per transport, on log scales: the median round trip (with
//! a tick at the 99th percentile; lower is better) and the streaming throughput in bytes/s
//! (higher is better).
//!
//! ```sh
//! cargo run --release -- bench --json > bench.json
//! cargo run --example plot_bench -- bench.json docs/bench.svg
//! ```
//!
//! The SVG is written by hand (no plotting crate); `-` reads standard input, and without an
//! output path the SVG goes to standard output.

use std::fmt::Write as _;
use std::io::Read;

mod json;
use json::Json;

/// One bar's data: a transport at one size.
struct Point {
    transport: String,
    size: u64,
    rtt_median: f64,
    rtt_p99: f64,
    bytes_per_s: f64,
}

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (input, output) = match args.as_slice() {
        [i] => (i.as_str(), None),
        [i, o] => (i.as_str(), Some(o.as_str())),
        _ => return Err("usage: plot_bench BENCH.json|- [OUT.svg]".into()),
    };
    let text = if input == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        s
    } else {
        std::fs::read_to_string(input).map_err(|e| format!("{input}: {e}"))?
    };
    let points = read_points(&json::parse(&text)?)?;
    let title = format!(
        "shmpipe bench: {} transports, {} sizes",
        distinct(points.iter().map(|p| p.transport.clone())).len(),
        distinct(points.iter().map(|p| p.size)).len()
    );
    let svg = render(&points, &title);
    match output {
        Some(path) => {
            std::fs::write(path, svg).map_err(|e| format!("{path}: {e}"))?;
            eprintln!("wrote {path}");
        }
        None => print!("{svg}"),
    }
    Ok(())
}

/// The points of a `shmpipe bench --json` array.
fn read_points(v: &Json) -> Res<Vec<Point>> {
    let items = v.as_array().ok_or("expected a JSON array")?;
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let num = |k: &str| {
            item.get(k)
                .and_then(Json::as_f64)
                .ok_or_else(|| format!("element {i}: no number {k:?}"))
        };
        out.push(Point {
            transport: item
                .get("transport")
                .and_then(Json::as_str)
                .ok_or_else(|| format!("element {i}: no string \"transport\""))?
                .to_string(),
            size: num("size")? as u64,
            rtt_median: num("rtt_ns_median")?,
            rtt_p99: num("rtt_ns_p99")?,
            bytes_per_s: num("bytes_per_s")?,
        });
    }
    if out.is_empty() {
        return Err("no results in the file".into());
    }
    Ok(out)
}

/// The distinct values, in order of first appearance.
fn distinct<T: PartialEq>(it: impl Iterator<Item = T>) -> Vec<T> {
    let mut v = Vec::new();
    for x in it {
        if !v.contains(&x) {
            v.push(x);
        }
    }
    v
}

/// A colour per transport: shmpipe in blues and greens, the kernel's in warm colours,
/// iceoryx2 in purple.
fn colour(transport: &str, i: usize) -> &'static str {
    match transport {
        "thread-ring" => "#9ecae1",
        "shmpipe-spin" => "#2171b5",
        "shmpipe-batch" => "#08306b",
        "shmpipe" => "#41ab5d",
        "pipe" => "#e6550d",
        "unix-stream" => "#fd8d3c",
        "unix-seqpacket" => "#fdae6b",
        "tcp" => "#a63603",
        "iceoryx2" => "#6a51a3",
        _ => ["#756bb1", "#636363", "#bcbddc", "#969696"][i % 4],
    }
}

fn size_label(bytes: u64) -> String {
    if bytes >= 1024 && bytes % 1024 == 0 {
        format!("{} KiB", bytes / 1024)
    } else {
        format!("{bytes} B")
    }
}

/// A power of ten in ns as a time.
fn time_label(ns: f64) -> String {
    match ns {
        x if x >= 1e9 => format!("{} s", x / 1e9),
        x if x >= 1e6 => format!("{} ms", x / 1e6),
        x if x >= 1e3 => format!("{} µs", x / 1e3),
        x => format!("{x} ns"),
    }
}

/// A power of ten in bytes/s as a rate.
fn rate_label(r: f64) -> String {
    match r {
        x if x >= 1e9 => format!("{} GB/s", x / 1e9),
        x if x >= 1e6 => format!("{} MB/s", x / 1e6),
        x if x >= 1e3 => format!("{} kB/s", x / 1e3),
        x => format!("{x} B/s"),
    }
}

/// `x` with three significant digits (for x from 1 to 999).
fn sig3(x: f64) -> String {
    let decimals = if x >= 100.0 {
        0
    } else if x >= 10.0 {
        1
    } else {
        2
    };
    format!("{x:.decimals$}")
}

/// A time in ns, three significant digits.
fn time_text(ns: f64) -> String {
    match ns {
        x if x >= 1e6 => format!("{} ms", sig3(x / 1e6)),
        x if x >= 1e3 => format!("{} µs", sig3(x / 1e3)),
        x => format!("{x:.0} ns"),
    }
}

/// A rate in bytes/s, three significant digits.
fn rate_text(r: f64) -> String {
    match r {
        x if x >= 1e9 => format!("{} GB/s", sig3(x / 1e9)),
        x if x >= 1e6 => format!("{} MB/s", sig3(x / 1e6)),
        x if x >= 1e3 => format!("{} kB/s", sig3(x / 1e3)),
        x => format!("{x:.0} B/s"),
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const WIDTH: f64 = 1000.0;
const PANEL_HEIGHT: f64 = 330.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 20.0;

/// One panel: grouped bars of `value(p)` on a log axis, at `top`.
#[allow(clippy::too_many_arguments)]
fn panel(
    svg: &mut String,
    top: f64,
    heading: &str,
    points: &[Point],
    transports: &[String],
    sizes: &[u64],
    value: fn(&Point) -> f64,
    tick: Option<fn(&Point) -> f64>,
    label: fn(f64) -> String,
    text: fn(f64) -> String,
) {
    let plot_top = top + 60.0;
    let plot_bottom = top + PANEL_HEIGHT - 40.0;
    let values: Vec<f64> = points
        .iter()
        .flat_map(|p| [Some(value(p)), tick.map(|t| t(p))])
        .flatten()
        .filter(|v| *v > 0.0 && v.is_finite())
        .collect();
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(0.0, f64::max);
    let (lo, hi) = if values.is_empty() {
        (0.0, 1.0)
    } else {
        // A decade below the smallest value if it sits just above one, so its bar shows.
        let mut floor = lo.log10().floor();
        if lo.log10() - floor < 0.3 {
            floor -= 1.0;
        }
        (floor, hi.log10().ceil().max(floor + 1.0))
    };
    let y = |v: f64| {
        let f = ((v.max(1e-300).log10() - lo) / (hi - lo)).clamp(0.0, 1.0);
        plot_bottom - f * (plot_bottom - plot_top)
    };
    let _ = writeln!(
        svg,
        r#"<text x="{LEFT}" y="{}" font-size="15" font-weight="bold">{}</text>"#,
        top + 18.0,
        escape(heading)
    );
    // Decades and their minor lines.
    let mut d = lo;
    while d <= hi {
        let v = 10f64.powi(d as i32);
        let yy = y(v);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" x2="{}" y1="{yy:.1}" y2="{yy:.1}" stroke="#bbb"/><text x="{}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"##,
            WIDTH - RIGHT,
            LEFT - 6.0,
            yy + 4.0,
            escape(&label(v))
        );
        if d < hi {
            for m in 2..10 {
                let ym = y(v * m as f64);
                let _ = writeln!(
                    svg,
                    r##"<line x1="{LEFT}" x2="{}" y1="{ym:.1}" y2="{ym:.1}" stroke="#eee"/>"##,
                    WIDTH - RIGHT
                );
            }
        }
        d += 1.0;
    }
    let group_w = (WIDTH - LEFT - RIGHT) / sizes.len() as f64;
    let bar_w = (group_w - 24.0) / transports.len() as f64;
    for (g, &size) in sizes.iter().enumerate() {
        let gx = LEFT + g as f64 * group_w + 12.0;
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" font-size="13" text-anchor="middle">{}</text>"#,
            gx + (group_w - 24.0) / 2.0,
            plot_bottom + 20.0,
            size_label(size)
        );
        for (b, t) in transports.iter().enumerate() {
            let Some(p) = points.iter().find(|p| p.size == size && &p.transport == t) else {
                continue;
            };
            let v = value(p);
            if !(v > 0.0 && v.is_finite()) {
                continue;
            }
            let x = gx + b as f64 * bar_w;
            let yv = y(v);
            let _ = writeln!(
                svg,
                r#"<rect x="{x:.1}" y="{yv:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{} {}: {}</title></rect>"#,
                (bar_w - 2.0).max(1.0),
                plot_bottom - yv,
                colour(t, b),
                escape(t),
                size_label(size),
                escape(&text(v))
            );
            // The value above the bar, or above its whisker.
            let mut label_y = yv;
            if let Some(tick) = tick {
                let tv = tick(p);
                if tv > 0.0 && tv.is_finite() {
                    let ty = y(tv);
                    let cx = x + (bar_w - 2.0) / 2.0;
                    let _ = writeln!(
                        svg,
                        r##"<line x1="{cx:.1}" x2="{cx:.1}" y1="{yv:.1}" y2="{ty:.1}" stroke="#333" stroke-width="1"/><line x1="{:.1}" x2="{:.1}" y1="{ty:.1}" y2="{ty:.1}" stroke="#333" stroke-width="1.5"/>"##,
                        cx - bar_w / 4.0,
                        cx + bar_w / 4.0
                    );
                    label_y = label_y.min(ty);
                }
            }
            let _ = writeln!(
                svg,
                r##"<text transform="translate({:.1},{:.1}) rotate(-90)" font-size="9" fill="#222">{}</text>"##,
                x + bar_w / 2.0 + 3.0,
                label_y - 4.0,
                escape(&text(v))
            );
        }
    }
    let _ = writeln!(
        svg,
        r##"<line x1="{LEFT}" x2="{}" y1="{plot_bottom}" y2="{plot_bottom}" stroke="#333"/>"##,
        WIDTH - RIGHT
    );
}

fn render(points: &[Point], title: &str) -> String {
    let transports = distinct(points.iter().map(|p| p.transport.clone()));
    let mut sizes = distinct(points.iter().map(|p| p.size));
    sizes.sort_unstable();
    let legend_h = 70.0;
    let height = legend_h + 2.0 * PANEL_HEIGHT + 10.0;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif">"#
    );
    let _ = writeln!(
        svg,
        r#"<rect width="100%" height="100%" fill="white"/><text x="{LEFT}" y="22" font-size="17" font-weight="bold">{}</text>"#,
        escape(title)
    );
    let per_row = transports.len().clamp(1, 8);
    for (i, t) in transports.iter().enumerate() {
        let x = LEFT + (i % per_row) as f64 * 112.0;
        let y = 46.0 + (i / per_row) as f64 * 16.0;
        let _ = writeln!(
            svg,
            r#"<rect x="{x}" y="{}" width="12" height="12" fill="{}"/><text x="{}" y="{}" font-size="12">{}</text>"#,
            y - 10.0,
            colour(t, i),
            x + 16.0,
            y,
            escape(t)
        );
    }
    panel(
        &mut svg,
        legend_h,
        "Round trip, median (whisker: p99), lower is better",
        points,
        &transports,
        &sizes,
        |p| p.rtt_median,
        Some(|p| p.rtt_p99),
        time_label,
        time_text,
    );
    panel(
        &mut svg,
        legend_h + PANEL_HEIGHT,
        "Streaming throughput, bytes/s, higher is better",
        points,
        &transports,
        &sizes,
        |p| p.bytes_per_s,
        None,
        rate_label,
        rate_text,
    );
    svg.push_str("</svg>\n");
    svg
}
