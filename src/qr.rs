//! QR codes drawn as PNG images (PURE): a channel's code for print, from the `url` WeChat
//! returns with its ticket (`siyu qrcode --png`).
//!
//! Black modules on white with WeChat's own quiet zone of 4 modules, one grey level per
//! pixel: the smallest PNG a printer or a poster tool takes.

use qrcode::{Color, EcLevel, QrCode};

/// Pixels per module unless asked otherwise: a version-3 code (29 modules, WeChat's
/// `url`s) comes out at 370 px, sharp on a poster at 3 cm.
pub const DEFAULT_MODULE_PX: u32 = 10;
/// The white border, in modules, that scanners need around the code.
pub const QUIET_ZONE: u32 = 4;

#[derive(Debug, thiserror::Error)]
pub enum QrError {
    #[error("the text is too long for a QR code ({0} bytes)")]
    TooLong(usize),
    #[error("pixels per module must be 1 to 64, not {0}")]
    ModuleSize(u32),
    #[error("could not write the PNG: {0}")]
    Png(String),
}

/// The PNG of a QR code holding `text` (medium error correction, as WeChat's own codes).
pub fn png(text: &str, module_px: u32) -> Result<Vec<u8>, QrError> {
    if !(1..=64).contains(&module_px) {
        return Err(QrError::ModuleSize(module_px));
    }
    let code = QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M)
        .map_err(|_| QrError::TooLong(text.len()))?;
    let modules = code.width() as u32;
    let colors = code.to_colors();
    let side = (modules + 2 * QUIET_ZONE) * module_px;
    let mut pixels = vec![255u8; (side * side) as usize];
    for (i, color) in colors.iter().enumerate() {
        if *color != Color::Dark {
            continue;
        }
        let (mx, my) = (i as u32 % modules, i as u32 / modules);
        for dy in 0..module_px {
            let y = (my + QUIET_ZONE) * module_px + dy;
            let x0 = (mx + QUIET_ZONE) * module_px;
            let row = (y * side + x0) as usize;
            pixels[row..row + module_px as usize].fill(0);
        }
    }
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, side, side);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder
            .write_header()
            .map_err(|e| QrError::Png(e.to_string()))?;
        writer
            .write_image_data(&pixels)
            .map_err(|e| QrError::Png(e.to_string()))?;
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// What a phone's scanner reads from the PNG: decoded with an independent decoder.
    pub(crate) fn read(png_bytes: &[u8]) -> (u32, String) {
        let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!(info.color_type, png::ColorType::Grayscale);
        let (w, h) = (info.width as usize, info.height as usize);
        assert_eq!(w, h, "square");
        let mut img = rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| buf[y * w + x]);
        let grids = img.detect_grids();
        assert_eq!(grids.len(), 1, "one code in the image");
        let (_, text) = grids[0].decode().unwrap();
        (info.width, text)
    }

    #[test]
    fn a_code_reads_back_as_its_text_at_every_size() {
        let url = "http://weixin.qq.com/q/02aBcDeFgHiJkLmNoPqRsTuV";
        for px in [3, DEFAULT_MODULE_PX, 16] {
            let bytes = png(url, px).unwrap();
            assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"));
            let (side, text) = read(&bytes);
            assert_eq!(text, url);
            assert_eq!(side % px, 0, "whole modules");
            let modules = side / px - 2 * QUIET_ZONE;
            assert_eq!((modules - 17) % 4, 0, "a QR version's width: {modules}");
        }
        let (_, text) = read(&png("ref:double11:7", 4).unwrap());
        assert_eq!(text, "ref:double11:7");
    }

    #[test]
    fn bad_sizes_and_texts_are_refused() {
        assert!(matches!(png("x", 0), Err(QrError::ModuleSize(0))));
        assert!(matches!(png("x", 65), Err(QrError::ModuleSize(65))));
        let huge = "x".repeat(5000);
        assert!(matches!(png(&huge, 4), Err(QrError::TooLong(5000))));
    }
}
