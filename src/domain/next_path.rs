//! Where to go after signing in: only ever a path on this site.

use std::fmt;

/// A same-site path (`/audit?event=signed_in`). Anything that a browser could read as
/// another origin (`//evil`, `/\evil`, `https://evil`, `javascript:`) becomes `/`.
#[derive(Clone, PartialEq, Eq)]
pub struct NextPath(String);

const MAX_NEXT_LEN: usize = 1024;

impl NextPath {
    pub fn root() -> Self {
        Self("/".to_string())
    }

    /// Never fails: an unsafe or missing value is the dashboard.
    pub fn parse(input: Option<&str>) -> Self {
        input
            .filter(|path| is_same_site_path(path))
            .map(|path| Self(path.to_string()))
            .unwrap_or_else(Self::root)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn is_same_site_path(path: &str) -> bool {
    let bytes = path.as_bytes();
    path.len() <= MAX_NEXT_LEN
        && bytes.first() == Some(&b'/')
        // `//host` and `/\host` are protocol-relative in browsers.
        && !matches!(bytes.get(1), Some(b'/') | Some(b'\\'))
        // Control characters and backslashes are stripped or rewritten by browsers in ways
        // that can turn a path into a host; no legitimate path here needs them.
        && !path.chars().any(|c| c.is_control() || c == '\\' || c.is_whitespace())
}

impl fmt::Display for NextPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for NextPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NextPath({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn same_site_paths_are_kept() {
        for ok in [
            "/",
            "/audit",
            "/audit?event=signed_in&from=2026-01-01",
            "/team#x",
        ] {
            assert_eq!(NextPath::parse(Some(ok)).as_str(), ok);
        }
    }

    #[test]
    fn anything_else_goes_to_the_dashboard() {
        for bad in [
            "//evil.example",
            "/\\evil.example",
            "https://evil.example",
            "javascript:alert(1)",
            "evil.example",
            "",
            "/\t/evil.example",
            "/\n/evil.example",
            " //evil.example",
            "\\\\evil.example",
        ] {
            assert_eq!(NextPath::parse(Some(bad)).as_str(), "/", "{bad:?}");
        }
        assert_eq!(NextPath::parse(None).as_str(), "/");
    }

    proptest! {
        #[test]
        fn never_yields_an_off_site_url(input in ".{0,200}") {
            let next = NextPath::parse(Some(&input));
            let path = next.as_str();
            prop_assert!(path.starts_with('/'));
            prop_assert!(!path.starts_with("//") && !path.starts_with("/\\"));
            // Resolved against our origin, it stays on our origin.
            let base = url::Url::parse("https://latchkey.example/").unwrap();
            let resolved = base.join(path).unwrap();
            prop_assert_eq!(resolved.origin(), base.origin());
        }
    }
}
