//! Witnessing (C2SP tlog-witness): after each new checkpoint, the
//! coordinator asks its configured witnesses to cosign it, with a
//! consistency proof from the size each witness last cosigned, and keeps
//! the checkpoint with its cosignatures once a quorum cosigned; that is what
//! `/log/checkpoint` serves. Off the request path: a background task
//! (`tls::serve`) runs [`crate::service::Coordinator::witness_round`] every
//! [`WITNESS_INTERVAL`], so releases never wait for a witness.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine;
use twinseal_audit::{AddCheckpoint, CosignerKey, Hash};

use crate::config::TransparencyConfig;
use crate::error::{Error, Result};

/// How often the coordinator looks for a checkpoint to have witnessed.
pub const WITNESS_INTERVAL: Duration = Duration::from_secs(1);

/// How long one witness may take to answer.
const WITNESS_TIMEOUT: Duration = Duration::from_secs(5);

/// One configured witness and the size it last cosigned, as far as this
/// replica knows (0 at start; a 409 answer tells the real one).
#[derive(Debug)]
struct Peer {
    url: String,
    key: CosignerKey,
    size: AtomicU64,
}

/// The witnesses of `[transparency]` and the quorum.
#[derive(Debug)]
pub struct Witnesses {
    peers: Vec<Peer>,
    quorum: usize,
    http: reqwest::Client,
}

/// What one witness said about one checkpoint.
#[derive(Debug)]
pub enum Answer {
    /// Its cosignature line(s).
    Cosigned(String),
    /// It refused, with the status and its text: loud for 403/404/422 and
    /// for a 409 at the same size (a split view).
    Refused(u16, String),
}

impl Witnesses {
    /// The witnesses the configuration names, or `None` without any.
    /// Keys that do not parse and a quorum of 0 or above their number are
    /// configuration errors.
    pub fn from_config(t: &TransparencyConfig) -> Result<Option<Witnesses>> {
        if t.witnesses.is_empty() {
            if t.quorum.is_some_and(|q| q > 0) {
                return Err(Error::Config(
                    "[transparency] quorum is set but no witnesses are".into(),
                ));
            }
            return Ok(None);
        }
        let peers =
            t.witnesses
                .iter()
                .map(|w| {
                    let key: CosignerKey = w.key.trim().parse().map_err(|e| {
                        Error::Config(format!("[transparency] witness {}: {e}", w.url))
                    })?;
                    if !(w.url.starts_with("http://") || w.url.starts_with("https://")) {
                        return Err(Error::Config(format!(
                            "[transparency] witness url {:?} must be http:// or https://",
                            w.url
                        )));
                    }
                    Ok(Peer {
                        url: w.url.trim_end_matches('/').to_string(),
                        key,
                        size: AtomicU64::new(0),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
        let quorum = t.quorum.unwrap_or(peers.len());
        if quorum == 0 || quorum > peers.len() {
            return Err(Error::Config(format!(
                "[transparency] quorum {quorum} must be 1 to the {} witnesses",
                peers.len()
            )));
        }
        let http = twinseal_net::client::plain_client(WITNESS_TIMEOUT)
            .map_err(|e| Error::Config(format!("witness client: {e}")))?;
        Ok(Some(Witnesses {
            peers,
            quorum,
            http,
        }))
    }

    /// The witnesses' keys.
    pub fn keys(&self) -> Vec<CosignerKey> {
        self.peers.iter().map(|p| p.key.clone()).collect()
    }

    /// The cosignatures needed.
    pub fn quorum(&self) -> usize {
        self.quorum
    }

    /// Ask every witness to cosign the checkpoint `note` of `size` entries.
    /// `proof(old)` gives the consistency proof from `old` to `size`.
    /// Returns each witness's answer, in configuration order.
    pub async fn ask(
        &self,
        note: &str,
        size: u64,
        proof: &(dyn Fn(u64) -> Result<Vec<Hash>> + Sync),
    ) -> Vec<(String, Answer)> {
        let asks = self.peers.iter().map(|p| async move {
            (
                p.key.name().to_string(),
                self.ask_one(p, note, size, proof).await,
            )
        });
        futures_util::future::join_all(asks).await
    }

    async fn ask_one(
        &self,
        peer: &Peer,
        note: &str,
        size: u64,
        proof: &(dyn Fn(u64) -> Result<Vec<Hash>> + Sync),
    ) -> Answer {
        // Twice at most: a 409 tells the size the witness is at.
        for _ in 0..2 {
            let old = peer.size.load(Ordering::Relaxed).min(size);
            let hashes = if old == 0 || old == size {
                Vec::new()
            } else {
                match proof(old) {
                    Ok(p) => p,
                    Err(e) => return Answer::Refused(0, format!("no proof from {old}: {e}")),
                }
            };
            let body = AddCheckpoint {
                old,
                proof: hashes,
                checkpoint: note.to_string(),
            }
            .to_body();
            let resp = match self
                .http
                .post(format!("{}/add-checkpoint", peer.url))
                .body(body)
                .send()
                .await
            {
                Ok(r) => r,
                Err(e) => return Answer::Refused(0, format!("unreachable: {e}")),
            };
            let status = resp.status().as_u16();
            let text = match resp.text().await {
                Ok(t) if t.len() <= 64 * 1024 => t,
                Ok(_) => return Answer::Refused(status, "answer too long".into()),
                Err(e) => return Answer::Refused(status, format!("reading the answer: {e}")),
            };
            match status {
                200 => {
                    peer.size.store(size, Ordering::Relaxed);
                    return Answer::Cosigned(text);
                }
                409 => {
                    let theirs: Option<u64> = text.trim().parse().ok();
                    match theirs {
                        Some(s) if s != old && s <= size => {
                            peer.size.store(s, Ordering::Relaxed);
                            continue;
                        }
                        Some(s) => {
                            return Answer::Refused(
                                409,
                                format!("the witness cosigned size {s}; this log is at {size}"),
                            );
                        }
                        None => return Answer::Refused(409, text),
                    }
                }
                _ => return Answer::Refused(status, text.trim().to_string()),
            }
        }
        Answer::Refused(409, "the witness kept changing its size".into())
    }
}

/// The cosignature lines of `answers` that verify on `note` for their
/// witness (others are ignored), appended to `note`, and how many.
pub fn gather(note: &str, answers: &[(String, Answer)], keys: &[CosignerKey]) -> (String, usize) {
    let mut out = note.to_string();
    for (name, a) in answers {
        if let Answer::Cosigned(lines) = a {
            for line in lines.lines() {
                let candidate = format!("{note}{line}\n");
                if keys
                    .iter()
                    .any(|k| k.name() == name && k.verify(&candidate).is_some())
                {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
    }
    let (n, _) = twinseal_audit::count_cosignatures(&out, keys);
    (out, n)
}

/// Base64 of a hash (for log lines).
pub fn b64(h: &Hash) -> String {
    base64::engine::general_purpose::STANDARD.encode(h)
}
