//! `twinseal witness ...`: a C2SP tlog-witness in its own process. It keeps
//! the last checkpoint it cosigned per log (SQLite in its directory) and
//! cosigns a new one only with a valid consistency proof from it
//! (`twinseal_audit::Witness`); the coordinator asks it after each
//! checkpoint (`[transparency] witnesses`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, Result, bail};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use clap::Subcommand;
use twinseal_audit::{Cosigner, MAX_ADD_CHECKPOINT_LEN, Refusal, VerifierKey, Witness};

/// The witness's signing key in its directory (PKCS#8, mode 0600).
const KEY_FILE: &str = "witness.key";
/// Its name beside the key.
const NAME_FILE: &str = "witness.name";
/// Its state: the latest checkpoint cosigned per log, and refusals kept.
const DB_FILE: &str = "witness.db";

/// `twinseal witness ...`
#[derive(Debug, Subcommand)]
pub enum WitnessCommand {
    /// Create a witness: an Ed25519 key and an empty state in DIR. Prints
    /// the cosigner key (C2SP vkey) that logs and clients configure.
    Init {
        /// The witness's directory.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Its name, conventionally a URL without scheme (e.g. witness.example/w1).
        #[arg(long)]
        name: String,
    },
    /// Serve `POST /add-checkpoint` (C2SP tlog-witness) over HTTP until
    /// Ctrl-C or SIGTERM. Requests carry no credentials: the log's
    /// signature on the checkpoint is what a witness checks.
    Serve {
        /// The witness's directory (`witness init`).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8470")]
        listen: SocketAddr,
        /// A log to witness: its checkpoint verifier key (C2SP vkey text,
        /// or a file holding it, such as the coordinator's DATA_DIR/audit.pub).
        /// Repeat for several logs.
        #[arg(long = "log", value_name = "PUBKEY", required = true)]
        logs: Vec<String>,
    },
    /// Print the witness's cosigner key.
    Key {
        /// The witness's directory.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
}

/// Runs `twinseal witness ...`.
pub fn run(cmd: WitnessCommand) -> Result<()> {
    match cmd {
        WitnessCommand::Init { dir, name } => {
            if dir.join(KEY_FILE).exists() {
                bail!("{} already holds a witness key", dir.display());
            }
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let (cosigner, pkcs8) = Cosigner::generate(&name).context("invalid witness name")?;
            write_private(&dir.join(KEY_FILE), &pkcs8)?;
            std::fs::write(dir.join(NAME_FILE), &name).context("writing the witness name")?;
            let db = rusqlite::Connection::open(dir.join(DB_FILE)).context("creating the state")?;
            Witness::init(&db)?;
            println!("{}", cosigner.public_key());
            Ok(())
        }
        WitnessCommand::Key { dir } => {
            println!("{}", load_cosigner(&dir)?.public_key());
            Ok(())
        }
        WitnessCommand::Serve { dir, listen, logs } => {
            let logs = logs
                .into_iter()
                .map(read_log_key)
                .collect::<Result<Vec<_>>>()?;
            let cosigner = load_cosigner(&dir)?;
            let db_path = dir.join(DB_FILE);
            if !db_path.is_file() {
                bail!(
                    "{} has no state ({DB_FILE}); a witness whose state is lost must be replaced by a new one (`witness init`), never restarted empty",
                    dir.display()
                );
            }
            let db = rusqlite::Connection::open(&db_path).context("opening the state")?;
            db.pragma_update(None, "journal_mode", "WAL")?;
            db.pragma_update(None, "synchronous", "FULL")?;
            Witness::init(&db)?;
            let key = cosigner.public_key().to_string();
            let state = Arc::new(Served {
                witness: Witness::new(cosigner, logs.clone()),
                db: Mutex::new(db),
            });
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(serve(state, listen, &key, &logs))
        }
    }
}

fn read_log_key(text: String) -> Result<VerifierKey> {
    let text = if Path::new(&text).is_file() {
        std::fs::read_to_string(&text).with_context(|| format!("reading {text}"))?
    } else {
        text
    };
    text.trim().parse().context("invalid log verifier key")
}

fn load_cosigner(dir: &Path) -> Result<Cosigner> {
    let pkcs8 = zeroize::Zeroizing::new(
        std::fs::read(dir.join(KEY_FILE))
            .with_context(|| format!("reading the witness key in {}", dir.display()))?,
    );
    let name = std::fs::read_to_string(dir.join(NAME_FILE)).context("reading the witness name")?;
    Ok(Cosigner::from_pkcs8(name.trim(), &pkcs8)?)
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

struct Served {
    witness: Witness,
    /// One connection, held for each request: the check of the old size
    /// and the update are one transaction, never interleaved.
    db: Mutex<rusqlite::Connection>,
}

async fn serve(
    state: Arc<Served>,
    listen: SocketAddr,
    key: &str,
    logs: &[VerifierKey],
) -> Result<()> {
    let app = axum::Router::new()
        .route("/add-checkpoint", axum::routing::post(add_checkpoint))
        .layer(DefaultBodyLimit::max(MAX_ADD_CHECKPOINT_LEN))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(10),
        ))
        .layer(tower::limit::ConcurrencyLimitLayer::new(64))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    eprintln!("witness {key}");
    for l in logs {
        eprintln!("  witnessing {}", l.name());
    }
    eprintln!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        })
        .await
        .context("serving")
}

async fn add_checkpoint(State(s): State<Arc<Served>>, body: Bytes) -> Response {
    let outcome = tokio::task::spawn_blocking(move || {
        let db = s.db.lock().unwrap_or_else(|e| e.into_inner());
        s.witness.add_checkpoint(&*db, &body, SystemTime::now())
    })
    .await;
    match outcome {
        Ok(Ok(Ok(line))) => (StatusCode::OK, line).into_response(),
        Ok(Ok(Err(refusal))) => {
            let status = StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::BAD_REQUEST);
            match &refusal {
                Refusal::Conflict {
                    size, split_view, ..
                } => {
                    if *split_view {
                        tracing::error!(%refusal, "refused a checkpoint: the log showed two views");
                    } else {
                        tracing::info!(%refusal, "stale old size");
                    }
                    (
                        status,
                        [(header::CONTENT_TYPE, "text/x.tlog.size")],
                        format!("{size}\n"),
                    )
                        .into_response()
                }
                Refusal::Inconsistent(_) => {
                    tracing::error!(%refusal, "refused a checkpoint: not consistent with the one cosigned before");
                    (status, format!("{refusal}\n")).into_response()
                }
                _ => (status, format!("{refusal}\n")).into_response(),
            }
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "witness state");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "witness state unavailable\n",
            )
                .into_response()
        }
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal error\n").into_response(),
    }
}
