//! `--pretrained` and `exvit zoo fetch`: weights from the Hugging Face hub cache, in its
//! standard layout, and downloads from a hub served on 127.0.0.1 by the test (no network).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use exvit_zoo::hub::sha256_file;

const REPO: &str = "timm/mobilevit_xxs.cvnets_in1k";
const COMMIT: &str = "4d9e5b7a0c1f2e3d4c5b6a79881726354a5b6c7d";

/// Runs exvit with a clean hub environment plus `env`: (success, stdout, stderr).
fn exvit(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_exvit"));
    for v in [
        "HF_HOME",
        "HF_HUB_CACHE",
        "HF_ENDPOINT",
        "HF_TOKEN",
        "HF_TOKEN_PATH",
        "HF_HUB_OFFLINE",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        cmd.env_remove(v);
    }
    let out = cmd.args(args).envs(env.iter().copied()).output().expect("run exvit");
    let (stdout, stderr): (String, String) =
        (String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into());
    assert!(!stderr.contains("panicked"), "exvit panicked:\n{stderr}");
    (out.status.success(), stdout, stderr)
}

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("exvit-pretrained-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Seeded mobilevit_xxs weights (exvit's reference init), standing in for timm's.
fn seeded_weights(dir: &Path, seed: u64) -> PathBuf {
    let w = dir.join(format!("seed{seed}.safetensors"));
    let seed = seed.to_string();
    let (ok, _, stderr) =
        exvit(&["zoo", "init", "--model", "mobilevit_xxs", "--seed", &seed, "--out", w.to_str().unwrap()], &[]);
    assert!(ok, "{stderr}");
    w
}

/// Puts `weights` in a hub cache at `hub` as huggingface_hub does: the blob named by its
/// SHA-256, a snapshot link, `refs/main`. Returns the blob.
fn cache(hub: &Path, weights: &Path) -> PathBuf {
    let repo = hub.join("models--timm--mobilevit_xxs.cvnets_in1k");
    let blob = repo.join("blobs").join(sha256_file(weights).unwrap());
    std::fs::create_dir_all(blob.parent().unwrap()).unwrap();
    std::fs::copy(weights, &blob).unwrap();
    let snap = repo.join("snapshots").join(COMMIT);
    std::fs::create_dir_all(&snap).unwrap();
    std::os::unix::fs::symlink(
        format!("../../blobs/{}", blob.file_name().unwrap().to_str().unwrap()),
        snap.join("model.safetensors"),
    )
    .unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), COMMIT).unwrap();
    blob
}

/// `exvit forward` of mobilevit_xxs at 64x64 with `weights_args`: every output tensor (name,
/// shape, bytes), in name order.
fn forward(dir: &Path, tag: &str, weights_args: &[&str], env: &[(&str, &str)]) -> Vec<(String, Vec<usize>, Vec<u8>)> {
    let out = dir.join(format!("{tag}.safetensors"));
    let mut args = vec!["forward", "--model", "mobilevit_xxs", "--size", "64", "--output", out.to_str().unwrap()];
    args.extend_from_slice(weights_args);
    let (ok, _, stderr) = exvit(&args, env);
    assert!(ok, "{stderr}");
    let bytes = std::fs::read(out).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<_> =
        st.tensors().into_iter().map(|(n, v)| (n, v.shape().to_vec(), v.data().to_vec())).collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(tensors.iter().any(|t| t.0 == "logits"));
    tensors
}

#[test]
fn the_cache_timm_fills_is_used_offline_and_checked() {
    let dir = tempdir("cache");
    let hub = dir.join("hf/hub");
    let w = seeded_weights(&dir, 5);
    let blob = cache(&hub, &w);
    let offline = [("HF_HUB_CACHE", hub.to_str().unwrap()), ("HF_HUB_OFFLINE", "1")];
    // The same outputs as --weights on the file.
    let want = forward(&dir, "weights", &["--weights", w.to_str().unwrap()], &[]);
    assert_eq!(forward(&dir, "pretrained", &["--pretrained"], &offline), want);
    // HF_HOME/hub is the cache when HF_HUB_CACHE is unset.
    let home = [("HF_HOME", dir.join("hf")), ("HF_HUB_OFFLINE", "1".into())];
    let home: Vec<(&str, &str)> = home.iter().map(|(k, v)| (*k, v.to_str().unwrap())).collect();
    assert_eq!(forward(&dir, "home", &["--pretrained"], &home), want);
    // `zoo fetch` prints the cached file.
    let (ok, stdout, stderr) = exvit(&["zoo", "fetch", "mobilevit_xxs"], &offline);
    assert!(ok, "{stderr}");
    let snap = hub.join("models--timm--mobilevit_xxs.cvnets_in1k/snapshots").join(COMMIT).join("model.safetensors");
    assert_eq!(stdout.trim(), snap.to_str().unwrap());

    // A truncated blob: a clear error naming the file, not a load that fails halfway.
    let len = std::fs::metadata(&blob).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&blob).unwrap().set_len(len / 2).unwrap();
    let (ok, _, stderr) = exvit(&["forward", "--model", "mobilevit_xxs", "--size", "64", "--pretrained"], &offline);
    assert!(!ok);
    assert!(stderr.contains("is damaged") && stderr.contains(&format!("{} bytes on disk", len / 2)), "{stderr}");
    assert!(stderr.contains("exvit zoo fetch --force mobilevit_xxs"), "{stderr}");

    // Missing and offline: the repository, the cache folder and how to fetch it.
    std::fs::remove_dir_all(&hub).unwrap();
    let (ok, _, stderr) = exvit(&["eval", "--model", "mobilevit_xxs", "--pretrained", "--data", "nowhere"], &offline);
    assert!(!ok);
    for want in [REPO, hub.to_str().unwrap(), "HF_HUB_OFFLINE is set", "exvit zoo fetch mobilevit_xxs", "--weights"] {
        assert!(stderr.contains(want), "`{want}` not in:\n{stderr}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The fresh user: `exvit eval --model M --pretrained --data …` with weights timm put in
/// the cache scores exactly as `--weights` on the file (3-class weights, for a 3-class folder).
#[test]
fn eval_with_pretrained_scores_as_the_file_does() {
    let dir = tempdir("eval");
    let hub = dir.join("hub");
    let w = dir.join("three.safetensors");
    let (ok, _, stderr) = exvit(
        &["zoo", "init", "--model", "mobilevit_xxs", "--num-classes", "3", "--seed", "8", "--out", w.to_str().unwrap()],
        &[],
    );
    assert!(ok, "{stderr}");
    cache(&hub, &w);
    let data = exvit_data::synthetic::write_tinted_dataset(&dir.join("data"), 2, 40, 40).unwrap();
    let eval = |weights: &[&str], env: &[(&str, &str)]| {
        let mut args = vec!["eval", "--model", "mobilevit_xxs", "--data", data.to_str().unwrap(), "--resolution", "64"];
        args.extend_from_slice(weights);
        let (ok, stdout, stderr) = exvit(&args, env);
        assert!(ok, "{stderr}");
        stdout
    };
    let by_file = eval(&["--weights", w.to_str().unwrap()], &[]);
    assert!(by_file.contains("(6 images") && by_file.contains("top-1"), "{by_file}");
    let offline = [("HF_HUB_CACHE", hub.to_str().unwrap()), ("HF_HUB_OFFLINE", "1")];
    assert_eq!(eval(&["--pretrained"], &offline), by_file);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn models_without_hub_weights_say_what_to_do() {
    let (ok, _, stderr) = exvit(&["forward", "--model", "exmobilevit_xxs", "--pretrained"], &[]);
    assert!(!ok);
    assert!(stderr.contains("`exmobilevit_xxs` has no pretrained weights"), "{stderr}");
    assert!(stderr.contains("--init-from $(exvit zoo fetch mobilevit_xxs)"), "{stderr}");
    // Every command that takes --model takes --pretrained (train: the initial weights).
    for args in [
        &["train", "--model", "exmobilevit_xxs", "--pretrained", "--data", "nowhere", "--out", "nowhere"][..],
        &["eval", "--model", "exmobilevit_xxs", "--pretrained", "--data", "nowhere"],
        &["probe", "extract", "--model", "exmobilevit_xxs", "--pretrained", "--data", "nowhere", "--out", "nowhere"],
        &["probe", "attention", "--model", "exmobilevit_xxs", "--pretrained", "--data", "nowhere"],
        &["export", "--model", "exmobilevit_xxs", "--pretrained", "--out", "nowhere.onnx"],
    ] {
        let (ok, _, stderr) = exvit(args, &[]);
        assert!(!ok && stderr.contains("exvit zoo fetch mobilevit_xxs"), "{args:?}:\n{stderr}");
    }
    // --pretrained and --weights exclude each other.
    let (ok, _, stderr) = exvit(&["forward", "--pretrained", "--weights", "w.safetensors"], &[]);
    assert!(!ok && stderr.contains("cannot be used with"), "{stderr}");
}

/// What the test hub saw.
#[derive(Default)]
struct Seen {
    requests: Vec<String>,
    authorization: Vec<String>,
}

/// A hub on 127.0.0.1 serving `body` as `model.safetensors` of [`REPO`], with the headers
/// huggingface_hub's clients read (`x-repo-commit`, `x-linked-etag` = the SHA-256 of
/// `etag_of`, `Content-Range`) and byte ranges. Returns its address.
fn serve(body: Vec<u8>, etag_of: Vec<u8>, seen: Arc<Mutex<Seen>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let etag = {
        // One file per call: the tests run in parallel threads of one process.
        static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = std::env::temp_dir().join(format!("exvit-etag-{}-{call}", std::process::id()));
        std::fs::write(&tmp, &etag_of).unwrap();
        let s = sha256_file(&tmp).unwrap();
        std::fs::remove_file(tmp).unwrap();
        s
    };
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            let (mut range, mut auth) = (None, None);
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("range: bytes=") {
                    range = Some(v.trim().to_string());
                }
                if lower.starts_with("authorization:") {
                    auth = Some(line["authorization:".len()..].trim().to_string());
                }
            }
            let path = request.split_whitespace().nth(1).unwrap_or_default().to_string();
            {
                let mut s = seen.lock().unwrap();
                s.requests.push(format!("{path} {}", range.as_deref().unwrap_or("-")));
                s.authorization.extend(auth);
            }
            let response = if path == format!("/{REPO}/resolve/main/model.safetensors") {
                let (start, end) = match range.as_deref().and_then(|r| r.split_once('-')) {
                    Some((a, b)) => {
                        let a: usize = a.parse().unwrap_or(0);
                        (a, if b.is_empty() { body.len() - 1 } else { b.parse().unwrap() })
                    }
                    None => (0, body.len() - 1),
                };
                let mut head = format!(
                    "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {start}-{end}/{}\r\n\
                     x-repo-commit: {COMMIT}\r\nx-linked-etag: \"{etag}\"\r\nETag: \"git-etag\"\r\nConnection: close\r\n\r\n",
                    end + 1 - start,
                    body.len()
                )
                .into_bytes();
                head.extend_from_slice(&body[start..=end]);
                head
            } else {
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec()
            };
            let _ = stream.write_all(&response);
        }
    });
    addr
}

#[test]
fn a_missing_file_is_downloaded_into_the_cache_and_checked() {
    let dir = tempdir("download");
    let hub = dir.join("hub");
    let w = seeded_weights(&dir, 6);
    let bytes = std::fs::read(&w).unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let endpoint = serve(bytes.clone(), bytes.clone(), seen.clone());
    let env =
        [("HF_HUB_CACHE", hub.to_str().unwrap()), ("HF_ENDPOINT", endpoint.as_str()), ("HF_TOKEN", "hf_test_token")];
    let (ok, stdout, stderr) = exvit(&["zoo", "fetch", "mobilevit_xxs"], &env);
    assert!(ok, "{stderr}");
    let path = PathBuf::from(stdout.trim());
    let snap = hub.join("models--timm--mobilevit_xxs.cvnets_in1k/snapshots").join(COMMIT).join("model.safetensors");
    assert_eq!(path, snap);
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "the downloaded file differs");
    let blob = std::fs::canonicalize(&path).unwrap();
    assert_eq!(blob.file_name().unwrap().to_str().unwrap(), sha256_file(&w).unwrap());
    {
        let s = seen.lock().unwrap();
        assert!(s.requests.iter().any(|r| r.ends_with("model.safetensors 0-0")), "{:?}", s.requests);
        assert!(s.authorization.iter().all(|a| a == "Bearer hf_test_token") && !s.authorization.is_empty());
    }
    // Then offline, it loads and equals --weights on the file.
    let offline = [("HF_HUB_CACHE", hub.to_str().unwrap()), ("HF_HUB_OFFLINE", "1")];
    let want = forward(&dir, "weights", &["--weights", w.to_str().unwrap()], &[]);
    assert_eq!(forward(&dir, "pretrained", &["--pretrained"], &offline), want);
    // Cached: no second request.
    let before = seen.lock().unwrap().requests.len();
    let (ok, _, stderr) = exvit(&["zoo", "fetch", "mobilevit_xxs"], &env);
    assert!(ok, "{stderr}");
    assert_eq!(seen.lock().unwrap().requests.len(), before);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_damaged_download_is_refused_and_removed() {
    let dir = tempdir("damaged");
    let hub = dir.join("hub");
    let w = seeded_weights(&dir, 7);
    let bytes = std::fs::read(&w).unwrap();
    // The hub says one SHA-256, the bytes have another (a corrupted transfer).
    let mut wrong = bytes.clone();
    wrong[bytes.len() / 2] ^= 0xff;
    let endpoint = serve(wrong, bytes, Arc::default());
    let env = [("HF_HUB_CACHE", hub.to_str().unwrap()), ("HF_ENDPOINT", endpoint.as_str())];
    let (ok, _, stderr) = exvit(&["forward", "--model", "mobilevit_xxs", "--size", "64", "--pretrained"], &env);
    assert!(!ok);
    assert!(stderr.contains("is damaged (as downloaded: its SHA-256 is"), "{stderr}");
    let blobs = hub.join("models--timm--mobilevit_xxs.cvnets_in1k/blobs");
    let left: Vec<_> = std::fs::read_dir(&blobs).unwrap().map(|e| e.unwrap().file_name()).collect();
    // Only hf-hub's lock file stays: no blob, no partial file, no snapshot link.
    assert!(left.iter().all(|n| n.to_string_lossy().ends_with(".lock")), "left in the cache: {left:?}");
    assert!(!hub
        .join("models--timm--mobilevit_xxs.cvnets_in1k/snapshots")
        .join(COMMIT)
        .join("model.safetensors")
        .exists());
    // An unknown repository: the hub's answer, the repository and the endpoint.
    let (ok, _, stderr) = exvit(&["zoo", "fetch", "mobilevit_xs"], &env);
    assert!(!ok);
    assert!(stderr.contains("timm/mobilevit_xs.cvnets_in1k") && stderr.contains(&endpoint), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}
