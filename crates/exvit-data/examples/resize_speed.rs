//! Times the resampler alone (a quick check while tuning; the real benchmark is
//! benches/data-vs-torchvision): a 360x300 crop of a 500x375 image to 256x256, bilinear.
//!   cargo run --release -p exvit-data --example resize_speed
use exvit_data::resize::{Filter, Resample, ResizeScratch, RgbView};

fn main() {
    let (w, h) = (500usize, 375usize);
    let img: Vec<u8> = (0..w * h * 3).map(|i| (i * 7 % 251) as u8).collect();
    let view = RgbView::new(&img, w, h).crop(40, 30, 360, 300);
    let mut scratch = ResizeScratch::default();
    let mut out = Vec::new();
    let r = Resample::whole(360, 300, 256, 256, Filter::Bilinear);
    for _ in 0..50 {
        r.run(view, 0, 0, &mut scratch, &mut out);
    }
    let n = 500;
    let t = std::time::Instant::now();
    for _ in 0..n {
        r.run(view, 0, 0, &mut scratch, &mut out);
    }
    println!("resize 360x300 -> 256x256 bilinear: {:.1} us", t.elapsed().as_secs_f64() * 1e6 / n as f64);
}
