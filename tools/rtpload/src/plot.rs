//! The latency plot, as SVG: each histogram's value against its percentile,
//! with the percentile on HdrHistogram's logarithmic "1/(1-p)" axis (so
//! 90%, 99%, 99.9% ... are evenly spaced and the tail gets the room), and
//! the value on a logarithmic axis too, since a jitter of microseconds and
//! a first packet of tens of milliseconds share the plot.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

use crate::output::Quantiles;

const WIDTH: f64 = 960.0;
/// The plot area's height and its margins; the legend goes below it, a
/// row per series.
const PLOT_HEIGHT: f64 = 400.0;
const LEFT: f64 = 84.0;
const RIGHT: f64 = 28.0;
const TOP: f64 = 84.0;
const AXIS: f64 = 56.0;
const LEGEND_ROW: f64 = 22.0;
/// Blue, orange, purple, red, green for first_packet, first_key_frame, jitter,
/// lateness, rtsp_response.
const PALETTE: [&str; 6] = ["#1f77b4", "#ff7f0e", "#9467bd", "#d62728", "#2ca02c", "#17becf"];

/// One line of the plot.
pub struct Series<'a> {
    pub name: &'a str,
    /// Microseconds.
    pub histogram: &'a Histogram<u64>,
}

/// The points of a series: (decades of 1/(1-p), value in ms).
fn points(h: &Histogram<u64>, decades: f64) -> Vec<(f64, f64)> {
    let mut v = Vec::new();
    if h.is_empty() {
        return v;
    }
    let last = (h.len() as f64).log10().min(decades);
    for it in h.iter_quantiles(5) {
        let q = it.quantile_iterated_to();
        let x = if q >= 1.0 {
            last
        } else {
            (1.0 / (1.0 - q)).log10().min(last)
        };
        let x = v.last().map_or(x, |&(px, _): &(f64, f64)| x.max(px));
        v.push((x, it.value_iterated_to() as f64 / 1_000.0));
    }
    v
}

/// `1 µs`, `20 ms`, `1.5 s`.
fn duration_label(ms: f64) -> String {
    let (v, unit) = if ms < 1.0 {
        (ms * 1_000.0, "µs")
    } else if ms < 1_000.0 {
        (ms, "ms")
    } else {
        (ms / 1_000.0, "s")
    };
    let text = format!("{v:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text} {unit}")
}

fn ms_label(ms: f64) -> String {
    if ms >= 100.0 {
        format!("{ms:.0} ms")
    } else if ms >= 1.0 {
        format!("{ms:.2} ms")
    } else {
        format!("{ms:.3} ms")
    }
}

/// `90%`, `99.99%`, for the x ticks (decade `d` is 1 - 10^-d).
fn percentile_label(d: u32) -> String {
    if d == 0 {
        return "0%".into();
    }
    let p = 100.0 - 100.0 / 10f64.powi(d as i32);
    let text = format!("{p:.*}", d.saturating_sub(2) as usize);
    format!("{text}%")
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The SVG document for `series` (empty ones are listed but not drawn).
pub fn svg(series: &[Series<'_>], title: &str, subtitle: &str) -> String {
    let max_count = series.iter().map(|s| s.histogram.len()).max().unwrap_or(0);
    let decades = ((max_count.max(10) as f64).log10().ceil()).clamp(1.0, 6.0);
    let lines: Vec<Vec<(f64, f64)>> = series.iter().map(|s| points(s.histogram, decades)).collect();
    let values = lines.iter().flatten().map(|p| p.1);
    let min_pos = values.clone().filter(|v| *v > 0.0).fold(f64::INFINITY, f64::min);
    let max_v = values.fold(0.0, f64::max);
    let y_lo = if min_pos.is_finite() {
        10f64.powf(min_pos.log10().floor()).max(0.001)
    } else {
        0.001
    };
    let y_hi = 10f64.powf(max_v.max(y_lo * 10.0).log10().ceil()).max(y_lo * 10.0);
    let (pw, ph) = (WIDTH - LEFT - RIGHT, PLOT_HEIGHT);
    let legend_rows = series.len() as f64;
    let height = TOP + ph + AXIS + 12.0 + LEGEND_ROW * legend_rows + 12.0;
    let px = |x: f64| LEFT + x / decades * pw;
    let py = |ms: f64| {
        let v = ms.max(y_lo);
        TOP + ph - (v / y_lo).log10() / (y_hi / y_lo).log10() * ph
    };

    let mut s = String::with_capacity(16 * 1024);
    let _ = write!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" \
         viewBox=\"0 0 {WIDTH} {height}\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>\n"
    );
    let _ = writeln!(
        s,
        "<text x=\"{LEFT}\" y=\"34\" font-size=\"20\" font-weight=\"bold\" fill=\"#222\">{}</text>",
        escape(title)
    );
    let _ = writeln!(
        s,
        "<text x=\"{LEFT}\" y=\"58\" font-size=\"13\" fill=\"#555\">{}</text>",
        escape(subtitle)
    );
    // Grid: value decades with light 2 and 5 between, percentile decades.
    let mut decade = y_lo;
    while decade <= y_hi * 1.0001 {
        let y = py(decade);
        let _ = writeln!(
            s,
            "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#d0d0d0\"/>\n\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\" text-anchor=\"end\" fill=\"#444\">{}</text>",
            LEFT + pw,
            LEFT - 8.0,
            y + 4.0,
            duration_label(decade)
        );
        for m in [2.0, 5.0] {
            if decade * m < y_hi {
                let y = py(decade * m);
                let _ = writeln!(
                    s,
                    "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#eeeeee\"/>",
                    LEFT + pw
                );
            }
        }
        decade *= 10.0;
    }
    for d in 0..=decades as u32 {
        let x = px(f64::from(d));
        // The last label would hang over the edge centred on its tick.
        let anchor = if d == decades as u32 { "end" } else { "middle" };
        let _ = writeln!(
            s,
            "<line x1=\"{x:.1}\" y1=\"{TOP}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#d0d0d0\"/>\n\
             <text x=\"{x:.1}\" y=\"{:.1}\" font-size=\"12\" text-anchor=\"{anchor}\" fill=\"#444\">{}</text>",
            TOP + ph,
            TOP + ph + 20.0,
            percentile_label(d)
        );
    }
    let _ = writeln!(
        s,
        "<rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{pw:.1}\" height=\"{ph:.1}\" fill=\"none\" stroke=\"#888\"/>\n\
         <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"13\" text-anchor=\"middle\" fill=\"#333\">percentile</text>\n\
         <text transform=\"translate(18 {:.1}) rotate(-90)\" font-size=\"13\" text-anchor=\"middle\" fill=\"#333\">\
         latency (log scale)</text>",
        LEFT + pw / 2.0,
        TOP + ph + 44.0,
        TOP + ph / 2.0
    );
    // The lines, then the legend over them.
    for (i, pts) in lines.iter().enumerate() {
        if pts.is_empty() {
            continue;
        }
        let color = PALETTE[i % PALETTE.len()];
        let mut path = String::new();
        for (k, &(x, v)) in pts.iter().enumerate() {
            let _ = write!(path, "{}{:.1},{:.1}", if k == 0 { "M" } else { " L" }, px(x), py(v));
        }
        let _ = writeln!(
            s,
            "<path d=\"{path}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2.2\" stroke-linejoin=\"round\"/>"
        );
    }
    // The legend, below the axis: each series' colour, name and figures.
    let legend_top = TOP + ph + AXIS + 12.0;
    for (i, series) in series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let x = LEFT;
        let y = legend_top + LEGEND_ROW * i as f64 + 14.0;
        let q = Quantiles::of(series.histogram);
        let figures = if q.count == 0 {
            "no samples".to_owned()
        } else {
            format!(
                "p50 {}  \u{b7}  p99 {}  \u{b7}  max {}  \u{b7}  {} samples",
                ms_label(q.p50_us as f64 / 1e3),
                ms_label(q.p99_us as f64 / 1e3),
                ms_label(q.max_us as f64 / 1e3),
                q.count
            )
        };
        let _ = writeln!(
            s,
            "<line x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"{color}\" stroke-width=\"3\"/>\n\
             <text x=\"{:.1}\" y=\"{y:.1}\" font-size=\"12\" fill=\"#222\"><tspan font-weight=\"bold\">{}</tspan>\
             <tspan x=\"{:.1}\" fill=\"#444\">{}</tspan></text>",
            y - 4.0,
            x + 22.0,
            y - 4.0,
            x + 30.0,
            escape(series.name),
            x + 150.0,
            escape(&figures)
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\" fill=\"#777\">\
         Early and on-time packets count as no lateness, drawn at the bottom of the axis.</text>",
        LEFT + pw,
        TOP - 8.0
    );
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::histogram;

    #[test]
    fn labels() {
        assert_eq!(percentile_label(0), "0%");
        assert_eq!(percentile_label(1), "90%");
        assert_eq!(percentile_label(2), "99%");
        assert_eq!(percentile_label(3), "99.9%");
        assert_eq!(percentile_label(5), "99.999%");
        assert_eq!(duration_label(0.001), "1 µs");
        assert_eq!(duration_label(0.1), "100 µs");
        assert_eq!(duration_label(10.0), "10 ms");
        assert_eq!(duration_label(10_000.0), "10 s");
    }

    #[test]
    fn draws_each_series_within_the_plot() {
        let mut a = histogram();
        let mut b = histogram();
        for i in 0..10_000u64 {
            a.record(100 + i % 900).unwrap();
            b.record(2_000 + i * 7).unwrap();
        }
        let empty = histogram();
        let doc = svg(
            &[
                Series {
                    name: "lateness",
                    histogram: &a,
                },
                Series {
                    name: "first_packet",
                    histogram: &b,
                },
                Series {
                    name: "jitter",
                    histogram: &empty,
                },
            ],
            "title <&>",
            "sub",
        );
        assert!(doc.starts_with("<svg ") && doc.ends_with("</svg>\n"));
        assert!(doc.contains("title &lt;&amp;&gt;"));
        assert_eq!(doc.matches("<path ").count(), 2, "empty series are not drawn");
        assert!(doc.contains("no samples"));
        // 10,000 samples: the axis goes to 99.99%.
        assert!(doc.contains(">99.99%<") && !doc.contains(">99.999%<"));
        // Every coordinate of every path is inside the plot area.
        for path in doc.split("<path d=\"").skip(1) {
            let d = &path[..path.find('"').unwrap()];
            for pair in d.split(['M', 'L']).map(str::trim).filter(|p| !p.is_empty()) {
                let (x, y) = pair.split_once(',').unwrap();
                let (x, y): (f64, f64) = (x.parse().unwrap(), y.parse().unwrap());
                assert!((LEFT - 0.1..=WIDTH - RIGHT + 0.1).contains(&x), "x {x}");
                assert!((TOP - 0.1..=TOP + PLOT_HEIGHT + 0.1).contains(&y), "y {y}");
            }
        }
    }
}
