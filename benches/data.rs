//! criterion benchmarks of the data stages on one 500x375 image: JPEG decode (whole, and a
//! crop window), Pillow-exact resample of a 360x300 crop to 256x256, and the conversion to f32
//! CHW. `cargo bench -p exvit-tests --bench data`. Never run in CI. The end-to-end figure
//! against torchvision is benches/data-vs-torchvision; both are in docs/data.md.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use exvit_data::resize::{Filter, Resample, ResizeScratch, RgbView};
use exvit_data::transform::{to_chw, Normalize};
use exvit_data::{decode_jpeg_into, Window};

/// A photo-like 500x375 JPEG (smooth shading plus texture), encoded by the image crate.
fn jpeg() -> Vec<u8> {
    let (w, h) = (500u32, 375u32);
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        let t = ((x * 7919 + y * 104_729) % 61) as i32 - 30;
        let s = |v: f32| (v.sin() * 100.0 + 128.0) as i32;
        let c = |v: i32| (v + t).clamp(0, 255) as u8;
        image::Rgb([c(s(x as f32 / 40.0)), c(s(y as f32 / 30.0)), c(s((x + y) as f32 / 50.0))])
    });
    let mut buf = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img).write_to(&mut buf, image::ImageFormat::Jpeg).unwrap();
    buf.into_inner()
}

fn stages(c: &mut Criterion) {
    let bytes = jpeg();
    let mut g = c.benchmark_group("data");
    g.sample_size(30).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4));
    let mut out = Vec::new();
    g.bench_function("decode_whole_500x375", |b| {
        b.iter(|| decode_jpeg_into(&bytes, 1 << 26, 1, None, &mut out).unwrap())
    });
    let win = Window { x: 40, y: 30, w: 360, h: 300 };
    g.bench_function("decode_window_360x300", |b| {
        b.iter(|| decode_jpeg_into(&bytes, 1 << 26, 1, Some(win), &mut out).unwrap())
    });
    decode_jpeg_into(&bytes, 1 << 26, 1, Some(win), &mut out).unwrap();
    let crop = out.clone();
    let view = RgbView::new(&crop, 360, 300);
    let mut scratch = ResizeScratch::default();
    let mut resized = Vec::new();
    for filter in [Filter::Bilinear, Filter::Bicubic] {
        let r = Resample::whole(360, 300, 256, 256, filter);
        g.bench_function(format!("resize_360x300_to_256_{filter:?}"), |b| {
            b.iter(|| r.run(view, 0, 0, &mut scratch, &mut resized))
        });
    }
    let mut floats = vec![0f32; 3 * 256 * 256];
    g.bench_function("to_chw_256_flip", |b| {
        b.iter(|| to_chw(&resized, 256, 256, true, &Normalize::default(), &mut floats))
    });
    g.finish();
}

criterion_group!(benches, stages);
criterion_main!(benches);
