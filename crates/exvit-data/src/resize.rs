//! Pillow 13's resampling (`Image.resize`, libImaging/Resample.c), reimplemented bit for bit for
//! 8-bit RGB: a separable convolution whose support grows with the downscale factor (so it
//! antialiases), coefficients normalised per output pixel and rounded to 22-bit fixed point,
//! two passes through an 8-bit intermediate: horizontal then vertical, or vertical first when
//! the height shrinks by more than twice as many pixels as the width (new in Pillow 13; older
//! Pillow always went horizontal first, so its results differ by a level here and there). torchvision's transforms on PIL images call exactly this, so exvit's
//! RandomResizedCrop and eval resize equal torchvision's pixel for pixel.

/// Interpolation filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Filter {
    /// Triangle filter, support 1 (PIL.Image.BILINEAR).
    Bilinear,
    /// Keys cubic, a = -0.5, support 2 (PIL.Image.BICUBIC).
    Bicubic,
}

impl Filter {
    fn support(self) -> f64 {
        match self {
            Filter::Bilinear => 1.0,
            Filter::Bicubic => 2.0,
        }
    }

    fn eval(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            Filter::Bilinear => {
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            Filter::Bicubic => {
                const A: f64 = -0.5;
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
        }
    }
}

impl std::str::FromStr for Filter {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "bilinear" => Ok(Filter::Bilinear),
            "bicubic" => Ok(Filter::Bicubic),
            _ => Err(format!("unknown interpolation {s:?} (bilinear or bicubic)")),
        }
    }
}

const PRECISION_BITS: u32 = 32 - 8 - 2;
#[cfg(target_arch = "x86_64")]
const PRECISION_BITS_I32: i32 = PRECISION_BITS as i32;

/// Per output pixel: the first input index, the number of taps, and `ksize` fixed-point
/// weights.
#[derive(Debug, Clone)]
pub struct Coeffs {
    /// `(first, count)` per output pixel.
    pub bounds: Vec<(usize, usize)>,
    /// Row-major `[out, ksize]`.
    pub weights: Vec<i32>,
    /// Taps per output pixel (the row length of `weights`).
    pub ksize: usize,
}

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for an input axis of `in_size`
/// pixels, sampling the span `[in0, in1)` (Pillow's box) into `out_size` pixels.
pub fn coeffs(in_size: usize, in0: f64, in1: f64, out_size: usize, filter: Filter) -> Coeffs {
    let scale = (in1 - in0) / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut weights = vec![0i32; out_size * ksize];
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = in0 + (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // C's (int) cast truncates toward zero.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let n = xmax.saturating_sub(xmin);
        let mut ww = 0.0;
        for (x, kx) in k.iter_mut().enumerate().take(n) {
            let w = filter.eval((x as f64 + xmin as f64 - center + 0.5) * ss);
            *kx = w;
            ww += w;
        }
        let row = &mut weights[xx * ksize..(xx + 1) * ksize];
        for x in 0..n {
            let v = if ww != 0.0 { k[x] / ww } else { k[x] };
            let f = v * (1u32 << PRECISION_BITS) as f64;
            row[x] = if v < 0.0 { (-0.5 + f) as i32 } else { (0.5 + f) as i32 };
        }
        bounds.push((xmin, n));
    }
    Coeffs { bounds, weights, ksize }
}

#[inline]
fn clip8(v: i32) -> u8 {
    if v >= (1 << PRECISION_BITS << 8) {
        255
    } else if v <= 0 {
        0
    } else {
        (v >> PRECISION_BITS) as u8
    }
}

/// A borrowed 8-bit RGB image or a rectangle of one (a crop without a copy).
#[derive(Debug, Clone, Copy)]
pub struct RgbView<'a> {
    /// The pixels, row-major RGB.
    pub data: &'a [u8],
    /// Bytes from one row to the next.
    pub stride: usize,
    /// Width of the view.
    pub width: usize,
    /// Height of the view.
    pub height: usize,
}

impl<'a> RgbView<'a> {
    /// A whole packed image.
    pub fn new(data: &'a [u8], width: usize, height: usize) -> Self {
        assert_eq!(data.len(), width * height * 3, "RgbView: {width}x{height} RGB needs {} bytes", width * height * 3);
        RgbView { data, stride: width * 3, width, height }
    }

    /// The rectangle `(x, y, w, h)` of this view, as Pillow's `crop` (no copy).
    pub fn crop(&self, x: usize, y: usize, w: usize, h: usize) -> RgbView<'a> {
        assert!(
            x + w <= self.width && y + h <= self.height,
            "crop {w}x{h}+{x}+{y} outside {}x{}",
            self.width,
            self.height
        );
        let start = y * self.stride + x * 3;
        let end = if h == 0 { start } else { start + (h - 1) * self.stride + w * 3 };
        RgbView { data: &self.data[start..end], stride: self.stride, width: w, height: h }
    }

    fn row(&self, y: usize) -> &'a [u8] {
        &self.data[y * self.stride..y * self.stride + self.width * 3]
    }
}

/// Reusable buffers for [`resize`], so that a worker thread allocates nothing per image.
#[derive(Debug, Default)]
pub struct ResizeScratch {
    tmp: Vec<u8>,
    acc: Vec<i32>,
    wide: Vec<[i32; 8]>,
}

/// What to resample: `view` holds the pixels of the rectangle at `(x0, y0)` of a virtual
/// image of `full_w × full_h` (Pillow's input image), which is resized to `out_w × out_h`;
/// only the output pixels in `window` = `(x, y, w, h)` are computed. The view must cover every
/// input pixel those outputs read ([`Resample::needed`] says which).
#[derive(Debug, Clone, Copy)]
pub struct Resample {
    /// Input width (Pillow's image).
    pub full_w: usize,
    /// Input height.
    pub full_h: usize,
    /// Output width.
    pub out_w: usize,
    /// Output height.
    pub out_h: usize,
    /// The output rectangle to compute.
    pub window: (usize, usize, usize, usize),
    /// The filter.
    pub filter: Filter,
}

impl Resample {
    /// A whole image resized to `out_w × out_h`.
    pub fn whole(full_w: usize, full_h: usize, out_w: usize, out_h: usize, filter: Filter) -> Self {
        Resample { full_w, full_h, out_w, out_h, window: (0, 0, out_w, out_h), filter }
    }

    fn axes(&self) -> (Coeffs, Coeffs) {
        (
            coeffs(self.full_w, 0.0, self.full_w as f64, self.out_w, self.filter),
            coeffs(self.full_h, 0.0, self.full_h as f64, self.out_h, self.filter),
        )
    }

    /// The input rectangle `(x, y, w, h)` that the window's outputs read.
    pub fn needed(&self) -> (usize, usize, usize, usize) {
        let (ch, cv) = self.axes();
        self.needed_from(&ch, &cv)
    }

    fn needed_from(&self, ch: &Coeffs, cv: &Coeffs) -> (usize, usize, usize, usize) {
        let (wx, wy, ww, wh) = self.window;
        let span = |c: &Coeffs, a: usize, n: usize| {
            let lo = c.bounds[a..a + n].iter().map(|b| b.0).min().unwrap_or(0);
            let hi = c.bounds[a..a + n].iter().map(|b| b.0 + b.1).max().unwrap_or(0);
            (lo, hi - lo)
        };
        let ((x, w), (y, h)) = (span(ch, wx, ww), span(cv, wy, wh));
        (x, y, w, h)
    }

    /// Resamples into `out` (packed RGB of the window's size).
    pub fn run(&self, view: RgbView, x0: usize, y0: usize, scratch: &mut ResizeScratch, out: &mut Vec<u8>) {
        let (wx, wy, ww, wh) = self.window;
        assert!(wx + ww <= self.out_w && wy + wh <= self.out_h, "resample window outside the output");
        out.clear();
        out.resize(ww * wh * 3, 0);
        if ww == 0 || wh == 0 || self.full_w == 0 || self.full_h == 0 {
            return;
        }
        let need_h = self.out_w != self.full_w;
        let need_v = self.out_h != self.full_h;
        let (ch, cv) = self.axes();
        let (nx, ny, nw, nh) = self.needed_from(&ch, &cv);
        assert!(
            nx >= x0 && ny >= y0 && nx + nw <= x0 + view.width && ny + nh <= y0 + view.height,
            "resample: the view {}x{} at ({x0}, {y0}) does not cover the input {nw}x{nh} at ({nx}, {ny})",
            view.width,
            view.height
        );
        // Pillow 13 runs the vertical pass first when the height shrinks by more than twice
        // as many pixels as the width (Resample.c, `horizontal_first`).
        let (iw, ih, ow, oh) = (self.full_w as i64, self.full_h as i64, self.out_w as i64, self.out_h as i64);
        let horizontal_first = !(ih - oh > 0 && ih - oh > (iw - ow) * 2);
        let line = ww * 3;
        let (tmp, acc, wide) = (&mut scratch.tmp, &mut scratch.acc, &mut scratch.wide);
        if horizontal_first || !need_v {
            // Rows of the virtual input that the vertical pass reads (or the window's rows).
            let (row0, rows) = if need_v { (ny, nh) } else { (wy, wh) };
            let tmp_view = if need_h {
                tmp.clear();
                tmp.resize(rows * line, 0);
                horizontal_rows(|r| view.row(row0 + r - y0), rows, x0, &ch, wx, ww, wide, tmp);
                RgbView { data: &tmp[..], stride: line, width: ww, height: rows }
            } else {
                view.crop(wx - x0, row0 - y0, ww, rows)
            };
            if !need_v {
                for y in 0..wh {
                    out[y * line..(y + 1) * line].copy_from_slice(tmp_view.row(y));
                }
                return;
            }
            for (o, yy) in (wy..wy + wh).enumerate() {
                vertical_row(&tmp_view, row0, &cv, yy, acc, &mut out[o * line..(o + 1) * line]);
            }
        } else {
            // Vertical first, over the columns the horizontal pass reads (all the window's
            // columns when there is no horizontal pass).
            let (col0, cols) = if need_h { (nx, nw) } else { (wx, ww) };
            let src = view.crop(col0 - x0, 0, cols, view.height);
            let tline = cols * 3;
            tmp.clear();
            tmp.resize(wh * tline, 0);
            for (o, yy) in (wy..wy + wh).enumerate() {
                vertical_row(&src, y0, &cv, yy, acc, &mut tmp[o * tline..(o + 1) * tline]);
            }
            let tmp_view = RgbView { data: &tmp[..], stride: tline, width: cols, height: wh };
            if need_h {
                horizontal_rows(|r| tmp_view.row(r), wh, col0, &ch, wx, ww, wide, out);
            } else {
                for y in 0..wh {
                    out[y * line..(y + 1) * line].copy_from_slice(tmp_view.row(y));
                }
            }
        }
    }
}

/// The horizontal pass over `rows` input rows (`row(r)` gives row `r`, whose first pixel is
/// input column `x0`), output columns `wx..wx + ww`, into `output` (packed, `ww · 3` per row).
/// Rows go two at a time: both rows' pixels are widened to one `[i32; 8]` per column (RGB, 0,
/// RGB, 0), so that each tap is one 8-lane multiply-add; the arithmetic (and so the result) is
/// Pillow's.
#[allow(clippy::too_many_arguments)]
fn horizontal_rows<'a>(
    row: impl Fn(usize) -> &'a [u8],
    rows: usize,
    x0: usize,
    ch: &Coeffs,
    wx: usize,
    ww: usize,
    wide: &mut Vec<[i32; 8]>,
    output: &mut [u8],
) {
    let line = ww * 3;
    let mut r = 0;
    while r < rows {
        let (a, b) = (row(r), row((r + 1).min(rows - 1)));
        let (out_a, rest) = output[r * line..].split_at_mut(line);
        let out_b = if r + 1 < rows { Some(&mut rest[..line]) } else { None };
        horizontal_pair(a, b, x0, ch, wx, ww, wide, out_a, out_b);
        r += 2;
    }
}

#[allow(clippy::too_many_arguments)]
fn horizontal_pair(
    a: &[u8],
    b: &[u8],
    x0: usize,
    ch: &Coeffs,
    wx: usize,
    ww: usize,
    wide: &mut Vec<[i32; 8]>,
    out_a: &mut [u8],
    out_b: Option<&mut [u8]>,
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe { horizontal_pair_avx2(a, b, x0, ch, wx, ww, wide, out_a, out_b) };
    }
    horizontal_pair_body(a, b, x0, ch, wx, ww, wide, out_a, out_b)
}

/// Widens the input pixels that output columns `wx..wx + ww` read, from rows `a` and `b`
/// (whose first pixel is input column `x0`), to one `[i32; 8]` per column (RGB, 0, RGB, 0);
/// returns the first input column widened. A plain loop, not an iterator with a closure:
/// closures are not compiled for AVX2 and could not be inlined into the AVX2 caller (a call and
/// a store-forwarding stall per pixel).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn widen_pair(a: &[u8], b: &[u8], x0: usize, ch: &Coeffs, wx: usize, ww: usize, wide: &mut Vec<[i32; 8]>) -> usize {
    let lo = ch.bounds[wx].0;
    let hi = ch.bounds[wx..wx + ww].iter().map(|b| b.0 + b.1).max().unwrap_or(lo);
    let (sa, sb) = (&a[(lo - x0) * 3..(hi - x0) * 3], &b[(lo - x0) * 3..(hi - x0) * 3]);
    let npx = hi - lo;
    wide.clear();
    wide.resize(npx, [0; 8]);
    for i in 0..npx {
        let (p, q) = (&sa[i * 3..i * 3 + 3], &sb[i * 3..i * 3 + 3]);
        wide[i] = [p[0] as i32, p[1] as i32, p[2] as i32, 0, q[0] as i32, q[1] as i32, q[2] as i32, 0];
    }
    lo
}

/// The same arithmetic with AVX2 intrinsics: one 8-lane 32-bit multiply-add per tap (the
/// compiler would not vectorise it by itself, the pad lanes being unused).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
unsafe fn horizontal_pair_avx2(
    a: &[u8],
    b: &[u8],
    x0: usize,
    ch: &Coeffs,
    wx: usize,
    ww: usize,
    wide: &mut Vec<[i32; 8]>,
    out_a: &mut [u8],
    out_b: Option<&mut [u8]>,
) {
    use std::arch::x86_64::*;
    let lo = widen_pair(a, b, x0, ch, wx, ww, wide);
    let ks = ch.ksize;
    let half = _mm256_set1_epi32(1 << (PRECISION_BITS - 1));
    let mut out_b = out_b;
    let mut lanes = [0u8; 8];
    for (o, xx) in (wx..wx + ww).enumerate() {
        let (xmin, n) = ch.bounds[xx];
        let k = &ch.weights[xx * ks..xx * ks + n];
        let px = &wide[xmin - lo..xmin - lo + n];
        let mut acc = half;
        for (&w, p) in k.iter().zip(px) {
            // SAFETY: `p` is 8 i32s (32 bytes); unaligned loads are allowed.
            let v = _mm256_loadu_si256(p.as_ptr() as *const __m256i);
            acc = _mm256_add_epi32(acc, _mm256_mullo_epi32(v, _mm256_set1_epi32(w)));
        }
        // clip8 for all lanes at once: an arithmetic shift, then saturating packs to u8
        // (negative -> 0, above 255 -> 255), exactly Pillow's clip8.
        let v = _mm256_srai_epi32::<PRECISION_BITS_I32>(acc);
        let (lo128, hi128) = (_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
        let bytes = _mm_packus_epi16(_mm_packs_epi32(lo128, hi128), _mm_setzero_si128());
        _mm_storel_epi64(lanes.as_mut_ptr() as *mut __m128i, bytes);
        out_a[o * 3..o * 3 + 3].copy_from_slice(&lanes[0..3]);
        if let Some(ob) = out_b.as_deref_mut() {
            ob[o * 3..o * 3 + 3].copy_from_slice(&lanes[4..7]);
        }
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn horizontal_pair_body(
    a: &[u8],
    b: &[u8],
    x0: usize,
    ch: &Coeffs,
    wx: usize,
    ww: usize,
    wide: &mut Vec<[i32; 8]>,
    out_a: &mut [u8],
    out_b: Option<&mut [u8]>,
) {
    let half = 1i32 << (PRECISION_BITS - 1);
    let lo = widen_pair(a, b, x0, ch, wx, ww, wide);
    let ks = ch.ksize;
    let mut out_b = out_b;
    for (o, xx) in (wx..wx + ww).enumerate() {
        let (xmin, n) = ch.bounds[xx];
        let k = &ch.weights[xx * ks..xx * ks + n];
        let px = &wide[xmin - lo..xmin - lo + n];
        let mut s = [half; 8];
        for (&w, p) in k.iter().zip(px) {
            for l in 0..8 {
                s[l] += p[l] * w;
            }
        }
        let d = &mut out_a[o * 3..o * 3 + 3];
        d[0] = clip8(s[0]);
        d[1] = clip8(s[1]);
        d[2] = clip8(s[2]);
        if let Some(ob) = out_b.as_deref_mut() {
            let d = &mut ob[o * 3..o * 3 + 3];
            d[0] = clip8(s[4]);
            d[1] = clip8(s[5]);
            d[2] = clip8(s[6]);
        }
    }
}

/// Output row `yy` of the vertical pass from `input`, whose first row is input row `row0`.
fn vertical_row(input: &RgbView, row0: usize, cv: &Coeffs, yy: usize, acc: &mut Vec<i32>, output: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe { vertical_row_avx2(input, row0, cv, yy, acc, output) };
    }
    vertical_row_body(input, row0, cv, yy, acc, output)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn vertical_row_avx2(
    input: &RgbView,
    row0: usize,
    cv: &Coeffs,
    yy: usize,
    acc: &mut Vec<i32>,
    output: &mut [u8],
) {
    vertical_row_body(input, row0, cv, yy, acc, output)
}

#[inline(always)]
fn vertical_row_body(input: &RgbView, row0: usize, cv: &Coeffs, yy: usize, acc: &mut Vec<i32>, output: &mut [u8]) {
    let (ymin, n) = cv.bounds[yy];
    acc.clear();
    acc.resize(output.len(), 1 << (PRECISION_BITS - 1));
    let k = &cv.weights[yy * cv.ksize..yy * cv.ksize + n];
    for (i, &w) in k.iter().enumerate() {
        let row = input.row(ymin - row0 + i);
        for (a, &p) in acc.iter_mut().zip(row) {
            *a += p as i32 * w;
        }
    }
    for (d, &a) in output.iter_mut().zip(acc.iter()) {
        *d = clip8(a);
    }
}

/// Resizes `src` to `out_w × out_h` as Pillow's `im.resize((out_w, out_h), filter)` does,
/// into `out` (packed RGB).
pub fn resize(
    src: RgbView,
    out_w: usize,
    out_h: usize,
    filter: Filter,
    scratch: &mut ResizeScratch,
    out: &mut Vec<u8>,
) {
    Resample::whole(src.width, src.height, out_w, out_h, filter).run(src, 0, 0, scratch, out)
}
