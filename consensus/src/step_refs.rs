//! Step-output references: `${{ jobs.KEY.outputs.NAME }}` in a job's arguments and
//! environment values names output NAME of dependency KEY (a key of the job's workflow,
//! or a dependency's id). One parser for both uses:
//!
//! - at submit ([`check_spec`], from the state's `check` under
//!   `Feature::StepReferencesCheckedAtSubmit`): every reference is well formed and names a
//!   dependency of the job, so a typo is refused with the reference named instead of
//!   failing the attempt at run time;
//! - when an attempt starts ([`substitute`], by the worker): each reference is replaced by
//!   the value its dependency published; an output no dependency published (a name is
//!   only known once the dependency ran) still fails the attempt.

use std::ops::Range;

use crate::command::{valid_output_name, JobSpec};
use crate::error::Invalid;

/// What opens a reference.
pub const OPEN: &str = "${{";
/// What closes it.
pub const CLOSE: &str = "}}";

/// Dependencies a refusal names at most (the rest are counted).
pub const DEPENDENCIES_NAMED_MAX: usize = 10;
/// Characters of the user's text a message quotes at most.
pub const QUOTED_CHARS_MAX: usize = 120;

/// `text` cut to [`QUOTED_CHARS_MAX`] characters, for a message.
fn cut(text: &str) -> &str {
    text.char_indices()
        .nth(QUOTED_CHARS_MAX)
        .map_or(text, |(at, _)| &text[..at])
}

/// One reference: `jobs.KEY.outputs.NAME`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepRef<'a> {
    pub key: &'a str,
    pub name: &'a str,
    /// The expression as written (trimmed), for messages.
    pub expr: &'a str,
}

/// Whether `text` holds anything that may be a reference (nothing to do otherwise).
pub fn templated(text: &str) -> bool {
    text.contains(OPEN)
}

/// Every reference in `text` with the byte range it takes (the `${{`…`}}` whole), in
/// order; an error names the first malformed one.
pub fn scan(text: &str) -> Result<Vec<(Range<usize>, StepRef<'_>)>, String> {
    let mut refs = Vec::new();
    let mut from = 0;
    while let Some(at) = text[from..].find(OPEN) {
        let start = from + at;
        let inner = start + OPEN.len();
        let end = text[inner..]
            .find(CLOSE)
            .map(|e| inner + e)
            .ok_or_else(|| format!("{:?}: `{OPEN}` without `{CLOSE}`", cut(&text[start..])))?;
        let expr = cut(text[inner..end].trim());
        let parts: Vec<&str> = expr.split('.').collect();
        let r = match parts.as_slice() {
            ["jobs", key, "outputs", name] if !key.is_empty() && !name.is_empty() => {
                if !valid_output_name(name) {
                    return Err(format!(
                        "{expr}: {name:?} cannot name an output (letters, digits, _ and -)"
                    ));
                }
                StepRef { key, name, expr }
            }
            _ => return Err(format!("{expr}: expected jobs.KEY.outputs.NAME")),
        };
        refs.push((start..end + CLOSE.len(), r));
        from = end + CLOSE.len();
    }
    Ok(refs)
}

/// `text` with every reference replaced by what `value` gives for it; an error names the
/// first reference that is malformed or has no value.
pub fn substitute<'t, 'v>(
    text: &'t str,
    mut value: impl FnMut(&StepRef<'t>) -> Option<&'v str>,
) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for (range, r) in scan(text)? {
        out.push_str(&text[last..range.start]);
        let v = value(&r).ok_or_else(|| {
            format!(
                "{}: job {} published no output {} (it must be a dependency that published it)",
                r.expr, r.key, r.name
            )
        })?;
        out.push_str(v);
        last = range.end;
    }
    out.push_str(&text[last..]);
    Ok(out)
}

/// Checks every reference in `spec`'s arguments and environment values: well formed, and
/// naming a dependency (`is_dependency(KEY)`; `dependencies` lists them for the message).
pub fn check_spec(
    spec: &JobSpec,
    is_dependency: impl Fn(&str) -> bool,
    dependencies: impl Fn() -> Vec<String>,
) -> Result<(), Invalid> {
    let fields = spec
        .command
        .iter()
        .enumerate()
        .map(|(i, a)| (format!("command[{i}]"), a))
        .chain(spec.env.iter().map(|(k, v)| (format!("env.{k}"), v)));
    for (field, text) in fields {
        if !templated(text) {
            continue;
        }
        let refs = scan(text).map_err(|e| Invalid::new(&field, e))?;
        if let Some((_, r)) = refs.iter().find(|(_, r)| !is_dependency(r.key)) {
            let deps = dependencies();
            let known = match deps.len() {
                0 => "it has none".to_string(),
                n if n <= DEPENDENCIES_NAMED_MAX => {
                    format!("its dependencies: {}", deps.join(", "))
                }
                n => format!(
                    "its dependencies: {}, … ({n} in all)",
                    deps[..DEPENDENCIES_NAMED_MAX].join(", ")
                ),
            };
            return Err(Invalid::new(
                &field,
                format!(
                    "{}: {:?} is not a direct dependency of this job ({known}); a step output is read from a job named in its `after` or `depends_on`",
                    r.expr,
                    cut(r.key)
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_found_with_their_ranges_and_replaced() {
        let t = "a ${{ jobs.build.outputs.path }} b ${{jobs.12.outputs.n-1}}";
        let refs = scan(t).unwrap();
        assert_eq!(refs.len(), 2);
        assert_eq!(refs[0].1.key, "build");
        assert_eq!(refs[0].1.name, "path");
        assert_eq!(&t[refs[0].0.clone()], "${{ jobs.build.outputs.path }}");
        assert_eq!(refs[1].1.key, "12");
        assert_eq!(refs[1].1.name, "n-1");
        let out = substitute(t, |r| match r.key {
            "build" => Some("/out"),
            _ => Some("7"),
        })
        .unwrap();
        assert_eq!(out, "a /out b 7");
        assert_eq!(substitute("plain", |_| None).unwrap(), "plain");
        let missing = substitute(t, |_| None).unwrap_err();
        assert!(missing.contains("jobs.build.outputs.path"), "{missing}");
    }

    #[test]
    fn malformed_references_are_named() {
        for (t, says) in [
            ("${{ jobs.a.outputs.x", "without"),
            ("${{ job.a.outputs.x }}", "expected jobs.KEY.outputs.NAME"),
            ("${{ jobs.a.output.x }}", "expected"),
            ("${{ jobs..outputs.x }}", "expected"),
            ("${{ jobs.a.outputs.x y }}", "cannot name an output"),
            ("${{ }}", "expected"),
        ] {
            let e = scan(t).unwrap_err();
            assert!(e.contains(says), "{t}: {e}");
        }
    }

    #[test]
    fn a_spec_may_reference_only_its_dependencies() {
        let mut spec = JobSpec::new("j", &["echo", "${{ jobs.build.outputs.path }}"]);
        spec.env
            .insert("N".into(), "${{ jobs.12.outputs.n }}".into());
        let deps = || vec!["build".to_string(), "12".to_string()];
        let is = |k: &str| deps().iter().any(|d| d == k);
        check_spec(&spec, is, deps).unwrap();
        spec.command[1] = "${{ jobs.biuld.outputs.path }}".into();
        let e = check_spec(&spec, is, deps).unwrap_err().to_string();
        assert!(e.contains("command[1]"), "{e}");
        assert!(e.contains("\"biuld\" is not a direct dependency"), "{e}");
        assert!(e.contains("build, 12"), "{e}");
        spec.command[1] = "${{ jobs.build.outputs }}".into();
        let e = check_spec(&spec, is, deps).unwrap_err().to_string();
        assert!(e.contains("expected jobs.KEY.outputs.NAME"), "{e}");
        let many: Vec<String> = (0..50).map(|k| format!("k{k}")).collect();
        let far = JobSpec::new("j", &["echo", "${{ jobs.zzz.outputs.x }}"]);
        let e = check_spec(&far, |_| false, || many.clone())
            .unwrap_err()
            .to_string();
        assert!(e.contains("k9, … (50 in all)") && !e.contains("k10"), "{e}");
        let long = format!("${{{{ jobs.a.outputs.x {}", "y".repeat(10_000));
        let e = scan(&long).unwrap_err();
        assert!(e.len() < 300, "{} bytes", e.len());
        let lone = JobSpec::new("j", &["echo", "${{ jobs.a.outputs.x }}"]);
        let e = check_spec(&lone, |_| false, Vec::new)
            .unwrap_err()
            .to_string();
        assert!(e.contains("it has none"), "{e}");
    }
}
