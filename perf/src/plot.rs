//! Line charts as SVG, for benchmark figures a person would rather look at
//! than read: a few series of points over logarithmic axes, with a grid,
//! tick labels and a legend. Several charts go side by side in one file.

use std::fmt::Write as _;

const WIDTH: f64 = 560.0;
const HEIGHT: f64 = 380.0;
const LEFT: f64 = 76.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 52.0;
const BOTTOM: f64 = 52.0;
const LEGEND_ROW: f64 = 20.0;
pub const PALETTE: [&str; 6] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf"];

/// One series: a name for the legend, a colour, and (x, y) points; a dashed
/// series is drawn as a reference line (a limit, a goal).
pub struct Series {
    pub name: String,
    pub color: &'static str,
    pub points: Vec<(f64, f64)>,
    pub dashed: bool,
}

/// One chart: both axes logarithmic (base 10), which suits sessions that
/// double per step and figures that span decades.
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
}

/// The charts side by side, as one SVG document.
pub fn svg(charts: &[Chart]) -> String {
    let rows = charts.iter().map(|c| c.series.len()).max().unwrap_or(0);
    let total_h = HEIGHT + rows as f64 * LEGEND_ROW + 12.0;
    let total_w = WIDTH * charts.len().max(1) as f64;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{total_w}" height="{total_h}" viewBox="0 0 {total_w} {total_h}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    for (i, chart) in charts.iter().enumerate() {
        draw(&mut out, chart, i as f64 * WIDTH);
    }
    out.push_str("</svg>\n");
    out
}

/// The powers of ten covering `lo..=hi`, widened to whole decades.
fn decades(lo: f64, hi: f64) -> (f64, f64) {
    let lo = lo.max(f64::MIN_POSITIVE).log10().floor();
    let hi = hi.max(f64::MIN_POSITIVE).log10().ceil();
    (lo, if hi <= lo { lo + 1.0 } else { hi })
}

fn label(v: f64) -> String {
    if v >= 1e6 {
        format!("{}M", trim(v / 1e6))
    } else if v >= 1e3 {
        format!("{}k", trim(v / 1e3))
    } else {
        trim(v)
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn draw(out: &mut String, chart: &Chart, x0: f64) {
    let points = chart
        .series
        .iter()
        .flat_map(|s| s.points.iter())
        .filter(|p| p.0 > 0.0 && p.1 > 0.0);
    let (mut xmin, mut xmax, mut ymin, mut ymax) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in points {
        (xmin, xmax, ymin, ymax) = (xmin.min(x), xmax.max(x), ymin.min(y), ymax.max(y));
    }
    if xmin > xmax {
        (xmin, xmax, ymin, ymax) = (1.0, 10.0, 1.0, 10.0);
    }
    let (xd0, xd1) = decades(xmin, xmax);
    let (yd0, yd1) = decades(ymin, ymax);
    let (pw, ph) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
    let px = |x: f64| x0 + LEFT + (x.log10() - xd0) / (xd1 - xd0) * pw;
    let py = |y: f64| TOP + ph - (y.log10() - yd0) / (yd1 - yd0) * ph;
    let _ = writeln!(
        out,
        r#"<text x="{}" y="24" font-size="15" font-weight="bold" text-anchor="middle">{}</text>"#,
        x0 + WIDTH / 2.0,
        escape(&chart.title)
    );
    // Grid: decades strong, 2 and 5 faint, labelled.
    for (d0, d1, horizontal) in [(xd0, xd1, false), (yd0, yd1, true)] {
        let mut d = d0;
        while d <= d1 {
            for m in [1.0, 2.0, 5.0] {
                let v = 10f64.powf(d) * m;
                if v.log10() > d1 + 1e-9 {
                    break;
                }
                let stroke = if m == 1.0 { "#c8c8c8" } else { "#ececec" };
                if horizontal {
                    let y = py(v);
                    let _ = writeln!(
                        out,
                        r#"<line x1="{}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="{stroke}"/><text x="{}" y="{:.1}" text-anchor="end" fill="dimgray">{}</text>"#,
                        x0 + LEFT,
                        x0 + LEFT + pw,
                        x0 + LEFT - 6.0,
                        y + 4.0,
                        label(v)
                    );
                } else {
                    let x = px(v);
                    let _ = writeln!(
                        out,
                        r#"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{}" stroke="{stroke}"/><text x="{x:.1}" y="{}" text-anchor="middle" fill="dimgray">{}</text>"#,
                        TOP + ph,
                        TOP + ph + 16.0,
                        label(v)
                    );
                }
            }
            d += 1.0;
        }
    }
    let _ = writeln!(
        out,
        r##"<rect x="{}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#555"/>"##,
        x0 + LEFT
    );
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        x0 + LEFT + pw / 2.0,
        TOP + ph + 36.0,
        escape(&chart.x_label)
    );
    let _ = writeln!(
        out,
        r#"<text transform="translate({},{}) rotate(-90)" text-anchor="middle">{}</text>"#,
        x0 + 18.0,
        TOP + ph / 2.0,
        escape(&chart.y_label)
    );
    for (i, s) in chart.series.iter().enumerate() {
        let pts: Vec<String> = s
            .points
            .iter()
            .filter(|p| p.0 > 0.0 && p.1 > 0.0)
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let dash = if s.dashed { r#" stroke-dasharray="6 4""# } else { "" };
        if pts.len() > 1 {
            let _ = writeln!(
                out,
                r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"{dash}/>"#,
                pts.join(" "),
                s.color
            );
        }
        if !s.dashed {
            for p in &pts {
                let (x, y) = p.split_once(',').expect("x,y");
                let _ = writeln!(out, r#"<circle cx="{x}" cy="{y}" r="3.5" fill="{}"/>"#, s.color);
            }
        }
        let ly = HEIGHT + i as f64 * LEGEND_ROW;
        let _ = writeln!(
            out,
            r#"<line x1="{}" y1="{ly}" x2="{}" y2="{ly}" stroke="{}" stroke-width="3"{dash}/><text x="{}" y="{}">{}</text>"#,
            x0 + LEFT,
            x0 + LEFT + 24.0,
            s.color,
            x0 + LEFT + 32.0,
            ly + 4.0,
            escape(&s.name)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_series_on_log_axes() {
        let chart = Chart {
            title: "a < b".into(),
            x_label: "sessions".into(),
            y_label: "ms".into(),
            series: vec![
                Series {
                    name: "measured".into(),
                    color: PALETTE[0],
                    points: vec![(500.0, 0.2), (1000.0, 0.4), (2000.0, 3.0)],
                    dashed: false,
                },
                Series {
                    name: "goal".into(),
                    color: PALETTE[1],
                    points: vec![(500.0, 2.0), (2000.0, 2.0)],
                    dashed: true,
                },
            ],
        };
        let s = svg(&[chart]);
        assert!(s.starts_with("<svg") && s.ends_with("</svg>\n"));
        assert!(s.contains("a &lt; b"), "titles are escaped");
        assert_eq!(s.matches("<circle").count(), 3, "markers for measured points only");
        assert_eq!(s.matches("<polyline").count(), 2);
        assert!(s.contains(">1k<") && s.contains(">0.2<"), "tick labels");
    }
}
