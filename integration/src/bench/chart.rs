//! `--svg`: the medians of a run as a bar chart, one group of horizontal bars per step
//! and one bar per endpoint, so a comparison can be shown as a picture (BENCHMARKS.md).
//! Horizontal, because step names ("pod + container running") are long.

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::Path;

/// The bars' colours, one per endpoint in order (then round again).
pub const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// `#RRGGBB` of the colour endpoint `k`'s bars are drawn in, as the SVG spells it.
pub fn color_hex(k: usize) -> String {
    let RGBColor(r, g, b) = PALETTE[k % PALETTE.len()];
    format!("#{r:02X}{g:02X}{b:02X}")
}

/// One endpoint's bars: its label and a value per step (NaN: no bar).
pub struct Series {
    pub label: String,
    pub values: Vec<f64>,
}

const BAR: u32 = 18;
const GAP: u32 = 14;
const FONT: u32 = 14;

/// Writes the chart of `series` over `steps` to `path`; `unit` names the values' unit.
pub fn write_svg(
    path: &Path,
    title: &str,
    unit: &str,
    steps: &[String],
    series: &[Series],
) -> anyhow::Result<()> {
    anyhow::ensure!(!steps.is_empty() && !series.is_empty(), "nothing to chart");
    let n = series.len() as u32;
    let group = n * BAR + GAP;
    // Room for the step names at the left: the naive font is about 0.6 em wide a glyph.
    let longest = steps.iter().map(|s| s.chars().count()).max().unwrap_or(0) as u32;
    let label_area = 20 + longest * FONT * 6 / 10;
    let legend = 24 * n + 16;
    let height = 70 + steps.len() as u32 * group + 40 + legend;
    let width = (label_area + 640).max(800);
    let max = series
        .iter()
        .flat_map(|s| s.values.iter().copied())
        .filter(|v| v.is_finite())
        .fold(0.0_f64, f64::max);
    let x_max = if max > 0.0 { max * 1.15 } else { 1.0 };
    let y_max = steps.len() as f64;

    let root = SVGBackend::new(path, (width, height)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_err)?;
    let (chart_area, legend_area) = root.split_vertically(height - legend);
    let mut chart = ChartBuilder::on(&chart_area)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .margin_left(label_area)
        .x_label_area_size(36)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(0)
        .x_max_light_lines(1)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .x_desc(format!("median {unit}"))
        .label_style(("sans-serif", FONT))
        .draw()
        .map_err(draw_err)?;

    // Step i occupies y in [n_steps - i - 1, n_steps - i) so the first step is on top;
    // its bars fill that band but for a gap, one slice each.
    let slice = (1.0 - f64::from(GAP) / f64::from(group)) / f64::from(n);
    let text = TextStyle::from(("sans-serif", FONT).into_font());
    for (k, s) in series.iter().enumerate() {
        let color = PALETTE[k % PALETTE.len()];
        let bars = s.values.iter().enumerate().filter(|(_, v)| v.is_finite()).map(|(i, v)| {
            let top = y_max - i as f64 - f64::from(GAP) / f64::from(group) / 2.0 - slice * k as f64;
            Rectangle::new([(0.0, top), (*v, top - slice)], color.filled())
        });
        chart.draw_series(bars).map_err(draw_err)?;
        for (i, v) in s.values.iter().enumerate().filter(|(_, v)| v.is_finite()) {
            let mid = y_max
                - i as f64
                - f64::from(GAP) / f64::from(group) / 2.0
                - slice * (k as f64 + 0.5);
            let (px, py) = chart.backend_coord(&(*v, mid));
            let style = text.pos(Pos::new(HPos::Left, VPos::Center));
            chart_area
                .draw(&Text::new(format!("{v:.1}"), (px + 4, py), style))
                .map_err(draw_err)?;
        }
    }
    for (i, step) in steps.iter().enumerate() {
        let (px, py) = chart.backend_coord(&(0.0, y_max - i as f64 - 0.5));
        let style = text.pos(Pos::new(HPos::Right, VPos::Center));
        chart_area.draw(&Text::new(step.clone(), (px - 8, py), style)).map_err(draw_err)?;
    }
    // The legend below the chart, one line per endpoint.
    for (k, s) in series.iter().enumerate() {
        let y = 8 + 24 * k as i32 + 12;
        let x = label_area as i32;
        let color = PALETTE[k % PALETTE.len()];
        legend_area
            .draw(&Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled()))
            .map_err(draw_err)?;
        let style = text.pos(Pos::new(HPos::Left, VPos::Center));
        legend_area.draw(&Text::new(s.label.clone(), (x + 22, y), style)).map_err(draw_err)?;
    }
    root.present().map_err(draw_err)?;
    Ok(())
}

fn draw_err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing the chart: {e}")
}
