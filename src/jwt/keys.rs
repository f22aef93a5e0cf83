//! Verification keys built from RFC 7517 JWKs.
//!
//! The key decides the algorithm, never the token: each key lists the algorithms
//! it may verify (its JWK `alg`, or its key type's family when `alg` is absent), and
//! a token whose header names another algorithm is refused before any crypto runs.

use crate::config::jwt::{Jwk, JwkSet};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jwt_simple::prelude::*;
use std::fmt;

/// Smallest RSA modulus accepted (bits). NIST SP 800-131A disallows less.
pub const MIN_RSA_BITS: usize = 2048;

/// A signature algorithm chatguard verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    Rs256,
    Rs384,
    Rs512,
    Ps256,
    Ps384,
    Ps512,
    Es256,
    Es384,
    EdDsa,
    Hs256,
    Hs384,
    Hs512,
}

impl Alg {
    /// Parses a JOSE `alg` name. `none` and anything unknown give `None`.
    pub fn from_name(name: &str) -> Option<Alg> {
        Some(match name {
            "RS256" => Alg::Rs256,
            "RS384" => Alg::Rs384,
            "RS512" => Alg::Rs512,
            "PS256" => Alg::Ps256,
            "PS384" => Alg::Ps384,
            "PS512" => Alg::Ps512,
            "ES256" => Alg::Es256,
            "ES384" => Alg::Es384,
            "EdDSA" => Alg::EdDsa,
            "HS256" => Alg::Hs256,
            "HS384" => Alg::Hs384,
            "HS512" => Alg::Hs512,
            _ => return None,
        })
    }

    /// The JOSE name.
    pub fn name(self) -> &'static str {
        match self {
            Alg::Rs256 => "RS256",
            Alg::Rs384 => "RS384",
            Alg::Rs512 => "RS512",
            Alg::Ps256 => "PS256",
            Alg::Ps384 => "PS384",
            Alg::Ps512 => "PS512",
            Alg::Es256 => "ES256",
            Alg::Es384 => "ES384",
            Alg::EdDsa => "EdDSA",
            Alg::Hs256 => "HS256",
            Alg::Hs384 => "HS384",
            Alg::Hs512 => "HS512",
        }
    }
}

/// A key ready to verify one algorithm.
pub enum AlgKey {
    Rs256(RS256PublicKey),
    Rs384(RS384PublicKey),
    Rs512(RS512PublicKey),
    Ps256(PS256PublicKey),
    Ps384(PS384PublicKey),
    Ps512(PS512PublicKey),
    Es256(ES256PublicKey),
    Es384(ES384PublicKey),
    EdDsa(Ed25519PublicKey),
    Hs256(HS256Key),
    Hs384(HS384Key),
    Hs512(HS512Key),
}

impl AlgKey {
    /// Verifies signature and time/issuer/audience claims with jwt-simple.
    pub fn verify(
        &self,
        token: &str,
        options: VerificationOptions,
    ) -> Result<JWTClaims<NoCustomClaims>, jwt_simple::Error> {
        let o = Some(options);
        match self {
            AlgKey::Rs256(k) => k.verify_token(token, o),
            AlgKey::Rs384(k) => k.verify_token(token, o),
            AlgKey::Rs512(k) => k.verify_token(token, o),
            AlgKey::Ps256(k) => k.verify_token(token, o),
            AlgKey::Ps384(k) => k.verify_token(token, o),
            AlgKey::Ps512(k) => k.verify_token(token, o),
            AlgKey::Es256(k) => k.verify_token(token, o),
            AlgKey::Es384(k) => k.verify_token(token, o),
            AlgKey::EdDsa(k) => k.verify_token(token, o),
            AlgKey::Hs256(k) => k.verify_token(token, o),
            AlgKey::Hs384(k) => k.verify_token(token, o),
            AlgKey::Hs512(k) => k.verify_token(token, o),
        }
    }
}

/// One JWK, expanded into the algorithms it may verify.
pub struct VerifyKey {
    pub kid: Option<String>,
    pub algs: Vec<(Alg, AlgKey)>,
}

impl VerifyKey {
    /// The key for `alg`, if this key may verify it.
    pub fn for_alg(&self, alg: Alg) -> Option<&AlgKey> {
        self.algs.iter().find(|(a, _)| *a == alg).map(|(_, k)| k)
    }
}

/// A provider's usable keys.
#[derive(Default)]
pub struct KeySet {
    pub keys: Vec<VerifyKey>,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kids: Vec<_> = self.keys.iter().map(|k| k.kid.as_deref().unwrap_or("-")).collect();
        f.debug_struct("KeySet").field("kids", &kids).finish()
    }
}

/// Why a JWK could not become a verification key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// A member is not valid base64url.
    BadEncoding(&'static str),
    /// RSA modulus below [`MIN_RSA_BITS`].
    WeakRsaKey { bits: usize },
    /// The JWK's `alg` does not fit its key type, or is not supported.
    UnsupportedAlg(String),
    /// Unknown or unsupported `crv`.
    UnsupportedCurve(String),
    /// Unsupported `kty`.
    UnsupportedKeyType(String),
    /// The key material is not a valid key (bad point, bad length).
    InvalidKey,
    /// `use` is set to something other than `sig`.
    NotForSignatures,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::BadEncoding(m) => write!(f, "member `{m}` is not valid base64url"),
            KeyError::WeakRsaKey { bits } => {
                write!(f, "RSA modulus has {bits} bits; at least {MIN_RSA_BITS} are required")
            }
            KeyError::UnsupportedAlg(a) => write!(f, "alg {a:?} is not supported for this key type"),
            KeyError::UnsupportedCurve(c) => write!(f, "curve {c:?} is not supported"),
            KeyError::UnsupportedKeyType(k) => write!(f, "kty {k:?} is not supported"),
            KeyError::InvalidKey => write!(f, "the key material is not a valid public key"),
            KeyError::NotForSignatures => write!(f, "`use` is not \"sig\""),
        }
    }
}

fn b64(member: &'static str, value: &Option<String>) -> Result<Vec<u8>, KeyError> {
    let s = value.as_deref().ok_or(KeyError::BadEncoding(member))?;
    // Some IdPs pad their base64url; tolerate the padding, nothing else.
    URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).map_err(|_| KeyError::BadEncoding(member))
}

fn rsa_bits(n: &[u8]) -> usize {
    let first = n.iter().position(|b| *b != 0).unwrap_or(n.len());
    match n.get(first) {
        Some(top) => (n.len() - first - 1) * 8 + (8 - top.leading_zeros() as usize),
        None => 0,
    }
}

/// Builds the verification key(s) of one JWK.
pub fn key_from_jwk(jwk: &Jwk) -> Result<VerifyKey, KeyError> {
    if let Some(u) = &jwk.use_ {
        if u != "sig" {
            return Err(KeyError::NotForSignatures);
        }
    }
    let wanted = match &jwk.alg {
        Some(name) => Some(Alg::from_name(name).ok_or_else(|| KeyError::UnsupportedAlg(name.clone()))?),
        None => None,
    };
    let allowed = |family: &[Alg]| -> Result<Vec<Alg>, KeyError> {
        match wanted {
            Some(a) if family.contains(&a) => Ok(vec![a]),
            Some(a) => Err(KeyError::UnsupportedAlg(a.name().to_string())),
            None => Ok(family.to_vec()),
        }
    };
    let bad = |_| KeyError::InvalidKey;
    let mut algs = Vec::new();
    match jwk.kty.as_str() {
        "RSA" => {
            let family = [Alg::Rs256, Alg::Rs384, Alg::Rs512, Alg::Ps256, Alg::Ps384, Alg::Ps512];
            let algs_allowed = allowed(&family)?;
            let n = b64("n", &jwk.n)?;
            let e = b64("e", &jwk.e)?;
            let bits = rsa_bits(&n);
            if bits < MIN_RSA_BITS {
                return Err(KeyError::WeakRsaKey { bits });
            }
            for alg in algs_allowed {
                let key = match alg {
                    Alg::Rs256 => AlgKey::Rs256(RS256PublicKey::from_components(&n, &e).map_err(bad)?),
                    Alg::Rs384 => AlgKey::Rs384(RS384PublicKey::from_components(&n, &e).map_err(bad)?),
                    Alg::Rs512 => AlgKey::Rs512(RS512PublicKey::from_components(&n, &e).map_err(bad)?),
                    Alg::Ps256 => AlgKey::Ps256(PS256PublicKey::from_components(&n, &e).map_err(bad)?),
                    Alg::Ps384 => AlgKey::Ps384(PS384PublicKey::from_components(&n, &e).map_err(bad)?),
                    _ => AlgKey::Ps512(PS512PublicKey::from_components(&n, &e).map_err(bad)?),
                };
                algs.push((alg, key));
            }
        }
        "EC" => {
            let crv = jwk.crv.clone().unwrap_or_default();
            let x = b64("x", &jwk.x)?;
            let y = b64("y", &jwk.y)?;
            let (alg, size) = match crv.as_str() {
                "P-256" => (Alg::Es256, 32),
                "P-384" => (Alg::Es384, 48),
                _ => return Err(KeyError::UnsupportedCurve(crv)),
            };
            allowed(&[alg])?;
            if x.len() != size || y.len() != size {
                return Err(KeyError::InvalidKey);
            }
            let mut sec1 = Vec::with_capacity(1 + 2 * size);
            sec1.push(0x04);
            sec1.extend_from_slice(&x);
            sec1.extend_from_slice(&y);
            let key = if alg == Alg::Es256 {
                AlgKey::Es256(ES256PublicKey::from_bytes(&sec1).map_err(bad)?)
            } else {
                AlgKey::Es384(ES384PublicKey::from_bytes(&sec1).map_err(bad)?)
            };
            algs.push((alg, key));
        }
        "OKP" => {
            let crv = jwk.crv.clone().unwrap_or_default();
            if crv != "Ed25519" {
                return Err(KeyError::UnsupportedCurve(crv));
            }
            allowed(&[Alg::EdDsa])?;
            let x = b64("x", &jwk.x)?;
            if x.len() != 32 {
                return Err(KeyError::InvalidKey);
            }
            algs.push((Alg::EdDsa, AlgKey::EdDsa(Ed25519PublicKey::from_bytes(&x).map_err(bad)?)));
        }
        "oct" => {
            // A shared secret is only ever used for the HMAC algorithm its JWK
            // names (HS256 when absent): a public key can never end up here, so
            // "HS256 signed with the RSA public key" has no key to verify against.
            let k = b64("k", &jwk.k)?;
            if k.len() < 32 {
                return Err(KeyError::InvalidKey);
            }
            let alg = wanted.unwrap_or(Alg::Hs256);
            let key = match alg {
                Alg::Hs256 => AlgKey::Hs256(HS256Key::from_bytes(&k)),
                Alg::Hs384 => AlgKey::Hs384(HS384Key::from_bytes(&k)),
                Alg::Hs512 => AlgKey::Hs512(HS512Key::from_bytes(&k)),
                other => return Err(KeyError::UnsupportedAlg(other.name().to_string())),
            };
            algs.push((alg, key));
        }
        other => return Err(KeyError::UnsupportedKeyType(other.to_string())),
    }
    Ok(VerifyKey { kid: jwk.kid.clone(), algs })
}

/// Builds a key set from a JWK Set, keeping the usable keys and returning, for
/// each unusable one, its index and why (the caller decides whether that is fatal:
/// it is for inline keys, not for a fetched set that also serves other clients).
pub fn key_set_from_jwks(jwks: &JwkSet) -> (KeySet, Vec<(usize, KeyError)>) {
    let mut set = KeySet::default();
    let mut rejected = Vec::new();
    for (i, jwk) in jwks.keys.iter().enumerate() {
        match key_from_jwk(jwk) {
            Ok(k) => set.keys.push(k),
            Err(e) => rejected.push((i, e)),
        }
    }
    (set, rejected)
}
