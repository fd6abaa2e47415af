//! The DCAP fast path: the same checks as `dcap-qvl`'s full verification,
//! split by what they depend on so that the expensive ones run once.
//!
//! - **Once per collateral set** (keyed by a SHA-256 of every collateral
//!   field and of the trusted root): the root CA CRL's signature, the root
//!   CA's revocation, the TCB-info and QE-identity signing chains (to the
//!   root, with revocation) and signatures, and the parsing of TCB info and QE
//!   identity into the order in which levels are matched.
//! - **Once per PCK certificate chain** (keyed by the chain's bytes, inside the
//!   entry of the collateral whose CRLs it was checked against): the chain to
//!   the root with revocation, the Intel SGX extension (FMSPC, CPUSVN, PCESVN,
//!   PPID) and the leaf's public key, parsed once.
//! - **Per quote**: parsing and header checks, the QE report signature (PCK
//!   leaf key), the QE report data binding SHA-256(attestation key ‖ QE
//!   authentication data), the QE identity (MRSIGNER, ISVPRODID, masked
//!   MISCSELECT and ATTRIBUTES, ISVSVN to QE TCB level), the quote signature
//!   (attestation key, P-256), TCB-level matching (CPUSVN components and
//!   PCESVN; for TDX also TEE_TCB_SVN, the TDX module identity and TCB
//!   levels, and TD 1.5's current TCB), status convergence, and the TD
//!   attribute checks. Two P-256 verifications (aws-lc-rs) are the bulk of it.
//!
//! The certificate-path, CRL, PEM and date checks call the very functions
//! `dcap-qvl` calls (`dcap-qvl-webpki` with the same options and signature
//! algorithm, `pem`, `chrono`), and the per-quote logic mirrors
//! `dcap_qvl::verify::verify_impl` step by step (see the comments naming its
//! functions), so the verdicts are the same; the cross-check test
//! (`tests/fast_path.rs`) compares both paths on every sample, collateral
//! and time the other tests use.
//!
//! **Time.** Every time-dependent check of the full path is a validity
//! interval: certificates (inclusive), TCB info and QE identity issue date to
//! next update (inclusive), CRLs until next update (exclusive). A cache entry
//! records the intersection of the intervals of *every* certificate and CRL
//! the collateral and chain supply (a superset of those the full path reads),
//! so at any time inside it each check gives the answer it gave when the entry
//! was built. A verification time outside it is not decided here: the caller
//! runs the full `dcap-qvl` verification instead ([`Outcome::Defer`]), which
//! then rejects (or, at a time only this conservative window excludes, decides
//! exactly as before). So is anything this path cannot parse that the full
//! path might accept.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, ParsedPublicKey, UnparsedPublicKey};
use dcap_qvl::QuoteCollateralV3;
use dcap_qvl::config::{Config, CryptoProvider, EcdsaSigEncoder};
use dcap_qvl::configs::RustCryptoConfig;
use dcap_qvl::quote::{AuthData, CertificationData, Quote, Report, TDAttributes, TDReport10};
use dcap_qvl::tcb_info::TdxModuleTcbLevel;
use dcap_qvl::{QeIdentity, QeTcbLevel, TcbInfo, TcbLevel, TcbStatus, TcbStatusWithAdvisory};
use dcap_webpki as webpki;
use rustls_pki_types::{CertificateDer, SignatureVerificationAlgorithm, TrustAnchor, UnixTime};

/// Most collateral sets kept verified at once (one per platform family and
/// TEE type in practice; a handful per deployment).
const MAX_COLLATERAL_ENTRIES: usize = 32;
/// Most PCK chains kept verified per collateral set (one per platform). Only
/// chains that verified are kept, each about 4 KiB, so the caches stay under
/// about 128 MiB even when full.
const MAX_PCK_ENTRIES: usize = 1024;
/// dcap-qvl's bound on intermediates in a chain (`utils::MAX_INTERMEDIATE_CERTS`).
const MAX_INTERMEDIATE_CERTS: usize = 4;

// Quote constants (dcap-qvl `constants`).
const ALLOWED_QUOTE_VERSIONS: [u16; 3] = [3, 4, 5];
const TEE_TYPE_SGX: u32 = 0x0000_0000;
const TEE_TYPE_TDX: u32 = 0x0000_0081;
const ATTESTATION_KEY_TYPE_ECDSA256_WITH_P256_CURVE: u16 = 2;
const PCK_CERT_CHAIN: u16 = 5;
const AUTHENTICATION_DATA_LEN: usize = 32;

/// The fast path's verdict on one quote.
pub(crate) enum Outcome {
    /// Every check passed.
    Verified(Box<Facts>),
    /// A check failed; the full path rejects this quote too.
    Rejected(String),
    /// Not decided here (time outside the cached window, or a structure this
    /// path could not parse): run the full verification.
    Defer(String),
}

/// What the claims are built from (the same fields the full path yields).
pub(crate) struct Facts {
    pub report: Report,
    pub ppid: Vec<u8>,
    pub fmspc: [u8; 6],
    pub status: TcbStatus,
    pub advisory_ids: Vec<String>,
}

/// A collateral set's key: its digest and the trusted root's.
type CollateralKey = ([u8; 32], [u8; 32]);

/// The caches of one verifier, and how its verifications were decided.
pub(crate) struct Caches {
    collateral: Mutex<Bounded<CollateralKey, Arc<CollateralEntry>>>,
    verified: AtomicU64,
    rejected: AtomicU64,
    deferred: AtomicU64,
}

/// How a [`crate::DcapVerifier`]'s verifications were decided so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FastPathStats {
    /// Accepted by the fast path.
    pub verified: u64,
    /// Rejected by the fast path.
    pub rejected: u64,
    /// Handed to the reference path (`dcap-qvl`'s full verification),
    /// typically because the verification time lies outside the window in
    /// which the cached collateral checks hold.
    pub deferred: u64,
}

impl std::fmt::Debug for Caches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.collateral.lock().map(|m| m.len()).unwrap_or(0);
        f.debug_struct("Caches")
            .field("collateral_sets", &n)
            .finish()
    }
}

impl Default for Caches {
    fn default() -> Self {
        Caches {
            collateral: Mutex::new(Bounded::new(MAX_COLLATERAL_ENTRIES)),
            verified: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            deferred: AtomicU64::new(0),
        }
    }
}

/// A small map that forgets its oldest insertion when full.
struct Bounded<K, V> {
    map: HashMap<K, V>,
    order: VecDeque<K>,
    cap: usize,
}

impl<K: Clone + Hash + Eq, V: Clone> Bounded<K, V> {
    fn new(cap: usize) -> Self {
        Bounded {
            map: HashMap::new(),
            order: VecDeque::new(),
            cap,
        }
    }
    fn len(&self) -> usize {
        self.map.len()
    }
    fn get<Q>(&self, k: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.get(k).cloned()
    }
    fn insert(&mut self, k: K, v: V) {
        if self.map.contains_key(&k) {
            return;
        }
        while self.map.len() >= self.cap {
            match self.order.pop_front() {
                Some(old) => {
                    self.map.remove(&old);
                }
                None => break,
            }
        }
        self.order.push_back(k.clone());
        self.map.insert(k, v);
    }
}

/// An inclusive range of Unix seconds.
#[derive(Clone, Copy, Debug)]
struct Window {
    from: u64,
    until: u64,
}

impl Window {
    const ALL: Window = Window {
        from: 0,
        until: u64::MAX,
    };
    fn contains(&self, t: u64) -> bool {
        self.from <= t && t <= self.until
    }
    fn narrow(&mut self, from: u64, until: u64) {
        self.from = self.from.max(from);
        self.until = self.until.min(until);
    }
}

/// Why building a cache entry stopped.
enum Miss {
    Reject(String),
    Defer(String),
}

type Step<T> = std::result::Result<T, Miss>;

fn reject<T>(msg: impl Into<String>) -> Step<T> {
    Err(Miss::Reject(msg.into()))
}

/// The digest that keys a collateral set: SHA-256 over every field,
/// length-prefixed, in declaration order.
pub(crate) fn collateral_digest(c: &QuoteCollateralV3) -> [u8; 32] {
    let mut ctx = aws_lc_rs::digest::Context::new(&SHA256);
    let mut field = |b: &[u8]| {
        ctx.update(&(b.len() as u64).to_be_bytes());
        ctx.update(b);
    };
    field(c.pck_crl_issuer_chain.as_bytes());
    field(&c.root_ca_crl);
    field(&c.pck_crl);
    field(c.tcb_info_issuer_chain.as_bytes());
    field(c.tcb_info.as_bytes());
    field(&c.tcb_info_signature);
    field(c.qe_identity_issuer_chain.as_bytes());
    field(c.qe_identity.as_bytes());
    field(&c.qe_identity_signature);
    match &c.pck_certificate_chain {
        Some(chain) => {
            field(b"\x01");
            field(chain.as_bytes());
        }
        None => field(b"\x00"),
    }
    ctx.finish().as_ref().try_into().expect("32 bytes")
}

/// SHA-256 of the trusted root, the other half of a collateral key.
pub(crate) fn root_digest(root_der: &[u8]) -> [u8; 32] {
    digest(&SHA256, root_der)
        .as_ref()
        .try_into()
        .expect("32 bytes")
}

/// The signature algorithm dcap-qvl's RustCrypto backend accepts for
/// certificates, CRLs and collateral signatures (ECDSA P-256 SHA-256).
fn sig_algo() -> &'static dyn SignatureVerificationAlgorithm {
    <<RustCryptoConfig as Config>::Crypto as CryptoProvider>::sig_algo()
}

/// dcap-qvl `utils::encode_as_der_with`: raw r‖s to a DER ECDSA signature.
fn encode_ecdsa(raw: &[u8]) -> std::result::Result<Vec<u8>, String> {
    let (r, s) = raw
        .split_at_checked(32)
        .ok_or_else(|| "Invalid key length".to_string())?;
    <<RustCryptoConfig as Config>::SigEncoder as EcdsaSigEncoder>::encode_ecdsa_sig(r, s)
        .map_err(|e| format!("{e:#}"))
}

/// dcap-qvl `utils::parse_rfc3339_unix_secs`.
fn rfc3339(value: &str) -> std::result::Result<u64, String> {
    chrono::DateTime::parse_from_rfc3339(value)
        .map_err(|e| format!("Failed to parse RFC3339 datetime: {e}"))?
        .timestamp()
        .try_into()
        .map_err(|_| "RFC3339 datetime is before Unix epoch".to_string())
}

/// dcap-qvl `utils::extract_certs`.
fn extract_certs(pem_chain: &[u8]) -> std::result::Result<Vec<CertificateDer<'static>>, String> {
    Ok(pem::parse_many(pem_chain)
        .map_err(|e| format!("Failed to parse certs: {e}"))?
        .into_iter()
        .map(|p| CertificateDer::from(p.into_contents()))
        .collect())
}

/// The validity of a certificate; `Defer` if x509-parser cannot read it (the
/// full path re-parses every certificate of the paths for its claims).
fn cert_validity(der: &[u8]) -> Step<(u64, u64)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| Miss::Defer(format!("certificate not parsed for its validity: {e}")))?;
    let v = cert.validity();
    Ok((
        secs(v.not_before.timestamp())?,
        secs(v.not_after.timestamp())?,
    ))
}

fn secs(t: i64) -> Step<u64> {
    u64::try_from(t).map_err(|_| Miss::Defer("time before 1970".into()))
}

/// The window in which a CRL is current: this update to just before next
/// update (webpki treats `time >= nextUpdate` as expired). Also requires the
/// CRL number to fit 32 bits, as the full path's claims do.
fn crl_window(der: &[u8]) -> Step<(u64, u64)> {
    let (_, crl) = x509_parser::parse_x509_crl(der)
        .map_err(|e| Miss::Defer(format!("CRL not parsed for its dates: {e}")))?;
    if crl.crl_number().is_some_and(|n| n.bits() > 32) {
        return Err(Miss::Defer("CRL number too large for u32".into()));
    }
    let next = crl
        .next_update()
        .ok_or_else(|| Miss::Defer("CRL without nextUpdate".into()))?;
    let next = secs(next.timestamp())?;
    Ok((secs(crl.last_update().timestamp())?, next.saturating_sub(1)))
}

/// dcap-qvl `utils::verify_certificate_chain`, with the same options.
fn verify_chain<'p>(
    leaf: &'p webpki::EndEntityCert<'p>,
    intermediates: &'p [CertificateDer<'p>],
    now: UnixTime,
    crls: &[webpki::CertRevocationList<'_>],
    anchor: &'p [TrustAnchor<'p>],
) -> std::result::Result<usize, String> {
    if intermediates.len() > MAX_INTERMEDIATE_CERTS {
        return Err(format!(
            "Too many intermediate certificates: {}",
            intermediates.len()
        ));
    }
    let crl_refs: Vec<&webpki::CertRevocationList<'_>> = crls.iter().collect();
    let revocation = webpki::RevocationOptionsBuilder::new(&crl_refs)
        .map_err(|_| "Failed to create RevocationOptionsBuilder - CRLs required".to_string())?
        .with_depth(webpki::RevocationCheckDepth::Chain)
        .with_status_policy(webpki::UnknownStatusPolicy::Deny)
        .with_expiration_policy(webpki::ExpirationPolicy::Enforce)
        .build();
    let path = leaf
        .verify_for_usage(
            &[sig_algo()],
            anchor,
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
            Some(revocation),
            None,
        )
        .map_err(|e| format!("Failed to verify certificate chain: {e}"))?;
    // Path length, leaf first, trust anchor excluded.
    Ok(1 + path.intermediate_certificates().count())
}

/// Verify a collateral document (TCB info or QE identity) signed by the leaf
/// of `certs`, whose chain must end directly at the root.
fn verify_signed_json(
    what: &str,
    certs: &[CertificateDer<'_>],
    skip_chain: bool,
    (json, raw_sig): (&str, &[u8]),
    (now, crls, anchor): (
        UnixTime,
        &[webpki::CertRevocationList<'_>],
        &[TrustAnchor<'_>],
    ),
) -> Step<()> {
    let [leaf, chain @ ..] = certs else {
        return reject(format!("Certificate chain is too short for {what}"));
    };
    let leaf_cert = webpki::EndEntityCert::try_from(leaf)
        .map_err(|e| Miss::Reject(format!("Failed to parse {what} leaf certificate: {e}")))?;
    if !skip_chain {
        let len = verify_chain(&leaf_cert, chain, now, crls, anchor).map_err(Miss::Reject)?;
        if len != 1 {
            return reject(format!(
                "{what} signer must be issued directly by the root CA"
            ));
        }
    }
    let sig = encode_ecdsa(raw_sig).map_err(Miss::Reject)?;
    leaf_cert
        .verify_signature(sig_algo(), json.as_bytes(), &sig)
        .map_err(|_| {
            Miss::Reject(format!(
                "Signature is invalid for {what} in quote_collateral"
            ))
        })
}

/// One verified collateral set.
struct CollateralEntry {
    window: Window,
    anchor: TrustAnchor<'static>,
    crls: [webpki::CertRevocationList<'static>; 2],
    /// Levels in matching order (dcap-qvl `canonicalize_tcb_levels`).
    tcb_info: TcbInfo,
    /// The level every platform meets, used when it meets no listed one
    /// (see [`out_of_date_floor`]).
    floor: Option<TcbLevel>,
    qe_identity: QeIdentity,
    pck: Mutex<Bounded<Box<[u8]>, Arc<PckEntry>>>,
}

/// One verified PCK chain.
struct PckEntry {
    window: Window,
    leaf_key: ParsedPublicKey,
    ppid: Vec<u8>,
    cpu_svn: [u8; 16],
    pce_svn: u16,
    fmspc: [u8; 6],
    /// SHA-256 digests of (QE report, signature) pairs whose signature this
    /// leaf key verified. A platform's QE report certifies its attestation
    /// key and is the same in every quote until the QE makes a new key, so
    /// like the PCK chain it is checked once per platform; a report or
    /// signature differing in any byte has another digest and is verified.
    qe_verified: Mutex<VecDeque<[u8; 32]>>,
}

/// Most verified QE reports remembered per PCK chain.
const MAX_QE_REPORTS: usize = 8;

impl CollateralEntry {
    /// dcap-qvl `verify_impl` steps that depend on the collateral only: trust
    /// anchor, CRLs, root revocation, steps 1 and 2, canonical level order.
    fn build(c: &QuoteCollateralV3, root_der: &[u8], at: u64) -> Step<Self> {
        let tcb_info = serde_json::from_str::<TcbInfo>(&c.tcb_info)
            .map_err(|e| Miss::Reject(format!("Failed to decode TcbInfo: {e}")))?;
        let qe_identity = serde_json::from_str::<QeIdentity>(&c.qe_identity)
            .map_err(|e| Miss::Reject(format!("Failed to decode QeIdentity: {e}")))?;
        let tcb_certs = extract_certs(c.tcb_info_issuer_chain.as_bytes()).map_err(Miss::Reject)?;
        let qe_certs =
            extract_certs(c.qe_identity_issuer_chain.as_bytes()).map_err(Miss::Reject)?;

        // The window: every dated item the collateral supplies.
        let mut window = Window::ALL;
        for (doc, issue, next) in [
            ("TCB Info", &tcb_info.issue_date, &tcb_info.next_update),
            (
                "QE Identity",
                &qe_identity.issue_date,
                &qe_identity.next_update,
            ),
        ] {
            let issue =
                rfc3339(issue).map_err(|e| Miss::Reject(format!("{doc} issue date: {e}")))?;
            let next =
                rfc3339(next).map_err(|e| Miss::Reject(format!("{doc} next update: {e}")))?;
            window.narrow(issue, next);
        }
        for cert in tcb_certs.iter().chain(&qe_certs) {
            let (nb, na) = cert_validity(cert)?;
            window.narrow(nb, na);
        }
        // The root is a trust anchor (webpki does not check its dates) but
        // the full path parses it for its key id; its dates are harmless here.
        let (nb, na) = cert_validity(root_der)?;
        window.narrow(nb, na);
        for crl in [&c.root_ca_crl, &c.pck_crl] {
            let (from, until) = crl_window(crl)?;
            window.narrow(from, until);
        }
        if !window.contains(at) {
            return Err(Miss::Defer(
                "verification time outside the collateral's validity".into(),
            ));
        }

        // The checks themselves, at `at`, as dcap-qvl makes them.
        let now = UnixTime::since_unix_epoch(std::time::Duration::from_secs(at));
        let root = CertificateDer::from_slice(root_der);
        let anchor = webpki::anchor_from_trusted_cert(&root)
            .map_err(|e| Miss::Reject(format!("Failed to load root ca: {e}")))?
            .to_owned();
        let crls: [webpki::CertRevocationList<'static>; 2] = [
            webpki::OwnedCertRevocationList::from_der_verified(
                &c.root_ca_crl,
                &anchor.subject_public_key_info,
                &[sig_algo()],
            )
            .map_err(|e| Miss::Reject(format!("Failed to parse root CA CRL: {e}")))?
            .into(),
            webpki::OwnedCertRevocationList::from_der(&c.pck_crl)
                .map_err(|e| Miss::Reject(format!("Failed to parse PCK CRL: {e}")))?
                .into(),
        ];
        let crl_refs: Vec<&webpki::CertRevocationList<'_>> = crls.iter().collect();
        webpki::check_single_cert_revocation(root_der, &crl_refs, &[sig_algo()], now)
            .map_err(|e| Miss::Reject(format!("root CA revocation check: {e}")))?;
        let anchors = [anchor.clone()];
        verify_signed_json(
            "TCB Info",
            &tcb_certs,
            false,
            (&c.tcb_info, &c.tcb_info_signature),
            (now, &crls, &anchors),
        )?;
        // Intel signs both with the same certificate, whose chain was just
        // verified (dcap-qvl skips it too).
        verify_signed_json(
            "QE Identity",
            &qe_certs,
            qe_certs == tcb_certs,
            (&c.qe_identity, &c.qe_identity_signature),
            (now, &crls, &anchors),
        )?;

        let floor = out_of_date_floor(&tcb_info);
        let mut tcb_info = tcb_info;
        canonicalize_tcb_levels(&mut tcb_info);
        Ok(CollateralEntry {
            window,
            anchor,
            crls,
            tcb_info,
            floor,
            qe_identity,
            pck: Mutex::new(Bounded::new(MAX_PCK_ENTRIES)),
        })
    }
}

impl PckEntry {
    /// dcap-qvl `verify_pck_cert_chain` (step 3), against the cached CRLs.
    fn build(chain_pem: &[u8], coll: &CollateralEntry, at: u64) -> Step<Self> {
        let certs = extract_certs(chain_pem)
            .map_err(|e| Miss::Reject(format!("Failed to extract PCK certificates: {e}")))?;
        let [leaf, chain @ ..] = &certs[..] else {
            return reject("Certificate chain is too short in quote");
        };
        // The chain as dcap-qvl checks it, at `at`: a failure here is its
        // failure too.
        let now = UnixTime::since_unix_epoch(std::time::Duration::from_secs(at));
        let leaf_cert = webpki::EndEntityCert::try_from(leaf)
            .map_err(|e| Miss::Reject(format!("Failed to parse PCK certificate: {e}")))?;
        let anchors = [coll.anchor.clone()];
        verify_chain(&leaf_cert, chain, now, &coll.crls, &anchors).map_err(Miss::Reject)?;
        // The window in which that result holds.
        let mut window = coll.window;
        for cert in &certs {
            let (nb, na) = cert_validity(cert)?;
            window.narrow(nb, na);
        }
        if !window.contains(at) {
            return Err(Miss::Defer(
                "verification time outside the PCK chain's validity".into(),
            ));
        }
        let ext = dcap_qvl::intel::parse_pck_extension_with::<RustCryptoConfig>(leaf)
            .map_err(|e| Miss::Reject(format!("{e:#}")))?;
        Ok(PckEntry {
            window,
            leaf_key: p256_leaf_key(leaf)?,
            ppid: ext.ppid,
            cpu_svn: ext.cpu_svn,
            pce_svn: ext.pce_svn,
            fmspc: ext.fmspc,
            qe_verified: Mutex::new(VecDeque::new()),
        })
    }
}

/// The PCK leaf's P-256 key, parsed once. webpki accepts an ECDSA P-256
/// SHA-256 signature only from a key whose algorithm identifier is exactly
/// id-ecPublicKey with the prime256v1 curve; anything else (or a point not in
/// uncompressed form) is left to the full path.
fn p256_leaf_key(leaf_der: &[u8]) -> Step<ParsedPublicKey> {
    use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY};
    let defer = |why: &str| Miss::Defer(format!("PCK leaf key: {why}"));
    let (_, cert) =
        x509_parser::parse_x509_certificate(leaf_der).map_err(|_| defer("not parsed"))?;
    let spki = cert.public_key();
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok());
    if spki.algorithm.algorithm != OID_KEY_TYPE_EC_PUBLIC_KEY || curve != Some(OID_EC_P256) {
        return Err(defer("not an EC P-256 key"));
    }
    let point = &spki.subject_public_key.data;
    if point.len() != 65 || point[0] != 0x04 {
        return Err(defer("not an uncompressed point"));
    }
    ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point.as_ref())
        .map_err(|_| defer("rejected by aws-lc-rs"))
}

/// The level a platform below every listed level is given: all SVNs zero,
/// rated `OutOfDate` (or `Revoked` if the oldest listed level is), dated and
/// advised like the oldest listed level (the last one in Intel's JSON).
/// Matching tries it after every listed level, so only a platform older than
/// all of them gets it. Before the fast path existed the verifier got the
/// same result by re-running dcap-qvl with this level appended.
pub(crate) fn out_of_date_floor(info: &TcbInfo) -> Option<TcbLevel> {
    let mut floor = info.tcb_levels.last()?.clone();
    for c in floor
        .tcb
        .sgx_components
        .iter_mut()
        .chain(floor.tcb.tdx_components.iter_mut())
    {
        c.svn = 0;
    }
    floor.tcb.pce_svn = 0;
    if floor.tcb_status != TcbStatus::Revoked {
        floor.tcb_status = TcbStatus::OutOfDate;
    }
    Some(floor)
}

/// dcap-qvl `TcbInfo::canonicalize_tcb_levels` (Intel QVL's order: SGX
/// components, then PCESVN, then for TDX the TDX components, highest first;
/// a stable sort).
fn canonicalize_tcb_levels(info: &mut TcbInfo) {
    let is_tdx = info.version >= 3 && info.id == "TDX";
    info.tcb_levels.sort_by(|a, b| {
        b.tcb
            .sgx_components
            .cmp(&a.tcb.sgx_components)
            .then_with(|| b.tcb.pce_svn.cmp(&a.tcb.pce_svn))
            .then_with(|| {
                if is_tdx {
                    b.tcb.tdx_components.cmp(&a.tcb.tdx_components)
                } else {
                    std::cmp::Ordering::Equal
                }
            })
    });
}

impl Caches {
    /// Verify `raw` with `collateral` (digest `coll_digest`) against the root
    /// `root_der` (digest `root_digest`) at Unix time `at`.
    pub(crate) fn verify(
        &self,
        raw: &[u8],
        collateral: &QuoteCollateralV3,
        coll_digest: &[u8; 32],
        root_der: &[u8],
        root_digest: &[u8; 32],
        at: u64,
    ) -> Outcome {
        let (counter, outcome) =
            match self.verify_inner(raw, collateral, coll_digest, root_der, root_digest, at) {
                Ok(facts) => (&self.verified, Outcome::Verified(Box::new(facts))),
                Err(Miss::Reject(why)) => (&self.rejected, Outcome::Rejected(why)),
                Err(Miss::Defer(why)) => (&self.deferred, Outcome::Defer(why)),
            };
        counter.fetch_add(1, Ordering::Relaxed);
        outcome
    }

    pub(crate) fn stats(&self) -> FastPathStats {
        FastPathStats {
            verified: self.verified.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            deferred: self.deferred.load(Ordering::Relaxed),
        }
    }

    fn collateral_entry(
        &self,
        collateral: &QuoteCollateralV3,
        coll_digest: &[u8; 32],
        root_der: &[u8],
        root_digest: &[u8; 32],
        at: u64,
    ) -> Step<Arc<CollateralEntry>> {
        let key = (*coll_digest, *root_digest);
        let cached = self.collateral.lock().expect("cache lock").get(&key);
        let entry = match cached {
            Some(e) => e,
            None => {
                let e = Arc::new(CollateralEntry::build(collateral, root_der, at)?);
                self.collateral
                    .lock()
                    .expect("cache lock")
                    .insert(key, e.clone());
                e
            }
        };
        if !entry.window.contains(at) {
            return Err(Miss::Defer(
                "verification time outside the collateral's validity".into(),
            ));
        }
        Ok(entry)
    }

    fn verify_inner(
        &self,
        raw: &[u8],
        collateral: &QuoteCollateralV3,
        coll_digest: &[u8; 32],
        root_der: &[u8],
        root_digest: &[u8; 32],
        at: u64,
    ) -> Step<Facts> {
        // Parse and check the header (verify_impl, before step 1).
        let quote = Quote::parse(raw)
            .map_err(|e| Miss::Reject(format!("Failed to decode quote: {e:#}")))?;
        let h = &quote.header;
        if !ALLOWED_QUOTE_VERSIONS.contains(&h.version) {
            return reject("Unsupported DCAP quote version");
        }
        if h.qe_vendor_id != dcap_qvl::INTEL_QE_VENDOR_ID {
            return reject("Unknown QE vendor ID");
        }
        let is_tdx = match h.tee_type {
            TEE_TYPE_SGX => false,
            TEE_TYPE_TDX => true,
            other => return reject(format!("Unsupported TEE type: {other}")),
        };
        if !is_tdx && h.version != 3 {
            return reject("SGX TEE quote must have version 3");
        }
        if is_tdx && ![4, 5].contains(&h.version) {
            return reject("TDX TEE quote must have version 4 or 5");
        }
        if h.attestation_key_type != ATTESTATION_KEY_TYPE_ECDSA256_WITH_P256_CURVE {
            return reject("Unsupported DCAP attestation key type");
        }
        let auth = AuthView::of(&quote.auth_data);

        // Steps 1 and 2 (cached).
        let coll = self.collateral_entry(collateral, coll_digest, root_der, root_digest, at)?;
        let qe_identity = &coll.qe_identity;
        let (expected_qe_id, allowed_qe_versions): (&str, &[u8]) = if is_tdx {
            ("TD_QE", &[2, 3])
        } else {
            ("QE", &[2])
        };
        if qe_identity.id != expected_qe_id || !allowed_qe_versions.contains(&qe_identity.version) {
            return reject(format!(
                "Unsupported QE Identity id/version for the quote TEE type: {} version {}",
                qe_identity.id, qe_identity.version
            ));
        }

        // Step 3 (cached): the PCK chain, from the collateral if it carries
        // one, else from the quote's certification data.
        let chain: &[u8] = match &collateral.pck_certificate_chain {
            Some(pem) => pem.as_bytes(),
            None => {
                if auth.cert.cert_type != PCK_CERT_CHAIN {
                    return reject(format!(
                        "Unsupported DCAP PCK cert format: {}",
                        auth.cert.cert_type
                    ));
                }
                &auth.cert.body.data
            }
        };
        let cached = coll.pck.lock().expect("cache lock").get(chain);
        let pck = match cached {
            Some(p) => p,
            None => {
                let p = Arc::new(PckEntry::build(chain, &coll, at)?);
                coll.pck
                    .lock()
                    .expect("cache lock")
                    .insert(chain.into(), p.clone());
                p
            }
        };
        if !pck.window.contains(at) {
            return Err(Miss::Defer(
                "verification time outside the PCK chain's validity".into(),
            ));
        }

        // Step 4: the QE report is signed by the PCK leaf key (verified once
        // per distinct report and signature, see `PckEntry::qe_verified`).
        let mut d = aws_lc_rs::digest::Context::new(&SHA256);
        d.update(&(auth.qe_report.len() as u64).to_be_bytes());
        d.update(auth.qe_report);
        d.update(auth.qe_report_signature);
        let qe_digest: [u8; 32] = d.finish().as_ref().try_into().expect("SHA-256 is 32 bytes");
        let seen = pck
            .qe_verified
            .lock()
            .expect("cache lock")
            .contains(&qe_digest);
        if !seen {
            pck.leaf_key
                .verify_sig(auth.qe_report, auth.qe_report_signature)
                .map_err(|_| Miss::Reject("Signature is invalid for qe_report in quote".into()))?;
            let mut verified = pck.qe_verified.lock().expect("cache lock");
            if verified.len() >= MAX_QE_REPORTS {
                verified.pop_front();
            }
            verified.push_back(qe_digest);
        }
        let qe_report = QeReport::parse(auth.qe_report);

        // Step 5: the QE report data binds the attestation key.
        if auth.qe_auth_data.len() != AUTHENTICATION_DATA_LEN {
            return reject("Invalid QE auth data length");
        }
        let mut ctx = aws_lc_rs::digest::Context::new(&SHA256);
        ctx.update(auth.attestation_key);
        ctx.update(auth.qe_auth_data);
        if ctx.finish().as_ref() != &qe_report.report_data[..32] {
            return reject("QE report hash mismatch");
        }

        // Step 6: the QE is the one the QE identity names.
        let qe_tcb_level = verify_qe_identity_policy(&qe_report, qe_identity)?;

        // Step 7: the quote (header and body) is signed by the attestation key.
        let mut key = [0x04u8; 65];
        key[1..].copy_from_slice(auth.attestation_key);
        let signed = raw
            .get(..quote.signed_length())
            .ok_or_else(|| Miss::Reject("Failed to get signed quote scope".into()))?;
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &key)
            .verify(signed, auth.signature)
            .map_err(|_| Miss::Reject("ISV enclave report signature is invalid".into()))?;

        // Step 8: the platform's TCB level.
        let (platform_level, current_level) = match_platform_tcb(&coll, &quote, is_tdx, &pck)?;

        // Steps 9 and 10: converge platform (and current) with the QE.
        let platform_status = TcbStatusWithAdvisory::new(
            platform_level.tcb_status,
            platform_level.advisory_ids.clone(),
        );
        let qe_status =
            TcbStatusWithAdvisory::new(qe_tcb_level.tcb_status, qe_tcb_level.advisory_ids.clone());
        let mut final_status = platform_status.merge(&qe_status);
        let current_status = current_level
            .as_ref()
            .map(|l| converge(l.tcb_status, qe_tcb_level.tcb_status));
        if final_status.status == TcbStatus::Revoked || current_status == Some(TcbStatus::Revoked) {
            return reject("TCB status is invalid: Revoked");
        }
        if let Some(current) = current_status {
            final_status.status = check_for_relaunch(final_status.status, current);
        }

        // Report attributes (the verifier allows debug; the policy decides).
        validate_attrs(&quote.report)?;
        // The full path's claims date the platform level.
        rfc3339(&platform_level.tcb_date)
            .map_err(|e| Miss::Reject(format!("Failed to parse platform TCB date: {e}")))?;

        Ok(Facts {
            report: quote.report,
            ppid: pck.ppid.clone(),
            fmspc: pck.fmspc,
            status: final_status.status,
            advisory_ids: final_status.advisory_ids,
        })
    }
}

/// The authentication data fields, borrowed (dcap-qvl `AuthData::into_v3`,
/// without the copy).
struct AuthView<'a> {
    signature: &'a [u8],
    attestation_key: &'a [u8],
    qe_report: &'a [u8],
    qe_report_signature: &'a [u8],
    qe_auth_data: &'a [u8],
    cert: &'a CertificationData,
}

impl<'a> AuthView<'a> {
    fn of(a: &'a AuthData) -> Self {
        match a {
            AuthData::V3(d) => AuthView {
                signature: &d.ecdsa_signature,
                attestation_key: &d.ecdsa_attestation_key,
                qe_report: &d.qe_report,
                qe_report_signature: &d.qe_report_signature,
                qe_auth_data: &d.qe_auth_data.data,
                cert: &d.certification_data,
            },
            AuthData::V4(d) => AuthView {
                signature: &d.ecdsa_signature,
                attestation_key: &d.ecdsa_attestation_key,
                qe_report: &d.qe_report_data.qe_report,
                qe_report_signature: &d.qe_report_data.qe_report_signature,
                qe_auth_data: &d.qe_report_data.qe_auth_data.data,
                cert: &d.qe_report_data.certification_data,
            },
        }
    }
}

/// The QE report fields the checks read (SGX REPORT body, 384 bytes,
/// little-endian integers; dcap-qvl `EnclaveReport`).
struct QeReport {
    misc_select: u32,
    attributes: [u8; 16],
    mr_signer: [u8; 32],
    isv_prod_id: u16,
    isv_svn: u16,
    report_data: [u8; 64],
}

impl QeReport {
    fn parse(b: &[u8]) -> Self {
        // The quote parser guarantees 384 bytes.
        QeReport {
            misc_select: u32::from_le_bytes(b[16..20].try_into().expect("4 bytes")),
            attributes: b[48..64].try_into().expect("16 bytes"),
            mr_signer: b[128..160].try_into().expect("32 bytes"),
            isv_prod_id: u16::from_le_bytes([b[256], b[257]]),
            isv_svn: u16::from_le_bytes([b[258], b[259]]),
            report_data: b[320..384].try_into().expect("64 bytes"),
        }
    }
}

// TCB statuses Intel QVL accepts in each collateral structure (dcap-qvl).
const TCB_INFO_STATUSES: &[TcbStatus] = &[
    TcbStatus::UpToDate,
    TcbStatus::OutOfDate,
    TcbStatus::ConfigurationNeeded,
    TcbStatus::Revoked,
    TcbStatus::OutOfDateConfigurationNeeded,
    TcbStatus::SWHardeningNeeded,
    TcbStatus::ConfigurationAndSWHardeningNeeded,
];
const TDX_MODULE_STATUSES: &[TcbStatus] = &[
    TcbStatus::UpToDate,
    TcbStatus::OutOfDate,
    TcbStatus::Revoked,
];
const QE_IDENTITY_STATUSES: &[TcbStatus] = &[
    TcbStatus::UpToDate,
    TcbStatus::OutOfDate,
    TcbStatus::ConfigurationNeeded,
    TcbStatus::Revoked,
    TcbStatus::OutOfDateConfigurationNeeded,
];

fn ensure_valid_status(status: TcbStatus, valid: &[TcbStatus], structure: &str) -> Step<()> {
    if valid.contains(&status) {
        Ok(())
    } else {
        reject(format!("Unrecognized TCB status {status} in {structure}"))
    }
}

/// dcap-qvl `verify_qe_identity_policy` and `match_qe_tcb_level`.
fn verify_qe_identity_policy(qe: &QeReport, id: &QeIdentity) -> Step<QeTcbLevel> {
    if qe.mr_signer != id.mrsigner {
        return reject("QE MRSIGNER mismatch");
    }
    // The QE itself must not be a debug enclave.
    if qe.attributes[0] & 0x02 != 0 {
        return reject("QE report validation failed: Debug mode is enabled");
    }
    if qe.isv_prod_id != id.isvprodid {
        return reject("QE ISVPRODID mismatch");
    }
    let mask = u32::from_le_bytes(id.miscselect_mask);
    if qe.misc_select & mask != u32::from_le_bytes(id.miscselect) & mask {
        return reject("QE MISCSELECT mismatch");
    }
    for ((expected, mask), actual) in id
        .attributes
        .iter()
        .zip(id.attributes_mask.iter())
        .zip(qe.attributes.iter())
    {
        if expected & mask != actual & mask {
            return reject("QE ATTRIBUTES mismatch");
        }
    }
    for level in &id.tcb_levels {
        if qe.isv_svn >= level.tcb.isvsvn {
            ensure_valid_status(level.tcb_status, QE_IDENTITY_STATUSES, "QE Identity")?;
            return Ok(level.clone());
        }
    }
    match id.tcb_levels.last() {
        Some(l) => reject(format!(
            "QE ISVSVN {} is below minimum required {} from QE Identity",
            qe.isv_svn, l.tcb.isvsvn
        )),
        None => reject("No TCB levels found in QE Identity"),
    }
}

/// Whether the platform meets `level` (dcap-qvl `TcbLevel::shortfalls` is
/// empty), with its component-count errors.
fn meets(level: &TcbLevel, cpu_svn: &[u8; 16], pce_svn: u16, tee: Option<&[u8; 16]>) -> Step<bool> {
    let tcb = &level.tcb;
    if tcb.sgx_components.len() != cpu_svn.len() {
        return reject("SGX component count mismatch");
    }
    let mut ok = cpu_svn
        .iter()
        .zip(&tcb.sgx_components)
        .all(|(&have, needs)| have >= needs.svn)
        && pce_svn >= tcb.pce_svn;
    if let Some(tee) = tee {
        if tcb.tdx_components.len() != tee.len() {
            return reject("TDX component count mismatch");
        }
        // A non-zero module version leaves components 0 and 1 to the TDX
        // module identity.
        let skip = if tee[1] > 0 { 2 } else { 0 };
        ok &= tee
            .iter()
            .zip(&tcb.tdx_components)
            .skip(skip)
            .all(|(&have, needs)| have >= needs.svn);
    }
    Ok(ok)
}

/// dcap-qvl `find_tcb_level`, with the out-of-date floor tried last.
fn find_tcb_level<'a>(
    coll: &'a CollateralEntry,
    cpu_svn: &[u8; 16],
    pce_svn: u16,
    tee: Option<&[u8; 16]>,
) -> Step<&'a TcbLevel> {
    for level in coll.tcb_info.tcb_levels.iter().chain(coll.floor.as_ref()) {
        if meets(level, cpu_svn, pce_svn, tee)? {
            ensure_valid_status(level.tcb_status, TCB_INFO_STATUSES, "TCB Info")?;
            return Ok(level);
        }
    }
    reject("No matching TCB level found")
}

/// dcap-qvl `match_platform_tcb`.
fn match_platform_tcb(
    coll: &CollateralEntry,
    quote: &Quote,
    is_tdx: bool,
    pck: &PckEntry,
) -> Step<(TcbLevel, Option<TcbLevel>)> {
    let info = &coll.tcb_info;
    let tcb_fmspc =
        hex::decode(&info.fmspc).map_err(|_| Miss::Reject("Failed to decode TCB FMSPC".into()))?;
    if pck.fmspc[..] != tcb_fmspc[..] {
        return reject("Fmspc mismatch");
    }
    if is_tdx && (info.version < 3 || info.id != "TDX") {
        return reject("TDX quote with non-TDX TCB info in the collateral");
    }
    if !is_tdx && (info.version < 2 || info.id != "SGX") {
        return reject("SGX quote with non-SGX TCB info in the collateral");
    }
    if !is_tdx {
        let level = find_tcb_level(coll, &pck.cpu_svn, pck.pce_svn, None)?.clone();
        return Ok((level, None));
    }
    let td = quote
        .report
        .as_td10()
        .ok_or_else(|| Miss::Reject("Failed to get TD10 report".into()))?;
    let level = evaluate_tdx_tcb(coll, pck, &td.tee_tcb_svn)?;
    verify_tdx_module_identity(info, td)?;
    // A TD 1.5 report also carries its current TCB, which must be appraisable too.
    let current = match quote.report.as_td15() {
        Some(td15) => Some(evaluate_tdx_tcb(coll, pck, &td15.tee_tcb_svn2)?),
        None => None,
    };
    Ok((level, current))
}

/// dcap-qvl `evaluate_tdx_tcb`.
fn evaluate_tdx_tcb(coll: &CollateralEntry, pck: &PckEntry, tee: &[u8; 16]) -> Step<TcbLevel> {
    let mut level = find_tcb_level(coll, &pck.cpu_svn, pck.pce_svn, Some(tee))?.clone();
    let Some(module) = match_tdx_module_level(&coll.tcb_info, tee)? else {
        return Ok(level);
    };
    level.tcb_status = converge(level.tcb_status, module.tcb_status);
    for advisory in &module.advisory_ids {
        if !level.advisory_ids.contains(advisory) {
            level.advisory_ids.push(advisory.clone());
        }
    }
    let module_date = rfc3339(&module.tcb_date)
        .map_err(|e| Miss::Reject(format!("Invalid TDX module tcbDate: {e}")))?;
    let level_date = rfc3339(&level.tcb_date)
        .map_err(|e| Miss::Reject(format!("Invalid TCB level tcbDate: {e}")))?;
    if module_date < level_date {
        level.tcb_date = module.tcb_date.clone();
    }
    Ok(level)
}

/// dcap-qvl `match_tdx_module_level`.
fn match_tdx_module_level<'a>(
    info: &'a TcbInfo,
    tee: &[u8; 16],
) -> Step<Option<&'a TdxModuleTcbLevel>> {
    let Some(identity) = info
        .tdx_module_identity(tee)
        .map_err(|e| Miss::Reject(format!("TDX module TCB level check: {e:#}")))?
    else {
        return Ok(None);
    };
    let level = identity
        .tcb_levels
        .iter()
        .find(|l| l.shortfall(tee).is_none())
        .ok_or_else(|| {
            Miss::Reject(format!(
                "TDX module ISVSVN {} is below minimum required from TDX module TCB levels",
                tee[0]
            ))
        })?;
    ensure_valid_status(level.tcb_status, TDX_MODULE_STATUSES, "TDX module identity")?;
    Ok(Some(level))
}

/// dcap-qvl `verify_tdx_module_identity`: MRSIGNER_SEAM and masked
/// SEAMATTRIBUTES against the module identity (or the base module).
fn verify_tdx_module_identity(info: &TcbInfo, td: &TDReport10) -> Step<()> {
    fn arr<const N: usize>(hex_str: &str, field: &str) -> Step<[u8; N]> {
        let bytes = hex::decode(hex_str)
            .map_err(|e| Miss::Reject(format!("Failed to decode {field} as hex: {e}")))?;
        bytes
            .try_into()
            .map_err(|_| Miss::Reject(format!("{field} has invalid length")))
    }
    let Some(base) = &info.tdx_module else {
        return reject("TDX TCB Info is missing tdxModule field");
    };
    let mut mrsigner = arr::<48>(&base.mrsigner, "tdxModule.mrsigner")?;
    let mut attributes = arr::<8>(&base.attributes, "tdxModule.attributes")?;
    let mut mask = arr::<8>(&base.attributes_mask, "tdxModule.attributesMask")?;
    if let Some(identity) = info
        .tdx_module_identity(&td.tee_tcb_svn)
        .map_err(|e| Miss::Reject(format!("TDX module identity check: {e:#}")))?
    {
        mrsigner = arr::<48>(&identity.mrsigner, "tdxModuleIdentity.mrsigner")?;
        attributes = arr::<8>(&identity.attributes, "tdxModuleIdentity.attributes")?;
        mask = arr::<8>(
            &identity.attributes_mask,
            "tdxModuleIdentity.attributesMask",
        )?;
    }
    if td.mr_signer_seam != mrsigner {
        return reject("TDX module MRSIGNER mismatch");
    }
    for ((expected, mask), actual) in attributes.iter().zip(&mask).zip(&td.seam_attributes) {
        if expected & mask != actual & mask {
            return reject("TDX module SEAMATTRIBUTES mismatch");
        }
        if actual & !mask != 0 {
            return reject("TDX module SEAMATTRIBUTES has bits set outside mask");
        }
    }
    Ok(())
}

/// dcap-qvl `TcbStatus::converge_with_component`, through its public
/// `TcbStatusWithAdvisory::merge`.
fn converge(platform: TcbStatus, component: TcbStatus) -> TcbStatus {
    TcbStatusWithAdvisory::new(platform, Vec::new())
        .merge(&TcbStatusWithAdvisory::new(component, Vec::new()))
        .status
}

/// dcap-qvl `TcbStatus::check_for_relaunch` (Intel QVL `checkForRelaunch`).
fn check_for_relaunch(launch: TcbStatus, current: TcbStatus) -> TcbStatus {
    use TcbStatus::*;
    let configuration_needed = |s| {
        matches!(
            s,
            ConfigurationNeeded
                | OutOfDateConfigurationNeeded
                | ConfigurationAndSWHardeningNeeded
                | TDRelaunchAdvisedConfigurationNeeded
        )
    };
    match (launch, current) {
        (
            OutOfDate | OutOfDateConfigurationNeeded,
            UpToDate | SWHardeningNeeded | ConfigurationNeeded | ConfigurationAndSWHardeningNeeded,
        ) => {
            if configuration_needed(launch) || configuration_needed(current) {
                TDRelaunchAdvisedConfigurationNeeded
            } else {
                TDRelaunchAdvised
            }
        }
        _ => launch,
    }
}

/// dcap-qvl `validate_attrs` with `allow_debug = true` (debug is a claim)
/// and `allow_service_td = false`.
fn validate_attrs(report: &Report) -> Step<()> {
    fn td10(r: &TDReport10) -> Step<()> {
        let a = TDAttributes::parse(r.td_attributes)
            .map_err(|e| Miss::Reject(format!("Failed to parse TD attributes: {e}")))?;
        if a.reserved != 0 {
            return reject("Reserved bits in TD attributes are set");
        }
        if a.sec.migratable {
            return reject("TD migration is enabled");
        }
        if a.sec.servtd_ext {
            return reject("SERVTD_EXT is enabled");
        }
        if !a.sec.sept_ve_disable {
            return reject("SEPT_VE_DISABLE is not enabled");
        }
        Ok(())
    }
    match report {
        Report::SgxEnclave(_) => Ok(()),
        Report::TD10(r) => td10(r),
        Report::TD15(r) => {
            if r.mr_service_td != [0u8; 48] {
                return reject("Invalid MR service TD");
            }
            td10(&r.base)
        }
        Report::TD15Ex(r) => {
            if r.base.mr_service_td != [0u8; 48] {
                return reject("Invalid MR service TD");
            }
            td10(&r.base.base)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_map_forgets_the_oldest() {
        let mut m = Bounded::new(2);
        m.insert(1, "a");
        m.insert(2, "b");
        m.insert(1, "again");
        assert_eq!(m.get(&1), Some("a"));
        m.insert(3, "c");
        assert_eq!(m.len(), 2);
        assert_eq!(m.get(&1), None);
        assert_eq!(m.get(&3), Some("c"));
    }

    #[test]
    fn relaunch_and_convergence_follow_intel_qvl() {
        use TcbStatus::*;
        assert_eq!(converge(UpToDate, OutOfDate), OutOfDate);
        assert_eq!(
            converge(ConfigurationNeeded, OutOfDate),
            OutOfDateConfigurationNeeded
        );
        assert_eq!(converge(SWHardeningNeeded, UpToDate), SWHardeningNeeded);
        assert_eq!(check_for_relaunch(OutOfDate, UpToDate), TDRelaunchAdvised);
        assert_eq!(
            check_for_relaunch(OutOfDate, ConfigurationNeeded),
            TDRelaunchAdvisedConfigurationNeeded
        );
        assert_eq!(check_for_relaunch(OutOfDate, OutOfDate), OutOfDate);
        assert_eq!(check_for_relaunch(UpToDate, OutOfDate), UpToDate);
    }

    #[test]
    fn window_is_inclusive() {
        let mut w = Window::ALL;
        w.narrow(10, 20);
        w.narrow(5, 25);
        assert!(w.contains(10) && w.contains(20));
        assert!(!w.contains(9) && !w.contains(21));
    }
}
