//! The PNG: `/catalog` p99 and success rate per second, one line per
//! configuration, the slow phase shaded.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::http::BoxError;
use crate::report::{CatalogStats, Summary};
use crate::scenario::Scenario;

const FONT_CANDIDATES: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

/// Loads a TrueType font for the labels: `PROBITY_LAB_FONT`, or DejaVu
/// Sans where Debian, Fedora or Arch put it.
fn register_font() -> Result<(), BoxError> {
    let path = match std::env::var("PROBITY_LAB_FONT") {
        Ok(path) => path,
        Err(_) => FONT_CANDIDATES
            .iter()
            .find(|p| Path::new(p).exists())
            .map(|p| (*p).to_owned())
            .ok_or(
                "no TrueType font for the plot: set PROBITY_LAB_FONT=/path/to/font.ttf \
                 (Debian: apt-get install fonts-dejavu-core)",
            )?,
    };
    let bytes = std::fs::read(&path).map_err(|e| format!("reading font {path}: {e}"))?;
    // The font registry keeps fonts for the life of the process.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| format!("{path} is not a TrueType font"))?;
    Ok(())
}

const COLOURS: [RGBColor; 4] = [
    RGBColor(214, 39, 40),
    RGBColor(255, 127, 14),
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
];

/// Draws the two panels into `path`.
pub(crate) fn draw(
    path: &Path,
    summaries: &[Summary],
    scenario: &Scenario,
) -> Result<(), BoxError> {
    register_font()?;
    let root = BitMapBackend::new(path, (1200, 900)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(450);
    let max_ms = scenario.client_timeout.as_secs_f64() * 1000.0 * 1.5;
    panel(
        &top,
        scenario,
        "/catalog p99 per second (log scale); payments slow in the shaded span",
        "p99 (ms)",
        (1f64..max_ms).log_scale(),
        (1.0, max_ms),
        SeriesLabelPosition::UpperLeft,
        summaries,
        |c| (c.p99.as_secs_f64() * 1000.0).clamp(1.0, max_ms),
    )?;
    panel(
        &bottom,
        scenario,
        "/catalog success rate per second",
        "success (%)",
        0f64..105f64,
        (0.0, 105.0),
        SeriesLabelPosition::LowerLeft,
        summaries,
        |c| c.success() * 100.0,
    )?;
    root.present()?;
    Ok(())
}

/// One panel: a line per configuration of `value` for each second.
#[allow(clippy::too_many_arguments)]
fn panel<Y>(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    scenario: &Scenario,
    caption: &str,
    y_desc: &str,
    y_range: Y,
    (y_low, y_high): (f64, f64),
    legend_at: SeriesLabelPosition,
    summaries: &[Summary],
    value: impl Fn(&CatalogStats) -> f64,
) -> Result<(), BoxError>
where
    Y: plotters::coord::ranged1d::AsRangedCoord<Value = f64>,
    Y::CoordDescType: plotters::coord::ranged1d::ValueFormatter<f64>,
{
    let total = scenario.total().as_secs_f64();
    let slow = (
        scenario.healthy.as_secs_f64(),
        (scenario.healthy + scenario.slow).as_secs_f64(),
    );
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 22))
        .margin(12)
        .margin_right(36)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..total, y_range)?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc(y_desc)
        .label_style(("sans-serif", 14))
        .draw()?;
    chart.draw_series(std::iter::once(Rectangle::new(
        [(slow.0, y_low), (slow.1, y_high)],
        RGBColor(250, 225, 225).filled(),
    )))?;
    for (s, colour) in summaries.iter().zip(COLOURS) {
        let points = s
            .per_second
            .iter()
            .enumerate()
            .filter(|(_, c)| c.requests > 0)
            .map(|(i, c)| (i as f64 + 0.5, value(c)));
        chart
            .draw_series(LineSeries::new(points, colour.stroke_width(2)))?
            .label(s.config.name())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], colour.stroke_width(3))
            });
    }
    chart
        .configure_series_labels()
        .position(legend_at)
        .label_font(("sans-serif", 15))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}
