//! `report`: a text table and a hand-written SVG plot from `run --json-out` lines.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::ExitCode;

use crate::ReportArgs;
use crate::run::RunResult;

pub(crate) fn main(args: &ReportArgs) -> ExitCode {
    let text = match std::fs::read_to_string(&args.input) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("cdnsign-loadtest: {}: {e}", args.input.display());
            return ExitCode::FAILURE;
        }
    };
    let mut results = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        match serde_json::from_str::<RunResult>(line) {
            Ok(r) => results.push(r),
            Err(e) => {
                eprintln!(
                    "cdnsign-loadtest: {} line {}: {e}",
                    args.input.display(),
                    i + 1
                );
                return ExitCode::FAILURE;
            }
        }
    }
    print!("{}", table(&results));
    if let Some(svg) = &args.svg {
        if let Err(e) = std::fs::write(svg, plot(&results)) {
            eprintln!("cdnsign-loadtest: {}: {e}", svg.display());
            return ExitCode::FAILURE;
        }
        println!("plot: {}", svg.display());
    }
    ExitCode::SUCCESS
}

fn mode(r: &RunResult) -> &'static str {
    match r.mode {
        crate::Mode::Unary => "unary",
        crate::Mode::Stream => "stream",
    }
}

fn table(results: &[RunResult]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<18} {:<6} {:<9} {:>6} {:>4} {:>8} {:>10} {:>9} {:>9} {:>9} {:>9} {:>10} {:>6} {:>8} {:>8} {:>9} {:>6}",
        "label",
        "mode",
        "alg",
        "batch",
        "conc",
        "rate/s",
        "URLs/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "openssl/s",
        "ratio",
        "RSS MiB",
        "growth",
        "CPU s/c",
        "eff"
    );
    for r in results {
        let rss = r.rss_kib.as_ref();
        let _ = writeln!(
            out,
            "{:<18} {:<6} {:<9} {:>6} {:>4} {:>8} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>10} {:>6} {:>8} {:>8} {:>9} {:>6}",
            truncate(&r.label, 18),
            mode(r),
            r.algorithm,
            format!("{}{}", r.batch, if r.playlist { "P" } else { "" }),
            r.concurrency,
            r.rate.map_or("-".to_owned(), |v| format!("{v:.0}")),
            r.urls_per_s,
            r.latency_us.p50 as f64 / 1000.0,
            r.latency_us.p90 as f64 / 1000.0,
            r.latency_us.p99 as f64 / 1000.0,
            r.latency_us.max as f64 / 1000.0,
            r.openssl_speed_sign_per_s
                .map_or("-".to_owned(), |v| format!("{v:.0}")),
            r.ratio_to_openssl
                .map_or("-".to_owned(), |v| format!("{v:.3}")),
            rss.map_or("-".to_owned(), |m| format!("{:.1}", m.max as f64 / 1024.0)),
            rss.map_or("-".to_owned(), |m| format!(
                "{:+.1}",
                (m.end as f64 - m.window_start as f64) / 1024.0
            )),
            r.cpu.as_ref().map_or("-".to_owned(), |c| format!(
                "{:.2}/{:.2}",
                c.server_cores, c.client_cores
            )),
            r.cpu_efficiency
                .map_or("-".to_owned(), |v| format!("{v:.2}")),
        );
        if r.failed_items > 0 || r.rpc_errors > 0 {
            let _ = writeln!(
                out,
                "    ^ {} failed items, {} RPC errors",
                r.failed_items, r.rpc_errors
            );
        }
    }
    let _ = writeln!(
        out,
        "(batch suffix P: playlist under one wildcard policy; ratio = URLs/s / openssl speed -multi N sign/s, same run; growth = RSS end - RSS at window start; CPU s/c = cores used by server / load generator; eff = URLs per server CPU-second / openssl speed 1 process)"
    );
    out
}

fn truncate(s: &str, n: usize) -> &str {
    s.char_indices().nth(n).map_or(s, |(i, _)| &s[..i])
}

const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf",
];

/// One panel's geometry: x is log10(batch), y linear or log10.
struct Panel {
    left: f64,
    top: f64,
    width: f64,
    height: f64,
    x_min: f64,
    x_max: f64,
    y_min: f64,
    y_max: f64,
    y_log: bool,
}

impl Panel {
    fn x(&self, batch: f64) -> f64 {
        let (a, b) = (self.x_min.log10(), self.x_max.log10());
        let t = if b > a {
            (batch.log10() - a) / (b - a)
        } else {
            0.5
        };
        self.left + t * self.width
    }

    fn y(&self, v: f64) -> f64 {
        let t = if self.y_log {
            let (a, b) = (self.y_min.log10(), self.y_max.log10());
            if b > a {
                (v.max(self.y_min).log10() - a) / (b - a)
            } else {
                0.5
            }
        } else if self.y_max > self.y_min {
            (v - self.y_min) / (self.y_max - self.y_min)
        } else {
            0.5
        };
        self.top + self.height - t.clamp(0.0, 1.0) * self.height
    }

    fn frame(&self, svg: &mut String, title: &str, y_label: &str) {
        let _ = writeln!(
            svg,
            r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="none" stroke="#444"/>"##,
            self.left, self.top, self.width, self.height
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" font-size="14" font-weight="bold">{}</text>"#,
            self.left,
            self.top - 8.0,
            esc(title)
        );
        let _ = writeln!(
            svg,
            r#"<text transform="translate({:.1},{:.1}) rotate(-90)" font-size="12" text-anchor="middle">{}</text>"#,
            self.left - 58.0,
            self.top + self.height / 2.0,
            esc(y_label)
        );
        // x ticks at powers of ten and the batch sizes between.
        let mut b = 1.0;
        while b <= self.x_max * 1.0001 {
            for m in [1.0, 2.0, 5.0] {
                let v = b * m;
                if v >= self.x_min * 0.9999 && v <= self.x_max * 1.0001 {
                    let x = self.x(v);
                    let _ = writeln!(
                        svg,
                        r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" font-size="11" text-anchor="middle">{v}</text>"##,
                        self.top,
                        self.top + self.height,
                        self.top + self.height + 14.0
                    );
                }
            }
            b *= 10.0;
        }
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle">URLs per request (batch size, log scale)</text>"#,
            self.left + self.width / 2.0,
            self.top + self.height + 32.0
        );
        // y ticks
        let ticks: Vec<f64> = if self.y_log {
            let mut v = Vec::new();
            let mut t = 10f64.powf(self.y_min.log10().floor());
            while t <= self.y_max * 1.0001 {
                if t >= self.y_min * 0.9999 {
                    v.push(t);
                }
                t *= 10.0;
            }
            v
        } else {
            (0..=5)
                .map(|i| self.y_min + (self.y_max - self.y_min) * f64::from(i) / 5.0)
                .collect()
        };
        for t in ticks {
            let y = self.y(t);
            let _ = writeln!(
                svg,
                r##"<line x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"##,
                self.left,
                self.left + self.width,
                self.left - 4.0,
                y + 4.0,
                human(t)
            );
        }
    }
}

fn human(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v >= 1.0 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn polyline(svg: &mut String, points: &[(f64, f64)], color: &str, dash: bool) {
    let pts: Vec<String> = points
        .iter()
        .map(|(x, y)| format!("{x:.1},{y:.1}"))
        .collect();
    let _ = writeln!(
        svg,
        r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"{}/>"#,
        pts.join(" "),
        if dash {
            r#" stroke-dasharray="6,4""#
        } else {
            ""
        }
    );
    for (x, y) in points {
        let _ = writeln!(
            svg,
            r#"<circle cx="{x:.1}" cy="{y:.1}" r="3" fill="{color}"/>"#
        );
    }
}

/// Throughput and latency against batch size, one series per (algorithm, mode), closed-loop
/// runs of distinct URLs only; dashed lines are `openssl speed -multi N` from the same runs.
fn plot(results: &[RunResult]) -> String {
    let mut series: BTreeMap<String, Vec<&RunResult>> = BTreeMap::new();
    for r in results
        .iter()
        .filter(|r| r.rate.is_none() && !r.playlist && r.urls > 0)
    {
        series
            .entry(format!("{} {}", r.algorithm, mode(r)))
            .or_default()
            .push(r);
    }
    for v in series.values_mut() {
        v.sort_by_key(|r| r.batch);
    }
    let all: Vec<&RunResult> = series.values().flatten().copied().collect();
    let x_min = all
        .iter()
        .map(|r| r.batch as f64)
        .fold(f64::INFINITY, f64::min)
        .min(1.0);
    let x_max = all
        .iter()
        .map(|r| r.batch as f64)
        .fold(1.0, f64::max)
        .max(10.0);
    let mut speeds: BTreeMap<String, f64> = BTreeMap::new();
    for r in &all {
        if let Some(s) = r.openssl_speed_sign_per_s {
            let e = speeds.entry(r.algorithm.clone()).or_insert(0.0);
            *e = e.max(s);
        }
    }
    let tp_max = all
        .iter()
        .map(|r| r.urls_per_s)
        .chain(speeds.values().copied())
        .fold(1.0, f64::max)
        * 1.1;
    let lat_min = all
        .iter()
        .map(|r| r.latency_us.p50 as f64 / 1000.0)
        .fold(f64::INFINITY, f64::min)
        .max(0.01);
    let lat_max = all
        .iter()
        .map(|r| r.latency_us.p99 as f64 / 1000.0)
        .fold(1.0, f64::max);

    let (w, h) = (900.0, 820.0);
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif">"#
    );
    let _ = writeln!(svg, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let top = Panel {
        left: 80.0,
        top: 40.0,
        width: 560.0,
        height: 300.0,
        x_min,
        x_max,
        y_min: 0.0,
        y_max: tp_max,
        y_log: false,
    };
    top.frame(
        &mut svg,
        "cdnsign throughput (client and server on the same machine)",
        "signed URLs per second",
    );
    let bottom = Panel {
        left: 80.0,
        top: 440.0,
        width: 560.0,
        height: 300.0,
        x_min,
        x_max,
        y_min: 10f64.powf(lat_min.log10().floor()),
        y_max: 10f64.powf(lat_max.log10().ceil()),
        y_log: true,
    };
    bottom.frame(
        &mut svg,
        "request latency: p50 (solid) and p99 (dashed)",
        "milliseconds (log scale)",
    );

    let mut legend_y = 60.0;
    for (i, (name, runs)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let tp: Vec<(f64, f64)> = runs
            .iter()
            .map(|r| (top.x(r.batch as f64), top.y(r.urls_per_s)))
            .collect();
        polyline(&mut svg, &tp, color, false);
        let p50: Vec<(f64, f64)> = runs
            .iter()
            .map(|r| {
                (
                    bottom.x(r.batch as f64),
                    bottom.y(r.latency_us.p50 as f64 / 1000.0),
                )
            })
            .collect();
        polyline(&mut svg, &p50, color, false);
        let p99: Vec<(f64, f64)> = runs
            .iter()
            .map(|r| {
                (
                    bottom.x(r.batch as f64),
                    bottom.y(r.latency_us.p99 as f64 / 1000.0),
                )
            })
            .collect();
        polyline(&mut svg, &p99, color, true);
        let _ = writeln!(
            svg,
            r#"<rect x="660" y="{:.1}" width="14" height="4" fill="{color}"/><text x="680" y="{:.1}" font-size="12">{}</text>"#,
            legend_y - 4.0,
            legend_y,
            esc(name)
        );
        legend_y += 18.0;
    }
    for (alg, s) in &speeds {
        let y = top.y(*s);
        let _ = writeln!(
            svg,
            r##"<line x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#888" stroke-dasharray="3,3"/><text x="{:.1}" y="{:.1}" font-size="11" fill="#555">openssl speed -multi {alg}: {s:.0}/s</text>"##,
            top.left,
            top.left + top.width,
            top.left + top.width + 6.0,
            y + 4.0
        );
    }
    let _ = writeln!(svg, "</svg>");
    svg
}
