//! Image decoding that trusts the bytes, not the file name: the format is sniffed from the
//! magic bytes, the header's size is checked against a pixel cap before any pixel is decoded,
//! and every result is 8-bit RGB (grayscale, palette, RGBA and CMYK are converted). JPEG goes
//! through libjpeg-turbo ([`crate::jpeg`]); PNG and GIF through the `image` crate.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits};
use thiserror::Error;

/// Default cap on width × height: 64 megapixels (ImageNet's largest image has ~22 MP).
pub const DEFAULT_MAX_PIXELS: u64 = 64 * 1024 * 1024;

/// A container format recognised from its magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `FF D8 FF`.
    Jpeg,
    /// `89 50 4E 47 0D 0A 1A 0A`.
    Png,
    /// `GIF87a` / `GIF89a`.
    Gif,
}

impl Format {
    /// Lower-case name, as in manifests.
    pub fn name(self) -> &'static str {
        match self {
            Format::Jpeg => "jpeg",
            Format::Png => "png",
            Format::Gif => "gif",
        }
    }

    fn image_format(self) -> ImageFormat {
        match self {
            Format::Jpeg => ImageFormat::Jpeg,
            Format::Png => ImageFormat::Png,
            Format::Gif => ImageFormat::Gif,
        }
    }
}

/// The format of `bytes` from its magic bytes, whatever the file is called.
pub fn sniff(bytes: &[u8]) -> Option<Format> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(Format::Jpeg)
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(Format::Png)
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        Some(Format::Gif)
    } else {
        None
    }
}

/// Why an image could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// A zero-byte file.
    #[error("empty file (0 bytes)")]
    Empty,
    /// The magic bytes are not those of a supported image format.
    #[error("not an image (first bytes {0})")]
    NotAnImage(String),
    /// The header claims more pixels than the cap.
    #[error("{width}x{height} = {} pixels exceeds the cap of {max} pixels", *width as u64 * *height as u64)]
    TooLarge {
        /// Width from the header.
        width: u32,
        /// Height from the header.
        height: u32,
        /// The cap.
        max: u64,
    },
    /// The decoder failed (truncated or corrupt data).
    #[error("corrupt {format} data: {message}")]
    Corrupt {
        /// The sniffed format.
        format: &'static str,
        /// The decoder's message.
        message: String,
    },
}

/// An 8-bit RGB image, row-major, `[height, width, 3]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `height · width · 3` bytes.
    pub data: Vec<u8>,
}

fn magic_hex(bytes: &[u8]) -> String {
    bytes.iter().take(8).map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")
}

/// Reads the size from the header only, enforcing `max_pixels`.
pub fn probe(bytes: &[u8], max_pixels: u64) -> Result<(Format, u32, u32), DecodeError> {
    if sniff(bytes) == Some(Format::Jpeg) {
        let h = crate::jpeg::jpeg_header(bytes)?;
        if h.width as u64 * h.height as u64 > max_pixels {
            return Err(DecodeError::TooLarge { width: h.width, height: h.height, max: max_pixels });
        }
        return Ok((Format::Jpeg, h.width, h.height));
    }
    let (format, decoder) = decoder(bytes, max_pixels)?;
    let (w, h) = decoder.dimensions();
    Ok((format, w, h))
}

fn decoder(bytes: &[u8], max_pixels: u64) -> Result<(Format, impl ImageDecoder + '_), DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    let format = sniff(bytes).ok_or_else(|| DecodeError::NotAnImage(magic_hex(bytes)))?;
    let corrupt = |e: image::ImageError| DecodeError::Corrupt { format: format.name(), message: e.to_string() };
    let reader = ImageReader::with_format(Cursor::new(bytes), format.image_format());
    let mut decoder = reader.into_decoder().map_err(corrupt)?;
    let (width, height) = decoder.dimensions();
    if width as u64 * height as u64 > max_pixels {
        return Err(DecodeError::TooLarge { width, height, max: max_pixels });
    }
    // Within the cap, bound what the decoder may allocate (RGBA at 4 bytes per pixel, plus
    // slack for its buffers).
    let mut limits = Limits::default();
    limits.max_alloc = Some(max_pixels.saturating_mul(8).max(1 << 20));
    decoder.set_limits(limits).map_err(corrupt)?;
    Ok((format, decoder))
}

/// Decodes `bytes` to 8-bit RGB, as Pillow's `Image.open(p).convert('RGB')`: grayscale is
/// replicated, palette images are expanded, alpha is dropped (not composited), CMYK is
/// converted. JPEGs go through libjpeg-turbo (see [`crate::jpeg`]), so they match exactly.
pub fn decode_rgb(bytes: &[u8], max_pixels: u64) -> Result<RgbImage, DecodeError> {
    if sniff(bytes) == Some(Format::Jpeg) {
        return crate::jpeg::decode_jpeg(bytes, max_pixels, 1, None);
    }
    let (format, decoder) = decoder(bytes, max_pixels)?;
    let img = DynamicImage::from_decoder(decoder)
        .map_err(|e| DecodeError::Corrupt { format: format.name(), message: e.to_string() })?;
    let rgb = match img {
        // Pillow opens 16-bit grayscale PNGs in mode "I;16" and its conversion to RGB clips
        // each value to 255 rather than scaling; match it (16-bit RGB is scaled by both).
        DynamicImage::ImageLuma16(_) | DynamicImage::ImageLumaA16(_) => {
            let g = img.into_luma16();
            image::RgbImage::from_fn(g.width(), g.height(), |x, y| {
                let v = g.get_pixel(x, y)[0].min(255) as u8;
                image::Rgb([v, v, v])
            })
        }
        img => img.into_rgb8(),
    };
    Ok(RgbImage { width: rgb.width(), height: rgb.height(), data: rgb.into_raw() })
}
