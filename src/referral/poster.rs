//! A participant's poster (PURE): their QR code drawn onto the programme's background.
//!
//! Bytes in, bytes out: the caller reads the background (`Poster::background`) and uploads
//! the result as an image (`media/upload`); nothing here touches files or the network. The
//! code is drawn as `qr::png` draws it, black modules on white with the 4-module quiet zone
//! scanners need, into the square `size` px wide at (`x`, `y`); whole pixels per module, so
//! the code is centred in that square and the rest of the square is white. Every pixel
//! outside the square is the background's own. The output has the background's colour type
//! (grey, grey + alpha, RGB, RGBA; palettes and 16-bit images come out as 8-bit RGB(A) or
//! grey), with the square opaque.

use std::io::Cursor;

use qrcode::{Color, EcLevel, QrCode};

use super::config::MAX_BACKGROUND_PX;
use crate::qr::QUIET_ZONE;

/// Fewer pixels a module than this and phones misread a printed or photographed code.
pub const MIN_MODULE_PX: u32 = 2;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PosterError {
    #[error("the background is not a PNG image we can read: {0}")]
    NotPng(String),
    #[error("the background is {width} × {height} px; at most {MAX_BACKGROUND_PX} a side")]
    TooLarge { width: u32, height: u32 },
    #[error(
        "the QR code ({size} px at x = {x}, y = {y}) does not fit inside the \
         {width} × {height} px background"
    )]
    DoesNotFit {
        x: u32,
        y: u32,
        size: u32,
        width: u32,
        height: u32,
    },
    #[error("a {size} px square is too small for this code: it needs at least {need} px ({MIN_MODULE_PX} px a module)")]
    TooSmall { size: u32, need: u32 },
    #[error("the text is too long for a QR code ({0} bytes)")]
    TooLong(usize),
    #[error("could not write the PNG: {0}")]
    Png(String),
}

/// The width and height of a PNG (its header only).
pub fn dimensions(png_bytes: &[u8]) -> Result<(u32, u32), PosterError> {
    let reader = png::Decoder::new(Cursor::new(png_bytes))
        .read_info()
        .map_err(|e| PosterError::NotPng(e.to_string()))?;
    let info = reader.info();
    Ok((info.width, info.height))
}

/// The background with the QR code of `url` (the `url` WeChat returns with the ticket)
/// drawn in the square of side `size` whose top-left corner is (`x`, `y`).
pub fn draw(
    background: &[u8],
    url: &str,
    x: u32,
    y: u32,
    size: u32,
) -> Result<Vec<u8>, PosterError> {
    let mut decoder = png::Decoder::new(Cursor::new(background));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder
        .read_info()
        .map_err(|e| PosterError::NotPng(e.to_string()))?;
    let (width, height) = (reader.info().width, reader.info().height);
    if width > MAX_BACKGROUND_PX || height > MAX_BACKGROUND_PX {
        return Err(PosterError::TooLarge { width, height });
    }
    // u64: x + size of two u32 near the limit must not wrap into "fits".
    if u64::from(x) + u64::from(size) > u64::from(width)
        || u64::from(y) + u64::from(size) > u64::from(height)
    {
        return Err(PosterError::DoesNotFit {
            x,
            y,
            size,
            width,
            height,
        });
    }
    let code = QrCode::with_error_correction_level(url.as_bytes(), EcLevel::M)
        .map_err(|_| PosterError::TooLong(url.len()))?;
    let modules = code.width() as u32;
    let side_modules = modules + 2 * QUIET_ZONE;
    let module_px = size / side_modules;
    if module_px < MIN_MODULE_PX {
        return Err(PosterError::TooSmall {
            size,
            need: side_modules * MIN_MODULE_PX,
        });
    }

    let (color, _) = reader.output_color_type();
    let channels = color.samples();
    let buffer = reader
        .output_buffer_size()
        .ok_or_else(|| PosterError::NotPng("image too large".into()))?;
    let mut pixels = vec![0u8; buffer];
    let frame = reader
        .next_frame(&mut pixels)
        .map_err(|e| PosterError::NotPng(e.to_string()))?;
    let stride = frame.line_size;
    // Light and dark pixels in the background's colour type: white / black, opaque.
    let light = vec![255u8; channels];
    let mut dark = vec![0u8; channels];
    if matches!(color, png::ColorType::GrayscaleAlpha | png::ColorType::Rgba) {
        dark[channels - 1] = 255;
    }
    let mut paint = |px: u32, py: u32, value: &[u8]| {
        let at = py as usize * stride + px as usize * channels;
        pixels[at..at + channels].copy_from_slice(value);
    };
    for py in y..y + size {
        for px in x..x + size {
            paint(px, py, &light);
        }
    }
    let margin = (size - side_modules * module_px) / 2;
    let origin_x = x + margin + QUIET_ZONE * module_px;
    let origin_y = y + margin + QUIET_ZONE * module_px;
    for (i, c) in code.to_colors().iter().enumerate() {
        if *c != Color::Dark {
            continue;
        }
        let (mx, my) = (i as u32 % modules, i as u32 / modules);
        for dy in 0..module_px {
            for dx in 0..module_px {
                paint(
                    origin_x + mx * module_px + dx,
                    origin_y + my * module_px + dy,
                    &dark,
                );
            }
        }
    }

    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, width, height);
        encoder.set_color(color);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder
            .write_header()
            .map_err(|e| PosterError::Png(e.to_string()))?;
        writer
            .write_image_data(&pixels[..stride * height as usize])
            .map_err(|e| PosterError::Png(e.to_string()))?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "http://weixin.qq.com/q/02aBcDeFgHiJkLmNoPqRsTuV";

    /// A background of `color` with a pattern, so "unchanged" means something.
    fn background(color: png::ColorType, w: u32, h: u32) -> Vec<u8> {
        let channels = color.samples();
        let mut pixels = Vec::with_capacity((w * h) as usize * channels);
        for y in 0..h {
            for x in 0..w {
                for c in 0..channels {
                    pixels.push(((x * 7 + y * 13 + c as u32 * 50) % 200 + 20) as u8);
                }
            }
        }
        let mut out = Vec::new();
        let mut e = png::Encoder::new(&mut out, w, h);
        e.set_color(color);
        e.set_depth(png::BitDepth::Eight);
        e.write_header().unwrap().write_image_data(&pixels).unwrap();
        out
    }

    /// Pixels as (colour type, width, height, bytes).
    fn decode(bytes: &[u8]) -> (png::ColorType, u32, u32, Vec<u8>) {
        let mut reader = png::Decoder::new(Cursor::new(bytes)).read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        buf.truncate(info.buffer_size());
        (info.color_type, info.width, info.height, buf)
    }

    /// What a phone reads from the image: an independent decoder (rqrr) on its grey levels.
    fn scan(bytes: &[u8]) -> Vec<String> {
        let (color, w, h, buf) = decode(bytes);
        let n = color.samples();
        let (w, h) = (w as usize, h as usize);
        let mut img = rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| {
            let p = &buf[(y * w + x) * n..];
            match color {
                png::ColorType::Rgb | png::ColorType::Rgba => {
                    ((u32::from(p[0]) + u32::from(p[1]) + u32::from(p[2])) / 3) as u8
                }
                _ => p[0],
            }
        });
        img.detect_grids()
            .iter()
            .map(|g| g.decode().unwrap().1)
            .collect()
    }

    #[test]
    fn the_code_reads_back_and_the_rest_is_the_background() {
        for (case, color) in [
            ("grey", png::ColorType::Grayscale),
            ("grey and alpha", png::ColorType::GrayscaleAlpha),
            ("rgb", png::ColorType::Rgb),
            ("rgba", png::ColorType::Rgba),
        ] {
            let (w, h, x, y, size) = (420, 560, 150, 300, 240);
            let bg = background(color, w, h);
            let out = draw(&bg, URL, x, y, size).unwrap_or_else(|e| panic!("{case}: {e}"));
            assert_eq!(scan(&out), [URL], "{case}");
            let (c1, w1, h1, before) = decode(&bg);
            let (c2, w2, h2, after) = decode(&out);
            assert_eq!((c1, w1, h1), (c2, w2, h2), "{case}: same shape");
            let n = color.samples();
            let mut changed_inside = 0;
            for py in 0..h {
                for px in 0..w {
                    let at = ((py * w + px) as usize) * n;
                    let inside = (x..x + size).contains(&px) && (y..y + size).contains(&py);
                    if !inside {
                        assert_eq!(
                            before[at..at + n],
                            after[at..at + n],
                            "{case}: ({px}, {py})"
                        );
                    } else if before[at..at + n] != after[at..at + n] {
                        changed_inside += 1;
                    }
                }
            }
            assert!(
                changed_inside > (size * size / 2) as usize,
                "{case}: the square is drawn"
            );
        }
    }

    #[test]
    fn corners_and_exact_fits_work() {
        let bg = background(png::ColorType::Rgb, 200, 200);
        for (case, x, y, size) in [
            ("top left corner", 0, 0, 100),
            ("bottom right corner", 100, 100, 100),
            ("the whole background", 0, 0, 200),
        ] {
            let out = draw(&bg, URL, x, y, size).unwrap_or_else(|e| panic!("{case}: {e}"));
            assert_eq!(scan(&out), [URL], "{case}");
        }
    }

    #[test]
    fn a_palette_background_comes_out_as_rgb() {
        let (w, h) = (200u32, 200u32);
        let palette = [10u8, 20, 30, 200, 100, 50];
        let indices: Vec<u8> = (0..w * h).map(|i| (i % 2) as u8).collect();
        let mut bg = Vec::new();
        {
            let mut e = png::Encoder::new(&mut bg, w, h);
            e.set_color(png::ColorType::Indexed);
            e.set_depth(png::BitDepth::Eight);
            e.set_palette(palette.to_vec());
            e.write_header()
                .unwrap()
                .write_image_data(&indices)
                .unwrap();
        }
        let out = draw(&bg, URL, 50, 50, 120).unwrap();
        assert_eq!(scan(&out), [URL]);
        let (color, _, _, after) = decode(&out);
        assert_eq!(color, png::ColorType::Rgb);
        for (px, py) in [(0u32, 0u32), (1, 0), (199, 199), (49, 100), (170, 100)] {
            let i = (py * w + px) as usize;
            let want = &palette[indices[i] as usize * 3..][..3];
            assert_eq!(&after[i * 3..i * 3 + 3], want, "({px}, {py})");
        }
    }

    #[test]
    fn what_does_not_fit_is_refused_clearly() {
        let bg = background(png::ColorType::Rgba, 300, 200);
        for (case, x, y, size) in [
            ("too wide", 100, 0, 201),
            ("too tall", 0, 50, 151),
            ("outside", 400, 0, 100),
            ("wrapping", u32::MAX, 0, 2),
        ] {
            let e = draw(&bg, URL, x, y, size).expect_err(case);
            assert!(
                matches!(
                    e,
                    PosterError::DoesNotFit {
                        width: 300,
                        height: 200,
                        ..
                    }
                ),
                "{case}: {e}"
            );
            assert!(
                e.to_string()
                    .contains("does not fit inside the 300 × 200 px background"),
                "{e}"
            );
        }
        let e = draw(&bg, URL, 0, 0, 60).unwrap_err();
        assert!(matches!(e, PosterError::TooSmall { size: 60, .. }), "{e}");
        assert!(matches!(
            draw(b"not a png", URL, 0, 0, 100),
            Err(PosterError::NotPng(_))
        ));
        assert!(matches!(
            draw(&bg, &"x".repeat(5000), 0, 0, 200),
            Err(PosterError::TooLong(5000))
        ));
        assert_eq!(dimensions(&bg).unwrap(), (300, 200));
        assert!(dimensions(b"GIF89a").is_err());
    }
}
