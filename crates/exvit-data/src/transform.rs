//! Training and evaluation transforms with torchvision's semantics on PIL images (which is what
//! timm and ml-cvnets use): RandomResizedCrop + horizontal flip for training, resize of the
//! shorter side + center crop for evaluation, then to an f32 CHW tensor in `[0, 1]`, with
//! optional mean/std normalisation and BGR order.
//!
//! Randomness comes from [`Rng`] keyed by `(seed, epoch, sample position)`, so a sample's
//! augmentation does not depend on threads or on what else is in its batch.

use serde::{Deserialize, Serialize};

use crate::decode::{DecodeError, RgbImage};
use crate::jpeg::{decode_jpeg_into, decode_jpeg_with, jpeg_header, scaled_size, Window};
use crate::resize::{Filter, Resample, ResizeScratch, RgbView};
use crate::rng::Rng;

/// A crop box in torchvision's order: `(top, left, height, width)` = `(i, j, h, w)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropBox {
    /// First row.
    pub top: usize,
    /// First column.
    pub left: usize,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
}

/// Python's `round` (half to even), as torchvision's `int(round(x))`.
fn py_round(x: f64) -> i64 {
    x.round_ties_even() as i64
}

/// torchvision's `RandomResizedCrop.get_params`: ten tries at an area fraction uniform in
/// `scale` and a log-uniform aspect ratio in `ratio`, then the center crop clamped to `ratio`.
pub fn random_resized_crop_box(
    rng: &mut Rng,
    width: usize,
    height: usize,
    scale: (f64, f64),
    ratio: (f64, f64),
) -> CropBox {
    let area = (width * height) as f64;
    let (lr0, lr1) = (ratio.0.ln(), ratio.1.ln());
    for _ in 0..10 {
        let target = area * rng.uniform(scale.0, scale.1);
        let aspect = rng.uniform(lr0, lr1).exp();
        let w = py_round((target * aspect).sqrt());
        let h = py_round((target / aspect).sqrt());
        if 0 < w && w as usize <= width && 0 < h && h as usize <= height {
            let (w, h) = (w as usize, h as usize);
            let top = rng.below((height - h + 1) as u64) as usize;
            let left = rng.below((width - w + 1) as u64) as usize;
            return CropBox { top, left, height: h, width: w };
        }
    }
    let in_ratio = width as f64 / height as f64;
    let (w, h) = if in_ratio < ratio.0.min(ratio.1) {
        (width, py_round(width as f64 / ratio.0.min(ratio.1)) as usize)
    } else if in_ratio > ratio.0.max(ratio.1) {
        (py_round(height as f64 * ratio.0.max(ratio.1)) as usize, height)
    } else {
        (width, height)
    };
    CropBox { top: (height - h) / 2, left: (width - w) / 2, height: h, width: w }
}

/// torchvision's `Resize(size)` with an int: the shorter side becomes `size`, the longer
/// `int(size * long / short)`.
pub fn resize_shorter(width: usize, height: usize, size: usize) -> (usize, usize) {
    if width <= height {
        (size, (size as f64 * height as f64 / width as f64) as usize)
    } else {
        ((size as f64 * width as f64 / height as f64) as usize, size)
    }
}

/// torchvision's `CenterCrop`: `top = int(round((h - ch) / 2))`, likewise `left`.
pub fn center_crop_box(width: usize, height: usize, crop: usize) -> CropBox {
    let top = py_round((height as f64 - crop as f64) / 2.0).max(0) as usize;
    let left = py_round((width as f64 - crop as f64) / 2.0).max(0) as usize;
    CropBox { top, left, height: crop.min(height), width: crop.min(width) }
}

/// Channel order and normalisation of the output tensor.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Normalize {
    /// Per-channel mean, in RGB order, subtracted from values in `[0, 1]`.
    pub mean: [f32; 3],
    /// Per-channel std, in RGB order.
    pub std: [f32; 3],
    /// Write the channels as B, G, R (ml-cvnets reads images with OpenCV).
    pub bgr: bool,
}

impl Default for Normalize {
    /// `[0, 1]` RGB, no mean/std: what timm's MobileViT weights expect.
    fn default() -> Self {
        Normalize { mean: [0.0; 3], std: [1.0; 3], bgr: false }
    }
}

impl Normalize {
    /// ImageNet's mean and std (torchvision, most timm models).
    pub fn imagenet() -> Self {
        Normalize { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225], bgr: false }
    }
}

/// Writes packed RGB (`w × h`) into a CHW f32 slice (`3 · w · h`), `v / 255`, normalised,
/// mirrored left-right when `flip`. torchvision's `ToTensor` + `Normalize`, with the flip
/// fused in.
pub fn to_chw(rgb: &[u8], w: usize, h: usize, flip: bool, norm: &Normalize, out: &mut [f32]) {
    assert_eq!(rgb.len(), w * h * 3, "to_chw: {w}x{h} needs {} bytes", w * h * 3);
    assert_eq!(out.len(), w * h * 3, "to_chw: {w}x{h} needs {} floats", w * h * 3);
    let plane = w * h;
    // Tables of the 256 values per channel, computed as torchvision does (f32 `v / 255`, then
    // `(x - mean) / std`), so the result is bit-identical and costs one load per value.
    let luts: [[f32; 256]; 3] =
        std::array::from_fn(|c| std::array::from_fn(|v| (v as f32 / 255.0 - norm.mean[c]) / norm.std[c]));
    let order = if norm.bgr { [2, 1, 0] } else { [0, 1, 2] };
    let (p0, rest) = out.split_at_mut(plane);
    let (p1, p2) = rest.split_at_mut(plane);
    let mut planes = [p0, p1, p2];
    // planes[k] receives source channel order[k].
    let [a, b, c] = &mut planes;
    let (la, lb, lc) = (&luts[order[0]], &luts[order[1]], &luts[order[2]]);
    let (ca, cb, cc) = (order[0], order[1], order[2]);
    for y in 0..h {
        let src = &rgb[y * w * 3..(y + 1) * w * 3];
        let (ra, rb, rc) = (&mut a[y * w..(y + 1) * w], &mut b[y * w..(y + 1) * w], &mut c[y * w..(y + 1) * w]);
        // The first `done` pixels go through SIMD when the CPU has AVX2 (same operations in
        // the same order, so the same bits); the rest through the tables.
        let mut done = 0;
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            let ms = [norm.mean[order[0]], norm.mean[order[1]], norm.mean[order[2]]];
            let ss = [norm.std[order[0]], norm.std[order[1]], norm.std[order[2]]];
            // SAFETY: the CPU supports AVX2 (checked just above).
            done = unsafe { row_to_planes_avx2(src, [ca, cb, cc], ms, ss, flip, [ra, rb, rc]) };
        }
        for x in done..w {
            let p = &src[x * 3..x * 3 + 3];
            let d = if flip { w - 1 - x } else { x };
            ra[d] = la[p[ca] as usize];
            rb[d] = lb[p[cb] as usize];
            rc[d] = lc[p[cc] as usize];
        }
    }
}

/// 16 pixels at a time: de-interleaves RGB with byte shuffles, widens to f32, then
/// `(v / 255 - mean) / std` with IEEE division, as torchvision computes it. Writes pixel `x`
/// of `src` to position `x` of each plane (`w - 1 - x` when flipping) and returns how many
/// pixels it did (a multiple of 16; the caller does the rest).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn row_to_planes_avx2(
    src: &[u8],
    chans: [usize; 3],
    mean: [f32; 3],
    std: [f32; 3],
    flip: bool,
    planes: [&mut [f32]; 3],
) -> usize {
    use std::arch::x86_64::*;
    let w = src.len() / 3;
    let n = w / 16 * 16;
    // Shuffle masks that gather channel c (bytes c, c+3, …) of 16 pixels from 3 vectors.
    let mask = |c: usize, part: usize| -> __m128i {
        let mut m = [-1i8; 16];
        for (i, mi) in m.iter_mut().enumerate() {
            let byte = i * 3 + c; // byte of pixel i in the 48
            if byte / 16 == part {
                *mi = (byte % 16) as i8;
            }
        }
        _mm_loadu_si128(m.as_ptr() as *const __m128i)
    };
    let masks: [[__m128i; 3]; 3] = [
        [mask(0, 0), mask(0, 1), mask(0, 2)],
        [mask(1, 0), mask(1, 1), mask(1, 2)],
        [mask(2, 0), mask(2, 1), mask(2, 2)],
    ];
    let reverse = _mm_setr_epi8(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    let d255 = _mm256_set1_ps(255.0);
    let [pa, pb, pc] = planes;
    let outs = [pa, pb, pc];
    let mut x = 0;
    while x < n {
        let p = src.as_ptr().add(x * 3);
        let v = [
            _mm_loadu_si128(p as *const __m128i),
            _mm_loadu_si128(p.add(16) as *const __m128i),
            _mm_loadu_si128(p.add(32) as *const __m128i),
        ];
        for k in 0..3 {
            let m = &masks[chans[k]];
            let mut bytes = _mm_or_si128(
                _mm_or_si128(_mm_shuffle_epi8(v[0], m[0]), _mm_shuffle_epi8(v[1], m[1])),
                _mm_shuffle_epi8(v[2], m[2]),
            );
            let dst = if flip {
                bytes = _mm_shuffle_epi8(bytes, reverse);
                w - x - 16
            } else {
                x
            };
            let lo = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes));
            let hi = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128::<8>(bytes)));
            let (mv, sv) = (_mm256_set1_ps(mean[k]), _mm256_set1_ps(std[k]));
            let lo = _mm256_div_ps(_mm256_sub_ps(_mm256_div_ps(lo, d255), mv), sv);
            let hi = _mm256_div_ps(_mm256_sub_ps(_mm256_div_ps(hi, d255), mv), sv);
            let out = outs[k].as_mut_ptr().add(dst);
            _mm256_storeu_ps(out, lo);
            _mm256_storeu_ps(out.add(8), hi);
        }
        x += 16;
    }
    n
}

/// RandomResizedCrop + horizontal flip, as timm/cvnets train.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TrainTransform {
    /// Output side.
    pub size: usize,
    /// Area fraction range (0.08, 1).
    pub scale: (f64, f64),
    /// Aspect-ratio range (3/4, 4/3).
    pub ratio: (f64, f64),
    /// Interpolation.
    pub filter: Filter,
    /// Probability of a horizontal flip (0.5).
    pub hflip: f64,
    /// Decode JPEGs fast: at 1/2, 1/4 or 1/8 scale when the crop is at least that many times
    /// the output (libjpeg's DCT scaling), with the fast integer IDCT and plain chroma
    /// upsampling. Faster, but the pixels are no longer Pillow's (off by default).
    pub fast_decode: bool,
}

impl TrainTransform {
    /// torchvision's defaults at `size`, bilinear, exact (no DCT scaling).
    pub fn new(size: usize) -> Self {
        TrainTransform {
            size,
            scale: (0.08, 1.0),
            ratio: (3.0 / 4.0, 4.0 / 3.0),
            filter: Filter::Bilinear,
            hflip: 0.5,
            fast_decode: false,
        }
    }
}

/// Resize of the shorter side + center crop, as timm/cvnets evaluate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EvalTransform {
    /// Shorter side after the resize (cvnets: 288; timm: `floor(size / crop_pct)`).
    pub resize: usize,
    /// Output side (256).
    pub crop: usize,
    /// Interpolation.
    pub filter: Filter,
}

impl EvalTransform {
    /// timm's rule: `resize = floor(crop / crop_pct)`.
    pub fn from_crop_pct(crop: usize, crop_pct: f64, filter: Filter) -> Self {
        EvalTransform { resize: (crop as f64 / crop_pct + 1e-9).floor() as usize, crop, filter }
    }
}

/// A transform of either kind.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Transform {
    /// Training augmentation.
    Train(TrainTransform),
    /// Evaluation preprocessing.
    Eval(EvalTransform),
}

impl Transform {
    /// The output side for a given batch resolution (training uses the batch's, so that the
    /// multi-scale sampler can change it; evaluation has its own).
    pub fn output_size(&self, batch_size_px: usize) -> usize {
        match self {
            Transform::Train(_) => batch_size_px,
            Transform::Eval(e) => e.crop,
        }
    }
}

/// An encoded or decoded input to a transform.
pub enum Input<'a> {
    /// Encoded bytes (JPEG takes the window path; others are decoded whole).
    Encoded(&'a [u8]),
    /// Already RGB (CIFAR's binary records).
    Rgb(RgbImage),
}

/// Per-thread buffers, reused from image to image.
#[derive(Debug, Default)]
pub struct Scratch {
    resize: ResizeScratch,
    pixels: Vec<u8>,
    decoded: Vec<u8>,
    /// The sample's bytes, reused by the loader.
    pub bytes: Vec<u8>,
}

/// Time spent per stage, for the loader's breakdown (nanoseconds).
#[derive(Debug, Default, Clone, Copy)]
pub struct StageTimes {
    /// Header read and decode (JPEG window or whole image).
    pub decode: u64,
    /// Crop geometry and cutting (views; no copies unless decoded whole).
    pub crop: u64,
    /// Resampling.
    pub resize: u64,
    /// u8 → f32 CHW with flip and normalisation.
    pub to_tensor: u64,
}

impl std::ops::AddAssign for StageTimes {
    fn add_assign(&mut self, o: Self) {
        self.decode += o.decode;
        self.crop += o.crop;
        self.resize += o.resize;
        self.to_tensor += o.to_tensor;
    }
}

fn elapsed(t: &mut std::time::Instant) -> u64 {
    let now = std::time::Instant::now();
    let d = (now - *t).as_nanos() as u64;
    *t = now;
    d
}

/// Applies `transform` to one input, writing `3 · size · size` floats (CHW) into `out`.
/// `rng` must be keyed by the sample (see the module docs); the eval transform draws nothing.
#[allow(clippy::too_many_arguments)]
pub fn apply(
    transform: &Transform,
    input: Input,
    size: usize,
    max_pixels: u64,
    rng: &mut Rng,
    norm: &Normalize,
    scratch: &mut Scratch,
    out: &mut [f32],
    times: &mut StageTimes,
) -> Result<(), DecodeError> {
    let mut t = std::time::Instant::now();
    let jpeg = match &input {
        Input::Encoded(b) if crate::decode::sniff(b) == Some(crate::decode::Format::Jpeg) => Some(*b),
        _ => None,
    };
    let mut rest = std::mem::take(&mut scratch.pixels);
    let result = (|| {
        match transform {
            Transform::Train(tt) => {
                // Image size first (a JPEG header, or the decoded image).
                let (decoded, w, h) = match (&input, jpeg) {
                    (_, Some(b)) => {
                        let hd = jpeg_header(b)?;
                        (None, hd.width as usize, hd.height as usize)
                    }
                    (Input::Encoded(b), None) => {
                        let img = crate::decode::decode_rgb(b, max_pixels)?;
                        let (w, h) = (img.width as usize, img.height as usize);
                        (Some(img), w, h)
                    }
                    (Input::Rgb(img), None) => (None, img.width as usize, img.height as usize),
                };
                times.decode += elapsed(&mut t);
                let b = random_resized_crop_box(rng, w, h, tt.scale, tt.ratio);
                let flip = rng.coin(tt.hflip);
                times.crop += elapsed(&mut t);
                let (view_img, crop_full) = match jpeg {
                    Some(bytes) => {
                        let denom = if tt.fast_decode {
                            [8usize, 4, 2]
                                .into_iter()
                                .find(|&d| b.width >= d * size && b.height >= d * size)
                                .unwrap_or(1)
                        } else {
                            1
                        };
                        let (sw, sh) = scaled_size(w as u32, h as u32, denom as u32);
                        let (x0, y0) = (b.left / denom, b.top / denom);
                        let x1 = (b.left + b.width).div_ceil(denom).min(sw as usize);
                        let y1 = (b.top + b.height).div_ceil(denom).min(sh as usize);
                        let win = Window { x: x0 as u32, y: y0 as u32, w: (x1 - x0) as u32, h: (y1 - y0) as u32 };
                        let mut data = std::mem::take(&mut scratch.decoded);
                        let r = decode_jpeg_with(bytes, max_pixels, denom as u32, tt.fast_decode, Some(win), &mut data);
                        let (w, h) = match r {
                            Ok(wh) => wh,
                            Err(e) => {
                                scratch.decoded = data;
                                return Err(e);
                            }
                        };
                        (RgbImage { width: w, height: h, data }, true)
                    }
                    None => (
                        decoded.unwrap_or_else(|| match &input {
                            Input::Rgb(img) => img.clone(),
                            Input::Encoded(_) => unreachable!("decoded above"),
                        }),
                        false,
                    ),
                };
                times.decode += elapsed(&mut t);
                let full = RgbView::new(&view_img.data, view_img.width as usize, view_img.height as usize);
                let crop = if crop_full { full } else { full.crop(b.left, b.top, b.width, b.height) };
                let r = Resample::whole(crop.width, crop.height, size, size, tt.filter);
                times.crop += elapsed(&mut t);
                r.run(crop, 0, 0, &mut scratch.resize, &mut rest);
                times.resize += elapsed(&mut t);
                to_chw(&rest, size, size, flip, norm, out);
                times.to_tensor += elapsed(&mut t);
                if crop_full {
                    scratch.decoded = view_img.data;
                }
            }
            Transform::Eval(et) => {
                let (w, h) = match (&input, jpeg) {
                    (_, Some(b)) => {
                        let hd = jpeg_header(b)?;
                        (hd.width as usize, hd.height as usize)
                    }
                    (Input::Encoded(b), None) => {
                        let (_, w, h) = crate::decode::probe(b, max_pixels)?;
                        (w as usize, h as usize)
                    }
                    (Input::Rgb(img), None) => (img.width as usize, img.height as usize),
                };
                let (rw, rh) = resize_shorter(w, h, et.resize);
                let c = center_crop_box(rw, rh, et.crop);
                if c.width != size || c.height != size {
                    return Err(DecodeError::Corrupt {
                        format: "image",
                        message: format!("{w}x{h} resized to {rw}x{rh} is smaller than the {size}x{size} center crop"),
                    });
                }
                let r = Resample {
                    full_w: w,
                    full_h: h,
                    out_w: rw,
                    out_h: rh,
                    window: (c.left, c.top, c.width, c.height),
                    filter: et.filter,
                };
                let (nx, ny, nw, nh) = r.needed();
                let (img, x0, y0) = match (&input, jpeg) {
                    (_, Some(bytes)) => {
                        let win = Window { x: nx as u32, y: ny as u32, w: nw as u32, h: nh as u32 };
                        let mut data = std::mem::take(&mut scratch.decoded);
                        match decode_jpeg_into(bytes, max_pixels, 1, Some(win), &mut data) {
                            Ok((w, h)) => (RgbImage { width: w, height: h, data }, nx, ny),
                            Err(e) => {
                                scratch.decoded = data;
                                return Err(e);
                            }
                        }
                    }
                    (Input::Encoded(b), None) => (crate::decode::decode_rgb(b, max_pixels)?, 0, 0),
                    (Input::Rgb(img), None) => (img.clone(), 0, 0),
                };
                times.decode += elapsed(&mut t);
                let view = RgbView::new(&img.data, img.width as usize, img.height as usize);
                r.run(view, x0, y0, &mut scratch.resize, &mut rest);
                times.resize += elapsed(&mut t);
                to_chw(&rest, size, size, false, norm, out);
                times.to_tensor += elapsed(&mut t);
                if jpeg.is_some() {
                    scratch.decoded = img.data;
                }
            }
        }
        Ok(())
    })();
    scratch.pixels = rest;
    result
}
