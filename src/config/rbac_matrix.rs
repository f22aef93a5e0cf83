//! Role inheritance flattened into permission bitsets.
//!
//! Pure (serde/std only) so `build.rs` can run it on the default policy and emit
//! static tables; the runtime (`crate::rbac`) compiles a policy from Envoy's
//! configuration with the same code, so both paths agree bit for bit.
//!
//! Permission index 0 is `*`. A role holding `*` (directly or inherited) has every
//! bit set, so a rule check is a plain subset test; bit 0 still tells who holds
//! `*` (the `claim_matches_path` exemption).

use super::rbac::RbacConfig;
use super::{indexed, ConfigError};
use std::collections::HashMap;
use std::fmt::Write as _;

/// The name of the wildcard permission.
pub const WILDCARD: &str = "*";

/// How a role holds a permission (a cell of `chatguard check`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// The role lists the permission itself.
    Direct,
    /// An ancestor lists it.
    Inherited,
    /// Only through `*` (own or inherited).
    Wildcard,
    /// Not held.
    None,
}

/// The flattened matrix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RbacMatrix {
    /// Permission names; index 0 is `*`. Declared order when `rbac.permissions` is
    /// given, else first appearance over roles, then rules.
    pub permissions: Vec<String>,
    /// Role names in document order.
    pub roles: Vec<String>,
    /// `u64` words per bitset: `ceil(permissions.len() / 64)`.
    pub words: usize,
    /// Flattened (inherited, `*`-expanded) bitsets, `words` per role.
    pub bits: Vec<u64>,
    /// Directly listed permissions, `words` per role (for display only).
    pub direct: Vec<u64>,
    /// Inherited permissions without `*` expansion, `words` per role (display only).
    pub inherited: Vec<u64>,
}

fn set(bits: &mut [u64], index: usize) {
    if let Some(w) = bits.get_mut(index / 64) {
        *w |= 1u64 << (index % 64);
    }
}

/// True when bit `index` is set.
pub fn bit(bits: &[u64], index: usize) -> bool {
    bits.get(index / 64).is_some_and(|w| w & (1u64 << (index % 64)) != 0)
}

impl RbacMatrix {
    /// Flattens `cfg`: unknown parents, inheritance cycles and (when permissions
    /// are declared) unknown permissions in roles are refused, naming the field.
    pub fn build(cfg: &RbacConfig) -> Result<RbacMatrix, ConfigError> {
        let roles: Vec<String> = cfg.roles.iter().map(|(n, _)| n.clone()).collect();
        let role_index: HashMap<&str, usize> =
            roles.iter().enumerate().map(|(i, n)| (n.as_str(), i)).collect();

        let mut permissions = vec![WILDCARD.to_string()];
        let mut perm_index: HashMap<String, usize> = HashMap::new();
        perm_index.insert(WILDCARD.to_string(), 0);
        let declared = cfg.permissions.is_some();
        if let Some(list) = &cfg.permissions {
            for p in list {
                if !perm_index.contains_key(p) {
                    perm_index.insert(p.clone(), permissions.len());
                    permissions.push(p.clone());
                }
            }
        }
        let mut add = |name: &str, field: String| -> Result<usize, ConfigError> {
            if let Some(i) = perm_index.get(name) {
                return Ok(*i);
            }
            if declared {
                return Err(ConfigError::invalid(
                    field,
                    format!("unknown permission `{name}`: not in rbac.permissions"),
                ));
            }
            if name.is_empty() || name.chars().any(char::is_whitespace) {
                return Err(ConfigError::invalid(field, "a permission name is non-empty with no spaces"));
            }
            perm_index.insert(name.to_string(), permissions.len());
            permissions.push(name.to_string());
            Ok(permissions.len() - 1)
        };

        // Direct grants and parent indices, checked field by field.
        let mut direct_idx: Vec<Vec<usize>> = Vec::with_capacity(roles.len());
        let mut parents: Vec<Vec<usize>> = Vec::with_capacity(roles.len());
        for (name, role) in cfg.roles.iter() {
            let mut d = Vec::with_capacity(role.permissions.len());
            for (j, p) in role.permissions.iter().enumerate() {
                d.push(add(p, indexed(&format!("rbac.roles.{name}.permissions"), j))?);
            }
            direct_idx.push(d);
            let mut ps = Vec::with_capacity(role.inherits.len());
            for (j, parent) in role.inherits.iter().enumerate() {
                let field = indexed(&format!("rbac.roles.{name}.inherits"), j);
                let Some(&pi) = role_index.get(parent.as_str()) else {
                    return Err(ConfigError::invalid(field, format!("unknown role `{parent}`")));
                };
                if ps.contains(&pi) {
                    return Err(ConfigError::invalid(field, format!("`{parent}` is listed twice")));
                }
                ps.push(pi);
            }
            parents.push(ps);
        }
        // Rule permissions join the universe too, so a permission only an admin
        // (`*`) holds can still be named by a rule.
        for (i, rule) in cfg.rules.iter().enumerate() {
            for (j, p) in rule.permissions.iter().enumerate() {
                add(p, indexed(&format!("rbac.rules[{i}].permissions"), j))?;
            }
            if let Some(unless) = rule.response_fields.as_ref().and_then(|r| r.unless.as_ref()) {
                add(unless, format!("rbac.rules[{i}].response_fields.unless"))?;
            }
        }

        let order = topological_order(&roles, &parents)?;
        let words = permissions.len().div_ceil(64).max(1);
        let mut direct = vec![0u64; roles.len() * words];
        let mut inherited = vec![0u64; roles.len() * words];
        for (r, d) in direct_idx.iter().enumerate() {
            if let Some(row) = direct.get_mut(r * words..(r + 1) * words) {
                for &p in d {
                    set(row, p);
                }
            }
        }
        // Closure in topological order: parents are complete before children.
        let mut closure = direct.clone();
        for &r in &order {
            for &p in parents.get(r).map(Vec::as_slice).unwrap_or(&[]) {
                for w in 0..words {
                    let pw = closure.get(p * words + w).copied().unwrap_or(0);
                    if let Some(c) = closure.get_mut(r * words + w) {
                        *c |= pw;
                    }
                    if let Some(i) = inherited.get_mut(r * words + w) {
                        *i |= pw;
                    }
                }
            }
        }
        let mut bits = closure;
        let full: Vec<u64> = (0..words)
            .map(|w| {
                let lo = w * 64;
                let n = permissions.len().saturating_sub(lo).min(64);
                if n == 64 { u64::MAX } else { (1u64 << n) - 1 }
            })
            .collect();
        for r in 0..roles.len() {
            if let Some(row) = bits.get_mut(r * words..(r + 1) * words) {
                if bit(row, 0) {
                    row.copy_from_slice(&full);
                }
            }
        }
        Ok(RbacMatrix { permissions, roles, words, bits, direct, inherited })
    }

    /// Index of a permission name.
    pub fn permission_index(&self, name: &str) -> Option<usize> {
        self.permissions.iter().position(|p| p == name)
    }

    /// Index of a role name.
    pub fn role_index(&self, name: &str) -> Option<usize> {
        self.roles.iter().position(|r| r == name)
    }

    /// The flattened bitset of role `r`.
    pub fn role_bits(&self, r: usize) -> &[u64] {
        self.bits.get(r * self.words..(r + 1) * self.words).unwrap_or(&[])
    }

    /// True when role `role` holds `permission` after flattening.
    pub fn role_grants(&self, role: &str, permission: &str) -> bool {
        match (self.role_index(role), self.permission_index(permission)) {
            (Some(r), Some(p)) => bit(self.role_bits(r), p),
            _ => false,
        }
    }

    /// How role `r` holds permission `p`.
    pub fn grant(&self, r: usize, p: usize) -> Grant {
        let row = |v: &[u64]| v.get(r * self.words..(r + 1) * self.words).map(|s| bit(s, p)).unwrap_or(false);
        if row(&self.direct) {
            Grant::Direct
        } else if row(&self.inherited) {
            Grant::Inherited
        } else if bit(self.role_bits(r), p) {
            Grant::Wildcard
        } else {
            Grant::None
        }
    }

    /// The matrix as a Markdown table: rows are permissions (`*` last), columns
    /// roles in document order, with a legend.
    pub fn render_markdown(&self) -> String {
        let mut out = String::new();
        let rows: Vec<usize> = (1..self.permissions.len()).chain(std::iter::once(0)).collect();
        let width = self.permissions.iter().map(|p| p.len() + 2).max().unwrap_or(0).max("permission".len());
        let _ = write!(out, "| {:<width$} |", "permission");
        for r in &self.roles {
            let _ = write!(out, " {r} |");
        }
        out.push('\n');
        let _ = write!(out, "|{}|", "-".repeat(width + 2));
        for r in &self.roles {
            let _ = write!(out, ":{}:|", "-".repeat(r.len()));
        }
        out.push('\n');
        for p in rows {
            let name = format!("`{}`", self.permissions.get(p).map(String::as_str).unwrap_or(""));
            let _ = write!(out, "| {name:<width$} |");
            for (r, role) in self.roles.iter().enumerate() {
                let cell = match self.grant(r, p) {
                    Grant::Direct => "D",
                    Grant::Inherited => "I",
                    Grant::Wildcard => "*",
                    Grant::None => "-",
                };
                let _ = write!(out, " {cell:^w$} |", w = role.len());
            }
            out.push('\n');
        }
        out.push_str("\nD = granted directly, I = inherited, * = via the `*` permission, - = not granted\n");
        out
    }

    /// Rust source of the static tables `crate::rbac` includes for the default
    /// policy (see `build.rs`).
    pub fn render_rust_tables(&self) -> String {
        let mut out = String::from("// @generated by build.rs from policy/default.json. Do not edit.\n");
        let names = |v: &[String]| {
            v.iter().map(|s| format!("::std::borrow::Cow::Borrowed({s:?})")).collect::<Vec<_>>().join(", ")
        };
        let _ = writeln!(out, "/// Permission names; index 0 is `*`.");
        let _ = writeln!(
            out,
            "pub static DEFAULT_PERMISSIONS: [::std::borrow::Cow<'static, str>; {}] = [{}];",
            self.permissions.len(),
            names(&self.permissions)
        );
        let _ = writeln!(out, "/// Role names in document order.");
        let _ = writeln!(
            out,
            "pub static DEFAULT_ROLES: [::std::borrow::Cow<'static, str>; {}] = [{}];",
            self.roles.len(),
            names(&self.roles)
        );
        let _ = writeln!(out, "/// Words per permission bitset.");
        let _ = writeln!(out, "pub const DEFAULT_WORDS: usize = {};", self.words);
        let _ = writeln!(out, "/// Each role's flattened permission bitset.");
        let rows: Vec<String> = (0..self.roles.len())
            .map(|r| {
                let words: Vec<String> = self.role_bits(r).iter().map(|w| format!("{w:#018x}")).collect();
                format!("[{}]", words.join(", "))
            })
            .collect();
        let _ = writeln!(
            out,
            "pub static DEFAULT_ROLE_BITS: [[u64; {}]; {}] = [{}];",
            self.words,
            self.roles.len(),
            rows.join(", ")
        );
        out
    }
}

/// Orders roles parents-first; a cycle is refused with its path.
fn topological_order(
    roles: &[String],
    parents: &[Vec<usize>],
) -> Result<Vec<usize>, ConfigError> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let mut mark = vec![Mark::New; roles.len()];
    let mut order = Vec::with_capacity(roles.len());
    // Iterative DFS: (role, next parent position); the stack is the current path.
    for start in 0..roles.len() {
        if mark.get(start) != Some(&Mark::New) {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        if let Some(m) = mark.get_mut(start) {
            *m = Mark::Active;
        }
        while let Some(&mut (r, ref mut next)) = stack.last_mut() {
            let ps = parents.get(r).map(Vec::as_slice).unwrap_or(&[]);
            if let Some(&p) = ps.get(*next) {
                let edge = *next;
                *next += 1;
                match mark.get(p).copied() {
                    Some(Mark::New) => {
                        if let Some(m) = mark.get_mut(p) {
                            *m = Mark::Active;
                        }
                        stack.push((p, 0));
                    }
                    Some(Mark::Active) => {
                        // Print the cycle starting at the role whose edge closes it,
                        // which is the field the error names.
                        let from = stack.iter().position(|(x, _)| *x == p).unwrap_or(0);
                        let name = roles.get(r).map(String::as_str).unwrap_or("");
                        let mut cycle: Vec<&str> = vec![name];
                        cycle.extend(
                            stack
                                .get(from..)
                                .unwrap_or(&[])
                                .iter()
                                .filter_map(|(x, _)| roles.get(*x).map(String::as_str)),
                        );
                        return Err(ConfigError::invalid(
                            indexed(&format!("rbac.roles.{name}.inherits"), edge),
                            format!("inheritance cycle: {}", cycle.join(" -> ")),
                        ));
                    }
                    _ => {}
                }
            } else {
                if let Some(m) = mark.get_mut(r) {
                    *m = Mark::Done;
                }
                order.push(r);
                stack.pop();
            }
        }
    }
    Ok(order)
}

/// Validates a whole policy document and renders the default policy's static
/// tables; `build.rs` fails the build with this error.
pub fn static_tables_for_policy(bytes: &[u8]) -> Result<String, ConfigError> {
    let policy = super::Policy::from_json(bytes)?;
    let cfg = policy.rbac.unwrap_or_default();
    Ok(cfg.build_matrix()?.render_rust_tables())
}
