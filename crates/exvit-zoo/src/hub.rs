//! Pretrained weights from the Hugging Face hub, found where timm already put them.
//!
//! `timm.create_model("mobilevit_s", pretrained=True)` downloads the model's `hf_hub_id`
//! (`timm/mobilevit_s.cvnets_in1k`) into the hub cache, in huggingface_hub's layout:
//!
//! ```text
//! $HF_HUB_CACHE (else $HF_HOME/hub, else ~/.cache/huggingface/hub)
//! └── models--timm--mobilevit_s.cvnets_in1k/
//!     ├── refs/main                          the commit that `main` pointed to
//!     ├── snapshots/{commit}/model.safetensors → ../../blobs/{sha256}
//!     └── blobs/{sha256}                     the file itself
//! ```
//!
//! [`pretrained_weights`] finds a model's `model.safetensors` there, so weights timm downloaded
//! are used with no copy; when they are missing it downloads them into the same cache with
//! the `hf-hub` crate (feature `download`), honouring `HF_ENDPOINT`, `HF_TOKEN` and
//! `HF_HUB_OFFLINE` as huggingface_hub does. A file whose blob is named by its SHA-256 (every
//! LFS file, as weights are) is checked against it, cached or fresh: a truncated or damaged copy
//! is an error that names it, never a load that fails halfway.
//!
//! # Example
//! ```no_run
//! use burn_flex::{Flex, FlexDevice};
//! use exvit_zoo::hub::{pretrained_weights, HubOptions};
//! use exvit_zoo::{load_model, model_config, ModelWeights};
//!
//! let cfg = model_config("mobilevit_s", 1000).unwrap();
//! let path = pretrained_weights(&cfg, &HubOptions::from_env()).unwrap();
//! let model = load_model::<Flex>("mobilevit_s", ModelWeights::File(&path), 1000, &FlexDevice).unwrap();
//! ```

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::mobilevit::MobileVitConfig;
use crate::registry::REGISTRY;

/// The weights file of a timm hub repository.
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// Why a model's pretrained weights cannot be had.
#[derive(Debug, Error)]
pub enum HubError {
    /// The model has no `hf_hub_id` (an ExMobileViT, a control, a TOML variant).
    #[error("`{model}` has no pretrained weights on the Hugging Face hub (no hf_hub_id); {hint}")]
    NoHubId {
        /// The model.
        model: String,
        /// What to do instead (`--init-from` a backbone's weights).
        hint: String,
    },
    /// Not in the cache, and no download is allowed or possible.
    #[error(
        "{repo}: {file} is not in the Hugging Face cache {cache} and {why}; fetch it where there is a \
         network (`exvit zoo fetch {model}`, `huggingface-cli download {repo} {file}`, or timm's \
         `create_model(\"{model}\", pretrained=True)`) into that cache (or point HF_HUB_CACHE / HF_HOME at one \
         that has it), or pass the file with --weights"
    )]
    NotCached {
        /// The model.
        model: String,
        /// The hub repository.
        repo: String,
        /// The file in it.
        file: String,
        /// The cache folder looked in.
        cache: PathBuf,
        /// Why nothing was downloaded (`HF_HUB_OFFLINE is set`, ...).
        why: String,
    },
    /// The download failed.
    #[error(
        "downloading {file} of {repo} from {endpoint} into {cache} failed: {message} (offline? set HF_HUB_OFFLINE=1 \
         to use the cache only; a gated or private repository needs HF_TOKEN)"
    )]
    Download {
        /// The hub repository.
        repo: String,
        /// The file in it.
        file: String,
        /// The hub's address (`HF_ENDPOINT`).
        endpoint: String,
        /// The cache folder.
        cache: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A cached or downloaded file does not match its checksum.
    #[error(
        "{path}: this copy of {file} of {repo} is damaged ({message}); delete it and fetch it again \
         (`exvit zoo fetch --force {model}`)"
    )]
    Damaged {
        /// The model.
        model: String,
        /// The hub repository.
        repo: String,
        /// The file in it.
        file: String,
        /// The file on disk.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The cache cannot be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> HubError + '_ {
    move |source| HubError::Io { path: path.to_path_buf(), source }
}

/// The Hugging Face hub cache: a folder in huggingface_hub's layout (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubCache {
    dir: PathBuf,
}

impl HubCache {
    /// The cache at `dir` (the folder that holds `models--{org}--{name}` folders).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// huggingface_hub's: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
    /// `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`.
    pub fn from_env() -> Self {
        Self::new(hf_home_or(|| var("HF_HUB_CACHE").map(PathBuf::from), "hub"))
    }

    /// The cache folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The folder of the model repository `repo` (`org/name` → `models--org--name`).
    pub fn repo_dir(&self, repo: &str) -> PathBuf {
        self.dir.join(format!("models--{}", repo.replace('/', "--")))
    }

    /// The commit `revision` names: the content of `refs/{revision}`, or `revision` itself when
    /// it is a commit hash. `None` when the cache has no such ref.
    pub fn commit(&self, repo: &str, revision: &str) -> Result<Option<String>, HubError> {
        if revision.len() == 40 && revision.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(Some(revision.to_string()));
        }
        let path = self.repo_dir(repo).join("refs").join(revision);
        match std::fs::read_to_string(&path) {
            Ok(s) if !s.trim().is_empty() => Ok(Some(s.trim().to_string())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// `file` of `repo` at `revision` (`main`, or a commit) when the cache has it.
    pub fn find(&self, repo: &str, revision: &str, file: &str) -> Result<Option<PathBuf>, HubError> {
        let Some(commit) = self.commit(repo, revision)? else { return Ok(None) };
        let path = self.repo_dir(repo).join("snapshots").join(commit).join(file);
        // `exists` follows the link: a snapshot entry whose blob is gone counts as missing.
        Ok(path.exists().then_some(path))
    }
}

/// A variable of the environment, when set and not empty.
fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// `first()`, else `$HF_HOME/{leaf}`, else `$XDG_CACHE_HOME/huggingface/{leaf}`, else
/// `~/.cache/huggingface/{leaf}`.
fn hf_home_or(first: impl FnOnce() -> Option<PathBuf>, leaf: &str) -> PathBuf {
    first().unwrap_or_else(|| {
        let home = var("HF_HOME").map(PathBuf::from).unwrap_or_else(|| {
            let cache = var("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| var("HOME").map(PathBuf::from).unwrap_or_default().join(".cache"));
            cache.join("huggingface")
        });
        home.join(leaf)
    })
}

/// huggingface_hub's reading of a boolean variable (`1`, `ON`, `YES`, `TRUE`).
fn truthy(name: &str) -> bool {
    var(name).is_some_and(|v| matches!(v.to_ascii_uppercase().as_str(), "1" | "ON" | "YES" | "TRUE"))
}

/// Where and how [`pretrained_weights`] looks.
#[derive(Debug, Clone)]
pub struct HubOptions {
    /// The cache.
    pub cache: HubCache,
    /// The hub's address (`https://huggingface.co`).
    pub endpoint: String,
    /// Bearer token for gated or private repositories.
    pub token: Option<String>,
    /// Use the cache only.
    pub offline: bool,
    /// The revision (`main`).
    pub revision: String,
    /// Show a progress bar while downloading.
    pub progress: bool,
}

impl HubOptions {
    /// huggingface_hub's environment: the cache of [`HubCache::from_env`], `HF_ENDPOINT`,
    /// `HF_TOKEN` (else the file `$HF_TOKEN_PATH`, else `$HF_HOME/token`), `HF_HUB_OFFLINE`;
    /// revision `main`, a progress bar.
    pub fn from_env() -> Self {
        let token = var("HF_TOKEN").or_else(|| {
            let path = hf_home_or(|| var("HF_TOKEN_PATH").map(PathBuf::from), "token");
            std::fs::read_to_string(path).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
        });
        Self {
            cache: HubCache::from_env(),
            endpoint: var("HF_ENDPOINT").unwrap_or_else(|| "https://huggingface.co".to_string()),
            token,
            offline: truthy("HF_HUB_OFFLINE"),
            revision: "main".to_string(),
            progress: true,
        }
    }
}

/// The hub repository of `cfg`'s weights, or why there is none (naming, for an ExMobileViT or
/// a control, the registry model whose trunk it shares).
pub fn hub_repo(cfg: &MobileVitConfig) -> Result<&str, HubError> {
    if let Some(id) = cfg.pretrained.hf_hub_id.as_deref() {
        return Ok(id);
    }
    let backbone = REGISTRY
        .iter()
        .map(|e| e.config())
        .find(|b| b.pretrained.hf_hub_id.is_some() && b.stem_channels == cfg.stem_channels && b.stages == cfg.stages);
    let hint = match backbone {
        Some(b) => format!(
            "its trunk is {}'s: start from those with `--init-from $(exvit zoo fetch {})` (the rest keeps its \
             initialisation)",
            b.name, b.name
        ),
        None => "its trunk matches no pretrained model; train it, or pass weights with --weights".to_string(),
    };
    Err(HubError::NoHubId { model: cfg.name.clone(), hint })
}

/// The local path of `cfg`'s pretrained weights (`model.safetensors` of its `hf_hub_id`): the
/// cached copy, else (unless offline) a fresh download into the cache. Either is checked
/// against its SHA-256 ([`verify`]).
pub fn pretrained_weights(cfg: &MobileVitConfig, opts: &HubOptions) -> Result<PathBuf, HubError> {
    fetch(cfg, opts, false)
}

/// As [`pretrained_weights`]; with `force`, downloads again even when cached (the old copy stays
/// until the new one is complete and checked).
pub fn fetch(cfg: &MobileVitConfig, opts: &HubOptions, force: bool) -> Result<PathBuf, HubError> {
    let repo = hub_repo(cfg)?;
    let file = WEIGHTS_FILE;
    if !force {
        if let Some(path) = opts.cache.find(repo, &opts.revision, file)? {
            verify(&path).map_err(|message| HubError::Damaged {
                model: cfg.name.clone(),
                repo: repo.to_string(),
                file: file.to_string(),
                path: path.clone(),
                message,
            })?;
            tracing::info!(repo, path = %path.display(), "pretrained weights from the Hugging Face cache");
            return Ok(path);
        }
    }
    let not_cached = |why: &str| HubError::NotCached {
        model: cfg.name.clone(),
        repo: repo.to_string(),
        file: file.to_string(),
        cache: opts.cache.dir().to_path_buf(),
        why: why.to_string(),
    };
    if opts.offline {
        return Err(not_cached("HF_HUB_OFFLINE is set"));
    }
    #[cfg(feature = "download")]
    {
        download::download(cfg, repo, file, opts)
    }
    #[cfg(not(feature = "download"))]
    {
        Err(not_cached("this build cannot download (exvit-zoo's `download` feature is off)"))
    }
}

/// Checks a hub file against its blob's name when that is a SHA-256 (as for every LFS file):
/// `Err` says what is wrong. Other blobs (small files kept in git, named by a git hash) pass.
pub fn verify(path: &Path) -> Result<(), String> {
    let blob = std::fs::canonicalize(path).map_err(|e| format!("cannot resolve the link: {e}"))?;
    let name = blob.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    if name.len() != 64 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(());
    }
    let got = sha256_file(&blob).map_err(|e| format!("cannot read {}: {e}", blob.display()))?;
    if got.eq_ignore_ascii_case(name) {
        Ok(())
    } else {
        let len = std::fs::metadata(&blob).map(|m| m.len()).unwrap_or(0);
        Err(format!("its SHA-256 is {got}, its blob's name says {name}; {len} bytes on disk"))
    }
}

/// The SHA-256 of a file, in lowercase hex.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(feature = "download")]
mod download {
    use std::path::PathBuf;

    use hf_hub::api::sync::ApiBuilder;
    use hf_hub::{Cache, Repo, RepoType};
    use indicatif::{ProgressBar, ProgressDrawTarget};

    use super::{verify, HubError, HubOptions};
    use crate::mobilevit::MobileVitConfig;

    /// Downloads `file` of `repo` into the cache (hf-hub writes `blobs/{etag}.part`, then
    /// renames it and links the snapshot), then checks it; a damaged download is removed.
    pub(super) fn download(
        cfg: &MobileVitConfig,
        repo: &str,
        file: &str,
        opts: &HubOptions,
    ) -> Result<PathBuf, HubError> {
        let fail = |message: String| HubError::Download {
            repo: repo.to_string(),
            file: file.to_string(),
            endpoint: opts.endpoint.clone(),
            cache: opts.cache.dir().to_path_buf(),
            message,
        };
        std::fs::create_dir_all(opts.cache.dir()).map_err(super::io(opts.cache.dir()))?;
        let api = ApiBuilder::from_cache(Cache::new(opts.cache.dir().to_path_buf()))
            .with_endpoint(opts.endpoint.trim_end_matches('/').to_string())
            .with_token(opts.token.clone())
            .with_progress(false)
            .build()
            .map_err(|e| fail(e.to_string()))?;
        let api = api.repo(Repo::with_revision(repo.to_string(), RepoType::Model, opts.revision.clone()));
        tracing::info!(repo, file, endpoint = %opts.endpoint, cache = %opts.cache.dir().display(), "downloading pretrained weights");
        let bar = if opts.progress {
            ProgressBar::new(0)
        } else {
            ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden())
        };
        let path = api.download_with_progress(file, bar).map_err(|e| fail(e.to_string()))?;
        if let Err(message) = verify(&path) {
            // Lose nothing, keep nothing broken: the blob and its snapshot link go.
            if let Ok(blob) = std::fs::canonicalize(&path) {
                let _ = std::fs::remove_file(blob);
            }
            let _ = std::fs::remove_file(&path);
            return Err(HubError::Damaged {
                model: cfg.name.clone(),
                repo: repo.to_string(),
                file: file.to_string(),
                path,
                message: format!("as downloaded: {message}"),
            });
        }
        tracing::info!(repo, path = %path.display(), "downloaded");
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model_config;

    #[test]
    fn models_without_weights_name_their_backbone() {
        let cfg = model_config("exmobilevit_928", 1000).unwrap();
        let e = hub_repo(&cfg).unwrap_err().to_string();
        assert!(e.contains("`exmobilevit_928` has no pretrained weights"), "{e}");
        assert!(e.contains("exvit zoo fetch mobilevit_s"), "{e}");
        let cfg = model_config("exmobilevit_xxs", 1000).unwrap();
        assert!(hub_repo(&cfg).unwrap_err().to_string().contains("fetch mobilevit_xxs"));
        assert_eq!(hub_repo(&model_config("mobilevit_xs", 10).unwrap()).unwrap(), "timm/mobilevit_xs.cvnets_in1k");
    }

    #[test]
    fn the_cache_layout_is_huggingface_hubs() {
        let dir = std::env::temp_dir().join(format!("exvit-hub-layout-{}", std::process::id()));
        let cache = HubCache::new(&dir);
        let repo = "timm/mobilevit_xxs.cvnets_in1k";
        assert_eq!(cache.repo_dir(repo), dir.join("models--timm--mobilevit_xxs.cvnets_in1k"));
        assert_eq!(cache.find(repo, "main", WEIGHTS_FILE).unwrap(), None);
        let commit = "0123456789abcdef0123456789abcdef01234567";
        let rd = cache.repo_dir(repo);
        std::fs::create_dir_all(rd.join("refs")).unwrap();
        std::fs::write(rd.join("refs/main"), format!("{commit}\n")).unwrap();
        // A ref whose snapshot is missing: not cached.
        assert_eq!(cache.find(repo, "main", WEIGHTS_FILE).unwrap(), None);
        let snap = rd.join("snapshots").join(commit);
        std::fs::create_dir_all(&snap).unwrap();
        std::fs::write(snap.join(WEIGHTS_FILE), b"x").unwrap();
        assert_eq!(cache.find(repo, "main", WEIGHTS_FILE).unwrap(), Some(snap.join(WEIGHTS_FILE)));
        assert_eq!(cache.find(repo, commit, WEIGHTS_FILE).unwrap(), Some(snap.join(WEIGHTS_FILE)));
        assert_eq!(cache.find(repo, "v2", WEIGHTS_FILE).unwrap(), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn verify_checks_blobs_named_by_their_sha256() {
        let dir = std::env::temp_dir().join(format!("exvit-hub-verify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // SHA-256 of "abc" (FIPS 180-2, appendix B.1).
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        std::fs::write(dir.join(abc), b"abc").unwrap();
        assert_eq!(sha256_file(&dir.join(abc)).unwrap(), abc);
        assert_eq!(verify(&dir.join(abc)), Ok(()));
        std::fs::write(dir.join(abc), b"ab").unwrap();
        let e = verify(&dir.join(abc)).unwrap_err();
        assert!(e.contains("2 bytes on disk"), "{e}");
        // A git-hashed (40 hex) blob is not checked.
        std::fs::write(dir.join("a".repeat(40)), b"anything").unwrap();
        assert_eq!(verify(&dir.join("a".repeat(40))), Ok(()));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
