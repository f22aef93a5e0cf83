//! Entity types (Presidio names) and per-entity counts of findings.

use std::fmt;

/// What a finding is. Names follow Microsoft Presidio's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Entity {
    /// `EMAIL_ADDRESS`
    EmailAddress,
    /// `PHONE_NUMBER`: North American and E.164-style international numbers.
    PhoneNumber,
    /// `US_SSN`
    UsSsn,
    /// `CREDIT_CARD`: Luhn-valid, known issuer range.
    CreditCard,
    /// `IBAN_CODE`: country length and mod-97 checked.
    IbanCode,
    /// `IP_ADDRESS`: IPv4 and IPv6.
    IpAddress,
    /// `SECRET`: API keys, tokens, private keys.
    Secret,
}

impl Entity {
    /// Every entity, in a fixed order (also the index order of [`Findings`]).
    pub const ALL: [Entity; 7] = [
        Entity::EmailAddress,
        Entity::PhoneNumber,
        Entity::UsSsn,
        Entity::CreditCard,
        Entity::IbanCode,
        Entity::IpAddress,
        Entity::Secret,
    ];

    /// The Presidio name, e.g. `EMAIL_ADDRESS`.
    pub const fn name(self) -> &'static str {
        match self {
            Entity::EmailAddress => "EMAIL_ADDRESS",
            Entity::PhoneNumber => "PHONE_NUMBER",
            Entity::UsSsn => "US_SSN",
            Entity::CreditCard => "CREDIT_CARD",
            Entity::IbanCode => "IBAN_CODE",
            Entity::IpAddress => "IP_ADDRESS",
            Entity::Secret => "SECRET",
        }
    }

    /// Parses a Presidio name.
    pub fn from_name(name: &str) -> Option<Entity> {
        Entity::ALL.into_iter().find(|e| e.name() == name)
    }

    /// Position in [`Entity::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Entity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of entities, as a bit mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EntitySet(u8);

impl EntitySet {
    /// Every entity.
    pub const ALL: EntitySet = EntitySet(0x7f);

    /// No entity.
    pub const NONE: EntitySet = EntitySet(0);

    /// Adds `e`.
    pub fn insert(&mut self, e: Entity) {
        self.0 |= 1 << e.index();
    }

    /// Whether `e` is in the set.
    #[inline]
    pub fn contains(self, e: Entity) -> bool {
        self.0 & (1 << e.index()) != 0
    }
}

/// How many values of each entity were found. Never holds the values themselves,
/// so it can be handed to the audit stage and to metrics as is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Findings {
    counts: [u32; 7],
}

impl Findings {
    /// No findings.
    pub const fn new() -> Findings {
        Findings { counts: [0; 7] }
    }

    /// Counts one finding of `e`.
    pub fn add(&mut self, e: Entity) {
        if let Some(c) = self.counts.get_mut(e.index()) {
            *c = c.saturating_add(1);
        }
    }

    /// How many `e` were found.
    pub fn count(&self, e: Entity) -> u32 {
        self.counts.get(e.index()).copied().unwrap_or(0)
    }

    /// All findings together.
    pub fn total(&self) -> u64 {
        self.counts.iter().map(|&c| u64::from(c)).sum()
    }

    /// Whether nothing was found.
    pub fn is_empty(&self) -> bool {
        self.total() == 0
    }

    /// Adds `other`'s counts to these.
    pub fn merge(&mut self, other: &Findings) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a = a.saturating_add(*b);
        }
    }

    /// `(entity, count)` for every entity with a non-zero count.
    pub fn iter(&self) -> impl Iterator<Item = (Entity, u32)> + '_ {
        Entity::ALL.into_iter().map(|e| (e, self.count(e))).filter(|&(_, c)| c > 0)
    }
}

impl fmt::Display for Findings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (e, c) in self.iter() {
            if !first {
                f.write_str(" ")?;
            }
            write!(f, "{e}={c}")?;
            first = false;
        }
        Ok(())
    }
}
