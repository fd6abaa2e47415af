//! ROC and DET curves (`twinseal eval --plot FILE.png`).
//! Labels need a TrueType font (DejaVu or Liberation Sans, looked up in the
//! usual places); without one the curves are drawn unlabelled.

use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::coord::Shift;
use plotters::prelude::*;
use twinseal_siamese::metrics::{CurvePoint, Report};

/// Fonts tried for PNG text; SVG text needs no font file.
const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

fn register_font() -> bool {
    static DONE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *DONE.get_or_init(|| {
        for p in FONT_PATHS {
            if let Ok(bytes) = std::fs::read(p) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        false
    })
}

pub fn roc_det(path: &Path, curve: &[CurvePoint], r: &Report) -> Result<()> {
    let text = register_font();
    if !text {
        eprintln!(
            "warning: no TrueType font found (install fonts-dejavu-core): the plot has no labels"
        );
    }
    let root = BitMapBackend::new(path, (1200, 560)).into_drawing_area();
    draw(&root, curve, r, text)?;
    root.present()
        .map_err(|e| anyhow!("writing {}: {e}", path.display()))?;
    Ok(())
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    curve: &[CurvePoint],
    r: &Report,
    text: bool,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("drawing the plot: {e:?}");
    root.fill(&WHITE).map_err(err)?;
    let (left, right) = root.split_horizontally(600);
    // ROC: true accept rate (1 - FRR) against FAR.
    let mut b = ChartBuilder::on(&left);
    b.margin(20)
        .x_label_area_size(if text { 40 } else { 0 })
        .y_label_area_size(if text { 50 } else { 0 });
    if text {
        b.caption(format!("ROC (AUC {:.4})", r.roc_auc), ("sans-serif", 22));
    }
    let mut roc = b.build_cartesian_2d(0f64..1f64, 0f64..1f64).map_err(err)?;
    if text {
        roc.configure_mesh()
            .x_desc("false accept rate")
            .y_desc("true accept rate")
            .draw()
            .map_err(err)?;
    }
    roc.draw_series(LineSeries::new(
        curve.iter().map(|p| (p.far, 1.0 - p.frr)),
        BLUE.stroke_width(2),
    ))
    .map_err(err)?;
    roc.draw_series(std::iter::once(Circle::new(
        (r.far, 1.0 - r.frr),
        5,
        RED.filled(),
    )))
    .map_err(err)?;
    // DET: FRR against FAR on log axes.
    let floor = 1e-4;
    let mut b = ChartBuilder::on(&right);
    b.margin(20)
        .x_label_area_size(if text { 40 } else { 0 })
        .y_label_area_size(if text { 50 } else { 0 });
    if text {
        b.caption(format!("DET (EER {:.4})", r.eer), ("sans-serif", 22));
    }
    let mut det = b
        .build_cartesian_2d((floor..1f64).log_scale(), (floor..1f64).log_scale())
        .map_err(err)?;
    if text {
        det.configure_mesh()
            .x_desc("false accept rate")
            .y_desc("false reject rate")
            .draw()
            .map_err(err)?;
    }
    det.draw_series(LineSeries::new(
        curve
            .iter()
            .filter(|p| p.far > 0.0 && p.frr > 0.0)
            .map(|p| (p.far.max(floor), p.frr.max(floor))),
        BLUE.stroke_width(2),
    ))
    .map_err(err)?;
    det.draw_series(LineSeries::new(
        [(floor, floor), (1.0, 1.0)],
        BLACK.mix(0.3),
    ))
    .map_err(err)?;
    Ok(())
}
