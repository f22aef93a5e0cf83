//! `chatguard check POLICY`: validates the policy and prints the resolved RBAC
//! permission matrix as a Markdown table.

use chatguard::config::Policy;

/// Runs the command; returns the process exit code.
pub fn run(args: &[String]) -> u8 {
    let [path] = args else {
        return crate::usage_error("`check` takes exactly one POLICY file");
    };
    match crate::load_policy(path) {
        Ok(policy) => match render(&policy) {
            Ok(text) => {
                print!("{text}");
                0
            }
            Err(e) => {
                eprintln!("chatguard: {e}");
                2
            }
        },
        Err(code) => code,
    }
}

/// The report printed for a valid policy.
pub fn render(policy: &Policy) -> Result<String, chatguard::config::ConfigError> {
    let Some(rbac) = &policy.rbac else {
        return Ok("policy is valid; it has no `rbac` section.\n".to_string());
    };
    let matrix = rbac.build_matrix()?;
    let anonymous = rbac
        .anonymous_role
        .as_ref()
        .map(|r| format!(", anonymous callers hold `{r}`"))
        .unwrap_or_default();
    Ok(format!(
        "policy is valid: {} roles, {} permissions, {} rules, default {}, mode {}{anonymous}\n\n{}",
        matrix.roles.len(),
        matrix.permissions.len().saturating_sub(1),
        rbac.rules.len(),
        match rbac.default {
            chatguard::config::rbac::DefaultDecision::Deny => "deny",
            chatguard::config::rbac::DefaultDecision::Allow => "allow",
        },
        match rbac.mode {
            chatguard::config::rbac::RbacMode::Enforce => "enforce",
            chatguard::config::rbac::RbacMode::Shadow => "shadow",
        },
        matrix.render_markdown()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEMO_MATRIX: &str = include_str!("testdata/demo_matrix.md");

    #[test]
    fn demo_policy_matrix_is_the_documented_one() {
        let policy = Policy::from_json(include_bytes!("../../../policy/default.json")).unwrap();
        assert_eq!(render(&policy).unwrap(), DEMO_MATRIX);
    }
}
