//! The worker client: TLS that accepts only a worker's certificate under
//! the coordinator's root ([`PeerVerifier::worker`]), the client's bearer
//! token on every request, and every receipt checked against the
//! certificate that served it and bound to the exchange (its operation,
//! the inputs sent, the answer received).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use twinseal_api as api;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::receipt::{InputKind, inputs_digest, verify_receipt};
use crate::tls::PeerVerifier;

/// A connection to one worker: TLS pinned to the coordinator's root, with
/// the client's bearer token (if any) on every request.
pub struct WorkerClient {
    http: reqwest::Client,
    url: String,
    token: Option<Zeroizing<String>>,
}

impl std::fmt::Debug for WorkerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerClient")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// The error and its sources, one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

impl WorkerClient {
    /// A client of the worker at `url` whose certificate must chain to the
    /// root in `root_pem`; simulated-TEE certificates only when
    /// `allow_simulated` (INSECURE).
    pub fn with_root(url: &str, root_pem: &str, allow_simulated: bool) -> Result<WorkerClient> {
        let cfg = PeerVerifier::worker(root_pem, allow_simulated)?.client_config()?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(cfg)
            .tls_info(true)
            .build()
            .map_err(|e| Error::Http(e.to_string()))?;
        Ok(WorkerClient {
            http,
            url: url.trim_end_matches('/').to_string(),
            token: None,
        })
    }

    /// Send `token` as the bearer token of every request.
    pub fn with_token(mut self, token: Option<Zeroizing<String>>) -> WorkerClient {
        self.token = token;
        self
    }

    /// `GET /v1/info` (no credentials needed): the worker's description,
    /// with its release-transparency proof, and the DER certificate of the
    /// worker that answered.
    pub async fn info(&self) -> Result<(api::WorkerInfo, Vec<u8>)> {
        let resp = self
            .http
            .get(format!("{}/v1/info", self.url))
            .send()
            .await
            .map_err(|e| {
                Error::Http(format!(
                    "cannot reach the worker at {} over TLS pinned to the coordinator's root: {}",
                    self.url,
                    error_chain(&e)
                ))
            })?;
        let cert = crate::client::peer_certificate(&resp, "the worker")?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| Error::Http(e.to_string()))?;
        if !status.is_success() {
            return Err(Error::Remote {
                status: status.as_u16(),
                kind: String::new(),
                detail: format!("the worker answered: {}", String::from_utf8_lossy(&bytes)),
            });
        }
        let info = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Http(format!("the worker's info: {e}")))?;
        Ok((info, cert))
    }

    /// POST `body` to `path` with the client's token; the answer and the
    /// DER certificate of the worker that served it.
    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<(T, Vec<u8>)> {
        let mut req = self.http.post(format!("{}{path}", self.url)).json(body);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t.as_str());
        }
        let resp = req.send().await.map_err(|e| {
            Error::Http(format!(
                "cannot reach the worker at {} over TLS pinned to the coordinator's root: {}",
                self.url,
                error_chain(&e)
            ))
        })?;
        let cert = crate::client::peer_certificate(&resp, "the worker")?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| Error::Http(e.to_string()))?;
        if !status.is_success() {
            let (kind, detail) = match serde_json::from_slice::<api::ErrorBody>(&bytes) {
                Ok(e) => (e.kind, e.detail),
                Err(_) => (String::new(), String::from_utf8_lossy(&bytes).into_owned()),
            };
            return Err(Error::Remote {
                status: status.as_u16(),
                kind,
                detail: format!("the worker answered: {detail}"),
            });
        }
        let answer = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Http(format!("the worker's answer: {e}")))?;
        Ok((answer, cert))
    }

    /// [`WorkerClient::post`], then the receipt checked against the
    /// certificate that served it, and bound to this exchange: its
    /// operation is the path's, its inputs digest is that of the images
    /// sent, and its signed output is the answer received.
    pub async fn post_verified<B, T>(&self, path: &str, body: &B) -> Result<T>
    where
        B: Serialize + SignedInputs,
        T: DeserializeOwned + HasReceipt,
    {
        let (r, cert): (T, _) = self.post(path, body).await?;
        check_receipt(r.receipt(), &cert)?;
        let receipt = r.receipt();
        let operation = match path {
            "/v1/compare" => "compare",
            "/v1/compare/batch" => "compare_batch",
            "/v1/embed" => "embed",
            "/v1/enroll" => "enroll",
            "/v1/verify" => "verify",
            _ => {
                return Err(Error::ReceiptRejected(
                    "no receipt is defined for this path",
                ));
            }
        };
        if receipt.operation != operation {
            return Err(Error::ReceiptRejected(
                "the receipt is for another operation than the one asked",
            ));
        }
        if receipt.inputs_sha256 != inputs_sha256(&body.images())? {
            return Err(Error::ReceiptRejected(
                "the receipt names other inputs than the ones sent",
            ));
        }
        if !r.output_matches()? {
            return Err(Error::ReceiptRejected(
                "the receipt's signed output differs from the answer received",
            ));
        }
        Ok(r)
    }
}

/// Checks a receipt against the certificate that served it.
pub fn check_receipt(receipt: &api::Receipt, cert_der: &[u8]) -> Result<()> {
    if receipt.certificate_sha256 != hex::encode(Sha256::digest(cert_der)) {
        return Err(Error::ReceiptRejected(
            "the receipt names another certificate than the one that served it",
        ));
    }
    verify_receipt(receipt, cert_der)
}

/// The receipt inputs digest of `images` as the worker computes it (the
/// decoded bytes, with their kind).
pub fn inputs_sha256(images: &[&api::ImageWire]) -> Result<String> {
    let decoded = images
        .iter()
        .map(|w| {
            let (kind, b64) = match w {
                api::ImageWire::Png(s) | api::ImageWire::Jpeg(s) => (InputKind::Encoded, s),
                api::ImageWire::Raw(s) => (InputKind::Raw, s),
            };
            B64.decode(b64)
                .map(|b| (kind, b))
                .map_err(|_| Error::ReceiptRejected("an image sent is not base64"))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(inputs_digest(
        decoded.iter().map(|(k, b)| (*k, b.as_slice())),
    ))
}

/// Requests whose receipts name their images.
pub trait SignedInputs {
    /// The images, in the order the receipt digests them.
    fn images(&self) -> Vec<&api::ImageWire>;
}

impl SignedInputs for api::CompareRequest {
    fn images(&self) -> Vec<&api::ImageWire> {
        vec![&self.a, &self.b]
    }
}

impl SignedInputs for api::CompareBatchRequest {
    fn images(&self) -> Vec<&api::ImageWire> {
        self.pairs.iter().flat_map(|p| [&p.a, &p.b]).collect()
    }
}

impl SignedInputs for api::EnrollRequest {
    fn images(&self) -> Vec<&api::ImageWire> {
        self.images.iter().collect()
    }
}

impl SignedInputs for api::VerifyRequest {
    fn images(&self) -> Vec<&api::ImageWire> {
        vec![&self.probe]
    }
}

/// Answers that carry a receipt.
pub trait HasReceipt {
    /// The answer's receipt.
    fn receipt(&self) -> &api::Receipt;
    /// Whether the receipt's signed output is the answer's result (both
    /// read as the result type, so that numbers compare as the worker
    /// computed them).
    fn output_matches(&self) -> Result<bool>;
}

macro_rules! has_receipt {
    ($($t:ty => $r:ty),*) => {$(
        impl HasReceipt for $t {
            fn receipt(&self) -> &api::Receipt {
                &self.receipt
            }
            fn output_matches(&self) -> Result<bool> {
                let signed: $r = serde_json::from_str(&self.receipt.output).map_err(|_| {
                    Error::ReceiptRejected("the receipt's output is not the operation's result")
                })?;
                let (a, b) = (serde_json::to_string(&signed), serde_json::to_string(&self.result));
                match (a, b) {
                    (Ok(a), Ok(b)) => Ok(a == b),
                    _ => Err(Error::ReceiptRejected("the receipt's output cannot be compared")),
                }
            }
        }
    )*};
}
has_receipt!(
    api::CompareResponse => api::CompareResult,
    api::CompareBatchResponse => api::CompareBatchResult,
    api::EmbedResponse => api::EmbedResult,
    api::EnrollResponse => api::EnrollResult,
    api::VerifyResponse => api::VerifyResult
);
