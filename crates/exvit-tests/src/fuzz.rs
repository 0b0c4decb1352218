//! Fuzz targets: every parser of untrusted input, each as a function of one byte string.
//!
//! Shared by the two fuzzers (docs/reliability.md):
//! - the coverage-guided one, libFuzzer through `cargo fuzz` (`fuzz/`, one thin binary per
//!   target calling [`run`]), for the long runs;
//! - exvit's own seeded mutation harness ([`mutate`], `tests/fuzz.rs`), on stable `cargo test`,
//!   which CI runs briefly over the seed corpora (`fuzz/seeds/<target>/`) and the regression
//!   inputs (`fuzz/regressions/<target>/`).
//!
//! A target returns normally for any input, whether the parser accepts it or refuses it with an
//! error; a panic, an abort, a hang or a huge allocation is a finding. Parsers that only take a
//! path get the input written to a scratch file first (one scratch folder per thread).

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use burn_flex::{Flex, FlexDevice};
use exvit_common::SplitMix64;
use exvit_zoo::{LoadMode, MobileVit};

/// The largest image a target decodes (pixels): exvit's default cap would let a 16-byte header
/// ask for 178 M pixels, which is the cap working, not a finding, but slow to fuzz.
const MAX_PIXELS: u64 = 1 << 20;

/// One target.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// Its name: `cargo fuzz run NAME`, `fuzz/seeds/NAME/`.
    pub name: &'static str,
    /// What it parses.
    pub what: &'static str,
    /// Runs one input.
    pub run: fn(&[u8]),
}

/// Every target.
pub const TARGETS: &[Target] = &[
    Target { name: "image", what: "JPEG/PNG/GIF decoding by magic bytes (decode_rgb)", run: image },
    Target {
        name: "jpeg_window",
        what: "the libjpeg-turbo C shim: header, reduced-DCT scales, crop windows, fast IDCT",
        run: jpeg_window,
    },
    Target { name: "safetensors", what: "weights into a model (strict and from-backbone)", run: safetensors },
    Target {
        name: "safetensors_header",
        what: "a safetensors header alone; parameter counts",
        run: safetensors_header,
    },
    Target { name: "tar_shard", what: "a WebDataset tar shard and reads of its members", run: tar_shard },
    Target { name: "matfile", what: "MAT v5 (the devkit's meta.mat) and its synsets", run: matfile },
    Target { name: "cifar", what: "a CIFAR-10 binary batch and reads of its records", run: cifar },
    Target { name: "manifest", what: "a dataset manifest (Parquet)", run: manifest },
    Target { name: "feature_cache", what: "a feature cache: manifest.json + an Arrow IPC shard", run: feature_cache },
    Target { name: "run_config", what: "a run's config.toml", run: run_config },
    Target { name: "model_toml", what: "a model variant's TOML", run: model_toml },
    Target { name: "loc_csv", what: "Kaggle's LOC_val_solution.csv", run: loc_csv },
];

/// Runs target `name` on `data` (panics on an unknown name): the entry point of the libFuzzer
/// binaries. A panic is a finding (the process aborts, which libFuzzer reports with the input)
/// unless exvit contains it as an error ([`exvit_common::unwind::catch_panic`], around readers
/// that panic on corrupt files): libfuzzer-sys's hook would abort on those too.
pub fn run(name: &str, data: &[u8]) {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            if !exvit_common::unwind::containing() {
                eprintln!("{info}\n{}", std::backtrace::Backtrace::force_capture());
                std::process::abort();
            }
        }))
    });
    let t = TARGETS.iter().find(|t| t.name == name).unwrap_or_else(|| panic!("no fuzz target `{name}`"));
    (t.run)(data)
}

thread_local! {
    static SCRATCH: PathBuf = {
        let d = std::env::temp_dir().join(format!(
            "exvit-fuzz-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ).replace(['(', ')'], ""));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("a scratch folder");
        d
    };
    static TINY: RefCell<Option<MobileVit<Flex>>> = const { RefCell::new(None) };
}

/// This thread's scratch folder, `sub` inside it (created, emptied).
fn scratch(sub: &str) -> PathBuf {
    let d = SCRATCH.with(|s| s.join(sub));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("a scratch folder");
    d
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// Two byte strings packed as one: a little-endian u32 length, the first, the rest.
pub fn split2(data: &[u8]) -> (&[u8], &[u8]) {
    if data.len() < 4 {
        return (data, &[]);
    }
    let n = (u32::from_le_bytes(data[..4].try_into().expect("4 bytes")) as usize).min(data.len() - 4);
    (&data[4..4 + n], &data[4 + n..])
}

/// [`split2`]'s inverse.
pub fn join2(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut v = (a.len() as u32).to_le_bytes().to_vec();
    v.extend_from_slice(a);
    v.extend_from_slice(b);
    v
}

fn image(data: &[u8]) {
    let _ = exvit_data::sniff(data);
    let _ = exvit_data::decode::probe(data, MAX_PIXELS);
    let _ = exvit_data::decode_rgb(data, MAX_PIXELS);
}

fn jpeg_window(data: &[u8]) {
    // The first 6 bytes choose the scale, the fast IDCT and a crop window; the rest is the JPEG.
    if data.len() < 6 {
        return;
    }
    let (ctl, jpeg) = data.split_at(6);
    let _ = exvit_data::jpeg_header(jpeg);
    let scale = [1, 2, 4, 8, 3][ctl[0] as usize % 5];
    let window = (ctl[1] & 1 == 1).then(|| exvit_data::Window {
        x: ctl[2] as u32,
        y: ctl[3] as u32,
        w: ctl[4] as u32 + 1,
        h: ctl[5] as u32 + 1,
    });
    let mut out = Vec::new();
    let _ = exvit_data::jpeg::decode_jpeg_with(jpeg, MAX_PIXELS, scale, ctl[1] & 2 == 2, window, &mut out);
}

fn tiny_model() -> MobileVit<Flex> {
    TINY.with(|t| {
        t.borrow_mut()
            .get_or_insert_with(|| {
                let cfg = exvit_zoo::resolve_model(
                    crate::repo_root().join("tests/fixtures/parity/tiny.toml").to_str().expect("a UTF-8 path"),
                    3,
                )
                .expect("the tiny model");
                cfg.init(&FlexDevice)
            })
            .clone()
    })
}

fn safetensors(data: &[u8]) {
    let p = scratch("st").join("w.safetensors");
    write(&p, data);
    for mode in [LoadMode::Strict, LoadMode::FromBackbone] {
        let _ = exvit_zoo::load_safetensors(tiny_model(), &p, mode);
    }
}

fn safetensors_header(data: &[u8]) {
    let p = scratch("sth").join("w.safetensors");
    write(&p, data);
    if let Ok(h) = exvit_common::safetensors_header::read_header(&p) {
        for k in h.keys() {
            let _ = exvit_common::safetensors_header::shape_of(&h, k);
        }
    }
    let _ = exvit_rundir::count_params_in_file(&p);
}

fn tar_shard(data: &[u8]) {
    let d = scratch("tar");
    write(&d.join("shard-000000.tar"), data);
    if let Ok(ds) = exvit_data::open_path(&d, "train") {
        for s in ds.samples.iter().take(8) {
            let _ = ds.load_rgb(s, MAX_PIXELS);
        }
    }
}

fn matfile(data: &[u8]) {
    if let Ok(vars) = exvit_data::matfile::read_mat(data) {
        for (_, v) in &vars {
            for i in 0..v.len().min(4) {
                let _ = v.field(i, "ILSVRC2012_ID").and_then(|f| f.as_number());
                let _ = v.field(i, "WNID").and_then(|f| f.as_str());
            }
        }
    }
    let p = scratch("mat").join("meta.mat");
    write(&p, data);
    let _ = exvit_data::devkit_id_to_label(&p);
}

fn cifar(data: &[u8]) {
    let d = scratch("cifar");
    write(&d.join("data_batch_1.bin"), &[]);
    write(&d.join("batches.meta.txt"), b"airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n");
    write(&d.join("test_batch.bin"), data);
    if let Ok(ds) = exvit_data::open_cifar(&d, "test") {
        for s in ds.samples.iter().take(4) {
            let _ = ds.load_rgb(s, MAX_PIXELS);
        }
    }
}

fn manifest(data: &[u8]) {
    let p = scratch("manifest").join("train.parquet");
    write(&p, data);
    let _ = exvit_data::manifest::read_manifest(&p);
}

fn feature_cache(data: &[u8]) {
    let (manifest, shard) = split2(data);
    let d = scratch("cache");
    write(&d.join("manifest.json"), manifest);
    write(&exvit_probe::cache::shard_path(&d, 0), shard);
    if let Ok(c) = exvit_probe::Cache::open(&d) {
        let _ = c.bad();
        let columns: Vec<String> = c.manifest.taps.iter().map(|t| t.spec.column()).collect();
        let _ = c.read(&columns.iter().map(String::as_str).collect::<Vec<_>>());
    }
}

fn run_config(data: &[u8]) {
    let p = scratch("config").join("config.toml");
    write(&p, data);
    if let Ok(cfg) = exvit_train::run::RunConfig::from_toml_file(&p) {
        let _ = cfg.to_toml();
    }
}

fn model_toml(data: &[u8]) {
    let p = scratch("model").join("variant.toml");
    write(&p, data);
    let _ = exvit_zoo::resolve_model(p.to_str().expect("a UTF-8 path"), 10);
}

fn loc_csv(data: &[u8]) {
    let _ = exvit_data::parse_loc_val_solution(&String::from_utf8_lossy(data), Path::new("LOC_val_solution.csv"));
}

/// The seed and regression inputs of `target` committed under `fuzz/` (seeds first), each with
/// its path.
pub fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for kind in ["seeds", "regressions"] {
        let dir = crate::repo_root().join("fuzz").join(kind).join(target);
        let mut files: Vec<PathBuf> =
            std::fs::read_dir(&dir).into_iter().flatten().flatten().map(|e| e.path()).filter(|p| p.is_file()).collect();
        files.sort();
        out.extend(files.into_iter().map(|p| {
            let b = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, b)
        }));
    }
    out
}

/// Boundary values written over length and offset fields.
const INTERESTING: [u64; 12] = [0, 1, 2, 7, 8, 0x7f, 0x80, 0xff, 0x7fff_ffff, 0xffff_ffff, u64::MAX / 2, u64::MAX];

/// One mutant of `input`, drawn from `rng`: 1 to 4 of bit flips, byte sets, boundary values
/// over 1/2/4/8-byte fields (either byte order; lengths and offsets), truncation, deletion,
/// duplication, insertion of random bytes, and a splice with `other` (another seed). At most
/// `max_len` bytes.
pub fn mutate(rng: &mut SplitMix64, input: &[u8], other: &[u8], max_len: usize) -> Vec<u8> {
    let mut v = input.to_vec();
    let below = |rng: &mut SplitMix64, n: usize| if n == 0 { 0 } else { (rng.next_u64() % n as u64) as usize };
    let rounds = 1 + below(rng, 4);
    for _ in 0..rounds {
        let n = v.len();
        match below(rng, 10) {
            0 if n > 0 => {
                let i = below(rng, n);
                v[i] ^= 1 << below(rng, 8);
            }
            1 if n > 0 => {
                let i = below(rng, n);
                v[i] = rng.next_u64() as u8;
            }
            2 | 3 if n > 0 => {
                let width = [1, 2, 4, 8][below(rng, 4)];
                if n >= width {
                    let at = below(rng, n - width + 1);
                    let mut value = INTERESTING[below(rng, INTERESTING.len())];
                    if below(rng, 3) == 0 {
                        // Near a value already there: off-by-some lengths.
                        let mut cur = [0u8; 8];
                        cur[..width].copy_from_slice(&v[at..at + width]);
                        value = u64::from_le_bytes(cur).wrapping_add(rng.next_u64() % 33).wrapping_sub(16);
                    }
                    let bytes = if below(rng, 2) == 0 { value.to_le_bytes() } else { value.to_be_bytes() };
                    let bytes = if below(rng, 2) == 0 { &bytes[..width] } else { &bytes[8 - width..] };
                    v[at..at + width].copy_from_slice(bytes);
                }
            }
            4 => v.truncate(below(rng, n + 1)),
            5 if n > 0 => {
                let at = below(rng, n);
                let len = 1 + below(rng, (n - at).min(64));
                v.drain(at..at + len);
            }
            6 if n > 0 => {
                let at = below(rng, n);
                let len = 1 + below(rng, (n - at).min(256));
                let chunk = v[at..at + len].to_vec();
                let to = below(rng, n + 1);
                v.splice(to..to, chunk);
            }
            7 => {
                let to = below(rng, n + 1);
                let len = 1 + below(rng, 16);
                let bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
                v.splice(to..to, bytes);
            }
            8 if !other.is_empty() => {
                // Splice: a prefix of this one, a suffix of the other.
                let at = below(rng, n + 1);
                let from = below(rng, other.len());
                v.truncate(at);
                v.extend_from_slice(&other[from..]);
            }
            _ if n > 0 => {
                // A run of one byte (runs of 0xff and 0x00 are markers and padding).
                let at = below(rng, n);
                let len = 1 + below(rng, (n - at).min(32));
                let b = [0u8, 0xff, b'0', b'[', b'"'][below(rng, 5)];
                v[at..at + len].fill(b);
            }
            _ => {}
        }
    }
    v.truncate(max_len);
    v
}
