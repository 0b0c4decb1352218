//! JPEG through libjpeg-turbo, the library Pillow ships, with Pillow's defaults (accurate
//! integer IDCT, "fancy" chroma upsampling): exvit's pixels equal Pillow's. The C side is a
//! small shim (csrc/jpeg.c) that catches libjpeg's fatal errors with setjmp, so that no
//! longjmp crosses Rust code. Besides whole images it decodes a window at a reduced DCT scale,
//! which the training loader uses to decode only the RandomResizedCrop box.

use std::os::raw::{c_char, c_int, c_uchar, c_ulong, c_ulonglong};

use crate::decode::{DecodeError, RgbImage};

const MSG: usize = 200;

#[repr(C)]
struct RawResult {
    width: c_int,
    height: c_int,
    components: c_int,
    color_space: c_int,
    progressive: c_int,
    out_width: c_int,
    out_height: c_int,
    x0: c_int,
    y0: c_int,
    w: c_int,
    h: c_int,
    out_components: c_int,
    warnings: c_int,
    truncated: c_int,
    needed: usize,
    message: [c_char; MSG],
}

impl RawResult {
    fn new() -> Self {
        RawResult {
            width: 0,
            height: 0,
            components: 0,
            color_space: 0,
            progressive: 0,
            out_width: 0,
            out_height: 0,
            x0: 0,
            y0: 0,
            w: 0,
            h: 0,
            out_components: 0,
            warnings: 0,
            truncated: 0,
            needed: 0,
            message: [0; MSG],
        }
    }

    fn message(&self) -> String {
        let bytes: Vec<u8> = self.message.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

extern "C" {
    fn exvit_jpeg_header(buf: *const c_uchar, len: c_ulong, res: *mut RawResult) -> c_int;
    #[allow(clippy::too_many_arguments)]
    fn exvit_jpeg_decode(
        buf: *const c_uchar,
        len: c_ulong,
        max_pixels: c_ulonglong,
        scale_denom: c_int,
        fast: c_int,
        x: c_int,
        y: c_int,
        w: c_int,
        h: c_int,
        out: *mut c_uchar,
        out_cap: usize,
        res: *mut RawResult,
    ) -> c_int;
}

/// The colour space of the JPEG's components, as libjpeg reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JpegColor {
    /// One component.
    Gray,
    /// RGB stored as is.
    Rgb,
    /// YCbCr (JFIF, nearly every photo).
    YCbCr,
    /// CMYK (Adobe).
    Cmyk,
    /// YCCK (Adobe), converted to CMYK by libjpeg.
    Ycck,
    /// Anything else.
    Unknown,
}

/// What a JPEG's header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JpegHeader {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Number of components in the file.
    pub components: u32,
    /// Their colour space.
    pub color: JpegColor,
    /// Progressive (SOF2) coding.
    pub progressive: bool,
}

/// A window of the image at a DCT scale, in scaled pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Left column.
    pub x: u32,
    /// Top row.
    pub y: u32,
    /// Width.
    pub w: u32,
    /// Height.
    pub h: u32,
}

fn corrupt(message: String) -> DecodeError {
    DecodeError::Corrupt { format: "jpeg", message }
}

fn check_len(bytes: &[u8]) -> Result<c_ulong, DecodeError> {
    c_ulong::try_from(bytes.len()).map_err(|_| corrupt(format!("{} bytes is too long for libjpeg", bytes.len())))
}

/// Reads the header only.
pub fn jpeg_header(bytes: &[u8]) -> Result<JpegHeader, DecodeError> {
    let len = check_len(bytes)?;
    let mut res = RawResult::new();
    // SAFETY: `bytes` outlives the call, which only reads `len` bytes of it; `res` is a valid
    // `RawResult` with the C layout; the shim catches libjpeg's errors itself.
    let rc = unsafe { exvit_jpeg_header(bytes.as_ptr(), len, &mut res) };
    if rc != 0 {
        return Err(corrupt(res.message()));
    }
    Ok(header_of(&res))
}

fn header_of(res: &RawResult) -> JpegHeader {
    JpegHeader {
        width: res.width as u32,
        height: res.height as u32,
        components: res.components as u32,
        color: match res.color_space {
            1 => JpegColor::Gray,
            2 => JpegColor::Rgb,
            3 => JpegColor::YCbCr,
            4 => JpegColor::Cmyk,
            5 => JpegColor::Ycck,
            _ => JpegColor::Unknown,
        },
        progressive: res.progressive != 0,
    }
}

/// The size of the whole image decoded at `1/scale_denom`, as libjpeg computes it
/// (`ceil(size / denom)`).
pub fn scaled_size(width: u32, height: u32, scale_denom: u32) -> (u32, u32) {
    let d = scale_denom.max(1);
    (width.div_ceil(d), height.div_ceil(d))
}

/// Decodes a JPEG to RGB, as Pillow's `Image.open(p).convert('RGB')` does: the whole image
/// (`window = None`) or a window of it, at `1/scale_denom` (1, 2, 4 or 8) of its size.
///
/// Data that ends before the image does is an error (Pillow raises "image file is
/// truncated"); other corrupt data that libjpeg reads through is accepted, as by Pillow.
pub fn decode_jpeg(
    bytes: &[u8],
    max_pixels: u64,
    scale_denom: u32,
    window: Option<Window>,
) -> Result<RgbImage, DecodeError> {
    let mut data = Vec::new();
    let (width, height) = decode_jpeg_into(bytes, max_pixels, scale_denom, window, &mut data)?;
    Ok(RgbImage { width, height, data })
}

/// [`decode_jpeg`] into a caller's buffer (reused across images by the loader, so that a
/// steady state allocates nothing); returns the width and height written.
pub fn decode_jpeg_into(
    bytes: &[u8],
    max_pixels: u64,
    scale_denom: u32,
    window: Option<Window>,
    out: &mut Vec<u8>,
) -> Result<(u32, u32), DecodeError> {
    decode_jpeg_with(bytes, max_pixels, scale_denom, false, window, out)
}

/// [`decode_jpeg_into`], optionally `fast`: libjpeg's fast integer IDCT and plain (not
/// "fancy") chroma upsampling. Faster, but the pixels differ from Pillow's by a few levels;
/// for training augmentation only.
pub fn decode_jpeg_with(
    bytes: &[u8],
    max_pixels: u64,
    scale_denom: u32,
    fast: bool,
    window: Option<Window>,
    out: &mut Vec<u8>,
) -> Result<(u32, u32), DecodeError> {
    if !matches!(scale_denom, 1 | 2 | 4 | 8) {
        return Err(corrupt(format!("scale 1/{scale_denom} is not one of 1, 1/2, 1/4, 1/8")));
    }
    let len = check_len(bytes)?;
    let header = jpeg_header(bytes)?;
    let pixels = header.width as u64 * header.height as u64;
    if pixels > max_pixels {
        return Err(DecodeError::TooLarge { width: header.width, height: header.height, max: max_pixels });
    }
    let (sw, sh) = scaled_size(header.width, header.height, scale_denom);
    let win = window.unwrap_or(Window { x: 0, y: 0, w: sw, h: sh });
    if win.w == 0 || win.h == 0 || win.x + win.w > sw || win.y + win.h > sh {
        return Err(corrupt(format!(
            "window {}x{} at ({}, {}) is outside the {sw}x{sh} image (scale 1/{scale_denom})",
            win.w, win.h, win.x, win.y
        )));
    }
    // libjpeg widens the window left to an iMCU boundary (at most 32 scaled pixels), and
    // treats both ends as the image's edges, where fancy upsampling replicates the last chroma
    // sample instead of interpolating. Ask for a margin of up to 32 columns on each side, so
    // that the columns we keep are computed as in the whole image, and cut it afterwards.
    const MARGIN: u32 = 32;
    let comps = if matches!(header.color, JpegColor::Cmyk | JpegColor::Ycck) { 4 } else { 3 };
    let ask_x = win.x.saturating_sub(MARGIN);
    let ask_w = (win.x + win.w + MARGIN).min(sw) - ask_x;
    let mut cap = ((ask_w + MARGIN).min(sw) as usize) * win.h as usize * comps;
    let mut res = RawResult::new();
    for _ in 0..2 {
        out.resize(cap, 0);
        // SAFETY: `bytes` and `out` outlive the call; the shim writes at most `out.len()`
        // bytes into `out` (it returns -2 instead when the window needs more).
        let rc = unsafe {
            exvit_jpeg_decode(
                bytes.as_ptr(),
                len,
                max_pixels,
                scale_denom as c_int,
                fast as c_int,
                ask_x as c_int,
                win.y as c_int,
                ask_w as c_int,
                win.h as c_int,
                out.as_mut_ptr(),
                out.len(),
                &mut res,
            )
        };
        match rc {
            0 => break,
            -2 => cap = res.needed,
            -3 => return Err(DecodeError::TooLarge { width: header.width, height: header.height, max: max_pixels }),
            _ => return Err(corrupt(res.message())),
        }
    }
    if res.truncated != 0 {
        return Err(corrupt(format!("truncated: {}", res.message())));
    }
    if res.warnings != 0 {
        tracing::debug!(warnings = res.warnings, first = %res.message(), "libjpeg read through corrupt data");
    }
    let got_comps = res.out_components as usize;
    let stride = res.w as usize * got_comps;
    let dx = (win.x - res.x0 as u32) as usize;
    out.truncate(stride * win.h as usize);
    compact(out, stride, dx, win.w as usize, win.h as usize, got_comps);
    Ok((win.w, win.h))
}

/// In place: keeps columns `dx..dx + w` of each row and converts CMYK to RGB. Every write
/// lands at or before the bytes it reads, so a forward pass is safe.
fn compact(buf: &mut Vec<u8>, stride: usize, dx: usize, w: usize, h: usize, comps: usize) {
    if comps == 3 {
        if dx != 0 || stride != w * 3 {
            for r in 0..h {
                let src = r * stride + dx * 3;
                buf.copy_within(src..src + w * 3, r * w * 3);
            }
        }
    } else {
        for r in 0..h {
            for c in 0..w {
                let s = r * stride + (dx + c) * 4;
                let [k0, k1, k2, k3] = [buf[s], buf[s + 1], buf[s + 2], buf[s + 3]];
                let d = (r * w + c) * 3;
                let rgb = cmyk_to_rgb([k0, k1, k2, k3]);
                buf[d..d + 3].copy_from_slice(&rgb);
            }
        }
    }
    buf.truncate(w * h * 3);
}

/// Pillow's conversion of a CMYK JPEG: it reads the components as Adobe-inverted
/// ("CMYK;I"), then `cmyk2rgb` computes `nk - nk·c/255` with `nk = 255 - k` in 8-bit
/// fixed point (`MULDIV255`).
fn cmyk_to_rgb(raw: [u8; 4]) -> [u8; 3] {
    let nk = raw[3] as i32; // 255 - (255 - raw k)
    let f = |raw_c: u8| {
        let c = 255 - raw_c as i32;
        let tmp = c * nk + 128;
        let m = ((tmp >> 8) + tmp) >> 8;
        (nk - m).clamp(0, 255) as u8
    };
    [f(raw[0]), f(raw[1]), f(raw[2])]
}
