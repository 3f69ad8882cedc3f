//! A bitmap backend that draws text itself, glyph by glyph, from the embedded font.
//!
//! plotters 0.3.7's `ab_glyph` renderer places each glyph's bitmap at the pen position
//! and drops the glyph's left side bearing, so "AUROC" reads "AUR OC". This wrapper
//! forwards all shapes to [`BitMapBackend`] and replaces `draw_text` and
//! `estimate_text_size`, keeping plotters' text box (the advance widths plus kerning,
//! `size / 1.24` high) so that legends and label areas laid out by plotters still fit.

use ab_glyph::{Font, FontRef, GlyphId, PxScale, ScaleFont};
use plotters::backend::{BitMapBackend, DrawingBackend};
use plotters_backend::text_anchor::{HPos, VPos};
use plotters_backend::{
    BackendColor, BackendCoord, BackendStyle, BackendTextStyle, DrawingErrorKind,
};

type BitMapError = <BitMapBackend<'static> as DrawingBackend>::ErrorType;
type DrawResult = Result<(), DrawingErrorKind<BitMapError>>;

/// [`BitMapBackend`] with correct glyph placement from `font`, whatever family is asked.
pub(super) struct TextBackend<'a> {
    inner: BitMapBackend<'a>,
    font: &'static FontRef<'static>,
}

impl<'a> TextBackend<'a> {
    pub(super) fn new(inner: BitMapBackend<'a>, font: &'static FontRef<'static>) -> Self {
        Self { inner, font }
    }

    /// Glyphs of `text` at `size` px with their pen positions, and the advance width.
    fn layout(&self, text: &str, size: f64) -> (Vec<(GlyphId, f32)>, f32) {
        let font = self.font.as_scaled(PxScale::from(size as f32));
        let mut pen = 0.0f32;
        let mut previous = None;
        let mut glyphs = Vec::with_capacity(text.len());
        for c in text.chars() {
            let id = font.glyph_id(c);
            if let Some(previous) = previous {
                pen += font.kern(previous, id);
            }
            glyphs.push((id, pen));
            pen += font.h_advance(id);
            previous = Some(id);
        }
        (glyphs, pen)
    }
}

/// Height of plotters' text box for a font of `size` px (its `ab_glyph` estimate).
fn box_height(size: f64) -> i32 {
    (size / 1.24) as i32
}

impl DrawingBackend for TextBackend<'_> {
    type ErrorType = BitMapError;

    fn get_size(&self) -> (u32, u32) {
        self.inner.get_size()
    }

    fn ensure_prepared(&mut self) -> DrawResult {
        self.inner.ensure_prepared()
    }

    fn present(&mut self) -> DrawResult {
        self.inner.present()
    }

    fn draw_pixel(&mut self, point: BackendCoord, color: BackendColor) -> DrawResult {
        self.inner.draw_pixel(point, color)
    }

    fn draw_line<S: BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> DrawResult {
        self.inner.draw_line(from, to, style)
    }

    fn draw_rect<S: BackendStyle>(
        &mut self,
        upper_left: BackendCoord,
        bottom_right: BackendCoord,
        style: &S,
        fill: bool,
    ) -> DrawResult {
        self.inner.draw_rect(upper_left, bottom_right, style, fill)
    }

    fn draw_path<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        style: &S,
    ) -> DrawResult {
        self.inner.draw_path(path, style)
    }

    fn draw_circle<S: BackendStyle>(
        &mut self,
        center: BackendCoord,
        radius: u32,
        style: &S,
        fill: bool,
    ) -> DrawResult {
        self.inner.draw_circle(center, radius, style, fill)
    }

    fn fill_polygon<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vert: I,
        style: &S,
    ) -> DrawResult {
        self.inner.fill_polygon(vert, style)
    }

    fn blit_bitmap(&mut self, pos: BackendCoord, size: (u32, u32), src: &[u8]) -> DrawResult {
        self.inner.blit_bitmap(pos, size, src)
    }

    fn estimate_text_size<S: BackendTextStyle>(
        &self,
        text: &str,
        style: &S,
    ) -> Result<(u32, u32), DrawingErrorKind<Self::ErrorType>> {
        let (_, width) = self.layout(text, style.size());
        Ok((
            width.max(0.0) as u32,
            box_height(style.size()).max(0) as u32,
        ))
    }

    fn draw_text<S: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &S,
        pos: BackendCoord,
    ) -> DrawResult {
        let colour = style.color();
        if colour.alpha == 0.0 {
            return Ok(());
        }
        let size = style.size();
        let (glyphs, width) = self.layout(text, size);
        let (width, height) = (width as i32, box_height(size));
        let anchor = style.anchor();
        let dx = match anchor.h_pos {
            HPos::Left => 0,
            HPos::Right => -width,
            HPos::Center => -width / 2,
        };
        let dy = match anchor.v_pos {
            VPos::Top => 0,
            VPos::Center => -height / 2,
            VPos::Bottom => -height,
        };
        let font = self.font.as_scaled(PxScale::from(size as f32));
        // Baseline placed so that capitals and digits sit centred in the text box.
        let cap_height = font
            .outline_glyph(font.scaled_glyph('H'))
            .map_or(0.7 * size as f32, |h| -h.px_bounds().min.y);
        let baseline = (height as f32 + cap_height) / 2.0;
        let transform = style.transform();
        let mut coverage = Vec::new();
        for (id, pen_x) in glyphs {
            let glyph = id.with_scale_and_position(
                PxScale::from(size as f32),
                ab_glyph::point(pen_x, baseline),
            );
            let Some(outline) = font.outline_glyph(glyph) else {
                continue; // a space
            };
            let bounds = outline.px_bounds();
            coverage.clear();
            outline.draw(|x, y, c| coverage.push((x, y, c)));
            for &(x, y, c) in &coverage {
                let (x, y) = (
                    bounds.min.x as i32 + x as i32 + dx,
                    bounds.min.y as i32 + y as i32 + dy,
                );
                let (x, y) = transform.transform(x, y);
                let pixel = BackendColor {
                    alpha: colour.alpha * f64::from(c),
                    rgb: colour.rgb,
                };
                self.inner.draw_pixel((pos.0 + x, pos.1 + y), pixel)?;
            }
        }
        Ok(())
    }
}
