//! Sources, decoding quirks, the check and the manifest, on data generated here.

use std::io::Write;
use std::path::{Path, PathBuf};

use exvit_data::manifest::{read_manifest, write_manifest};
use exvit_data::source::{discover, open_cifar};
use exvit_data::{
    check_dataset, decode_rgb, open_split, sniff, CheckOptions, DecodeError, Format, Layout, OnBadImage, Status,
};
use image::codecs::gif::GifEncoder;
use image::{DynamicImage, GrayImage, ImageFormat, Rgb, RgbImage, Rgba, RgbaImage};

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("exvit-data-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn gradient(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| Rgb([(x * 255 / w) as u8, (y * 255 / h) as u8, ((x + y) % 256) as u8]))
}

fn encode(img: &DynamicImage, fmt: ImageFormat) -> Vec<u8> {
    let mut buf = std::io::Cursor::new(Vec::new());
    img.write_to(&mut buf, fmt).unwrap();
    buf.into_inner()
}

/// A PNG whose IHDR claims `w x h` (a header bomb): a tiny IDAT and IEND follow.
fn png_header_bomb(w: u32, h: u32) -> Vec<u8> {
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    for (kind, data) in [(&b"IHDR"[..], ihdr), (b"IDAT", vec![0x78, 0x9c, 0x03, 0, 0, 0, 0, 1]), (b"IEND", vec![])] {
        let mut chunk = kind.to_vec();
        chunk.extend_from_slice(&data);
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        out.extend_from_slice(&chunk);
        out.extend_from_slice(&crc32(&chunk).to_be_bytes());
    }
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in data {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
        }
    }
    !c
}

fn write(p: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::File::create(p).unwrap().write_all(bytes).unwrap();
}

#[test]
fn quirks_are_decoded_or_reported() {
    let rgb = DynamicImage::ImageRgb8(gradient(20, 12));
    // PNG named .JPEG: sniffed as PNG, decoded exactly.
    let png = encode(&rgb, ImageFormat::Png);
    assert_eq!(sniff(&png), Some(Format::Png));
    assert_eq!(decode_rgb(&png, 1 << 20).unwrap().data, gradient(20, 12).into_raw());
    // Grayscale is replicated to RGB.
    let gray = DynamicImage::ImageLuma8(GrayImage::from_fn(5, 4, |x, y| image::Luma([(x * 40 + y) as u8])));
    let g = decode_rgb(&encode(&gray, ImageFormat::Png), 1 << 20).unwrap();
    assert_eq!(&g.data[..6], &[0, 0, 0, 40, 40, 40]);
    // RGBA: alpha dropped, not composited (as Pillow's convert('RGB')).
    let rgba = DynamicImage::ImageRgba8(RgbaImage::from_pixel(3, 3, Rgba([200, 100, 50, 10])));
    assert_eq!(&decode_rgb(&encode(&rgba, ImageFormat::Png), 1 << 20).unwrap().data[..3], &[200, 100, 50]);
    // Palette GIF.
    let mut gif = Vec::new();
    {
        let mut enc = GifEncoder::new(&mut gif);
        enc.encode_frame(image::Frame::new(RgbaImage::from_pixel(4, 4, Rgba([255, 0, 0, 255])))).unwrap();
    }
    assert_eq!(sniff(&gif), Some(Format::Gif));
    assert_eq!(&decode_rgb(&gif, 1 << 20).unwrap().data[..3], &[255, 0, 0]);
    // JPEG decodes close to the source.
    let jpg = encode(&rgb, ImageFormat::Jpeg);
    let j = decode_rgb(&jpg, 1 << 20).unwrap();
    assert_eq!((j.width, j.height), (20, 12));
    // Truncated, empty, text, header bomb.
    assert!(matches!(decode_rgb(&jpg[..jpg.len() / 2], 1 << 20), Err(DecodeError::Corrupt { format: "jpeg", .. })));
    assert_eq!(decode_rgb(&[], 1 << 20), Err(DecodeError::Empty));
    assert!(matches!(decode_rgb(b"hello, world", 1 << 20), Err(DecodeError::NotAnImage(_))));
    let bomb = png_header_bomb(100_000, 100_000);
    assert_eq!(
        decode_rgb(&bomb, 64 << 20),
        Err(DecodeError::TooLarge { width: 100_000, height: 100_000, max: 64 << 20 })
    );
}

#[test]
fn image_folder_check_reports_bad_files_and_writes_a_manifest() {
    let root = tmp("folder").join("train");
    let png = encode(&DynamicImage::ImageRgb8(gradient(8, 6)), ImageFormat::Png);
    let jpg = encode(&DynamicImage::ImageRgb8(gradient(16, 16)), ImageFormat::Jpeg);
    write(&root.join("n02/b.jpg"), &jpg);
    write(&root.join("n02/a.JPEG"), &png); // a PNG named .JPEG
    write(&root.join("n01/x.jpg"), &jpg);
    write(&root.join("n01/sub/y.jpg"), &jpg);
    write(&root.join("n01/empty.jpg"), &[]);
    write(&root.join("n01/notes.txt"), b"not an image");
    write(&root.join("n01/cut.jpg"), &jpg[..jpg.len() / 3]);
    write(&root.join("n01/bomb.png"), &png_header_bomb(50_000, 50_000));
    write(&root.join("n01/.hidden.jpg"), &jpg);

    let ds = open_split(&root).unwrap();
    assert_eq!(ds.layout, Layout::ImageFolder);
    assert_eq!(ds.classes, vec!["n01", "n02"], "sorted folder names, as torchvision");
    assert_eq!(ds.samples.len(), 8, "every non-hidden file, recursively");
    let report = check_dataset(&ds, CheckOptions::default(), &|_| {}).unwrap();
    assert_eq!(report.counts(), vec![6, 2]);
    let bad: Vec<(&str, String)> = report
        .bad()
        .iter()
        .map(|r| {
            (
                r.path.rsplit('/').next().unwrap(),
                match &r.status {
                    Status::Bad(w) => w.clone(),
                    _ => unreachable!(),
                },
            )
        })
        .collect();
    assert_eq!(bad.len(), 4, "{bad:?}");
    assert!(bad.iter().any(|(p, w)| *p == "empty.jpg" && w.contains("empty")));
    assert!(bad.iter().any(|(p, w)| *p == "notes.txt" && w.contains("not an image")));
    assert!(bad.iter().any(|(p, w)| *p == "cut.jpg" && w.contains("corrupt jpeg")));
    assert!(bad.iter().any(|(p, w)| *p == "bomb.png" && w.contains("exceeds the cap")));
    let a = report.records.iter().find(|r| r.path.ends_with("a.JPEG")).unwrap();
    assert_eq!((a.format.as_str(), a.width, a.height, a.status.clone()), ("png", 8, 6, Status::Ok));

    let fail = check_dataset(&ds, CheckOptions { on_bad_image: OnBadImage::Fail, ..Default::default() }, &|_| {});
    let msg = fail.unwrap_err().to_string();
    assert!(msg.contains("n01/") && msg.contains("bad image"), "{msg}");

    let manifest = root.parent().unwrap().join("m.parquet");
    write_manifest(&report.records, &manifest).unwrap();
    let df = read_manifest(&manifest).unwrap();
    assert_eq!(df.height(), 8);
    let names: Vec<&str> = df.get_column_names().into_iter().map(|s| s.as_str()).collect();
    assert_eq!(names, ["path", "label", "width", "height", "bytes", "format", "status"]);
}

#[test]
fn splits_are_discovered_by_folder() {
    let root = tmp("splits");
    let jpg = encode(&DynamicImage::ImageRgb8(gradient(4, 4)), ImageFormat::Jpeg);
    write(&root.join("train/cat/1.jpg"), &jpg);
    write(&root.join("val/cat/1.jpg"), &jpg);
    write(&root.join("val/dog/1.jpg"), &jpg);
    let splits = discover(&root).unwrap();
    assert_eq!(
        splits.iter().map(|d| (d.split.as_str(), d.samples.len())).collect::<Vec<_>>(),
        [("train", 1), ("val", 2)]
    );
    let e = open_split(&root.join("train/cat")).unwrap_err().to_string();
    assert!(e.contains("no class folders"), "{e}");
}

#[test]
fn tar_shards_read_like_an_image_folder() {
    let root = tmp("tar");
    let imgs: Vec<Vec<u8>> =
        (0..3).map(|i| encode(&DynamicImage::ImageRgb8(gradient(5 + i, 7)), ImageFormat::Png)).collect();
    let mut b = tar::Builder::new(std::fs::File::create(root.join("shard-000000.tar")).unwrap());
    for (i, img) in imgs.iter().enumerate() {
        let mut h = tar::Header::new_gnu();
        h.set_size(img.len() as u64);
        h.set_cksum();
        b.append_data(&mut h, format!("{i:06}.jpg"), img.as_slice()).unwrap();
        let cls = format!("{}", i % 2);
        let mut h = tar::Header::new_gnu();
        h.set_size(cls.len() as u64);
        h.set_cksum();
        b.append_data(&mut h, format!("{i:06}.cls"), cls.as_bytes()).unwrap();
    }
    b.finish().unwrap();
    drop(b);
    write(&root.join("classes.txt"), b"cat\ndog\n");
    let ds = open_split(&root).unwrap();
    assert_eq!(ds.layout, Layout::TarShards);
    assert_eq!(ds.classes, ["cat", "dog"]);
    assert_eq!(ds.samples.iter().map(|s| s.label).collect::<Vec<_>>(), [0, 1, 0]);
    let img = ds.load_rgb(&ds.samples[2], 1 << 20).unwrap();
    assert_eq!((img.width, img.height), (7, 7));
    assert_eq!(img.data, gradient(7, 7).into_raw());
}

#[test]
fn cifar_binary_release() {
    let root = tmp("cifar").join("cifar-10-batches-bin");
    std::fs::create_dir_all(&root).unwrap();
    let classes = "airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n";
    write(&root.join("batches.meta.txt"), classes.as_bytes());
    let record = |label: u8, v: u8| {
        let mut r = vec![label];
        r.extend((0..3072).map(|i| {
            if i < 1024 {
                v
            } else if i < 2048 {
                v / 2
            } else {
                7
            }
        }));
        r
    };
    for i in 1..=5 {
        write(&root.join(format!("data_batch_{i}.bin")), &[record(i, 10 * i), record(9, 1)].concat());
    }
    write(&root.join("test_batch.bin"), &record(3, 99));
    let train = open_cifar(&root, "train").unwrap();
    assert_eq!((train.layout, train.samples.len(), train.classes.len()), (Layout::Cifar10Binary, 10, 10));
    assert_eq!(train.samples[2].label, 2);
    let img = train.load_rgb(&train.samples[2], 1 << 20).unwrap();
    assert_eq!(&img.data[..3], &[20, 10, 7], "planes interleaved to RGB");
    let splits = discover(&root).unwrap();
    assert_eq!(splits.iter().map(|d| d.samples.len()).collect::<Vec<_>>(), [10, 1]);
    write(&root.join("test_batch.bin"), &record(3, 99)[..100]);
    let e = open_cifar(&root, "test").unwrap_err().to_string();
    assert!(e.contains("test_batch.bin") && e.contains("not a multiple"), "{e}");
}

#[test]
fn pack_writes_shards_that_read_back_as_the_same_dataset() {
    let root = tmp("pack");
    let train = root.join("train");
    for (class, n) in [("a", 3), ("b", 2)] {
        for i in 0..n {
            let img = encode(&DynamicImage::ImageRgb8(gradient(4 + i, 5)), ImageFormat::Png);
            write(&train.join(class).join(format!("{i}.png")), &img);
        }
    }
    let ds = open_split(&train).unwrap();
    let out = root.join("shards");
    let shards = exvit_data::pack::pack_shards(&ds, &out, 2).unwrap();
    assert_eq!(shards.len(), 3);
    let packed = open_split(&out).unwrap();
    assert_eq!(packed.layout, Layout::TarShards);
    assert_eq!(packed.classes, ds.classes);
    assert_eq!(
        packed.samples.iter().map(|s| s.label).collect::<Vec<_>>(),
        ds.samples.iter().map(|s| s.label).collect::<Vec<_>>()
    );
    for (a, b) in ds.samples.iter().zip(&packed.samples) {
        assert_eq!(ds.read_bytes(a).unwrap(), packed.read_bytes(b).unwrap());
    }
    assert!(std::fs::read_dir(&out).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().contains(".tmp")));
}
