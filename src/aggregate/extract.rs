//! Answer extraction: a sample's final text -> the answer text, or `None`.
//!
//! ```text
//!  "... so 7 + 5 = 12. The answer is \boxed{12}."
//!     boxed        -> "12"        last \boxed{..}/\fbox{..}, braces balanced
//!     last_number  -> "12"        last number (sign, 1,234 grouping, decimals,
//!                                 exponent, a/b) as written, not normalized
//!     final_line   -> whole last non-empty line, trimmed
//!     regex:<pat>  -> group 1 of the LAST match (whole match if no group)
//! ```
//!
//! Invariants:
//! - An answer is never empty or surrounded by whitespace: an extractor that
//!   would yield "" (or only whitespace) yields `None`.
//! - `Extractor::parse(&e.spec())` gives an extractor equal to `e`.
//! - A user regex is at most `MAX_REGEX_BYTES` bytes, has at most one capture
//!   group and compiles within `REGEX_SIZE_LIMIT` (the `regex` crate matches
//!   in linear time, so a hostile pattern cannot blow up a request).
//! - Extraction does not normalize; equality of answers is `Equivalence`'s job.

use std::sync::LazyLock;

use regex::{Regex, RegexBuilder};

/// Longest `regex:` pattern accepted, in bytes.
pub const MAX_REGEX_BYTES: usize = 256;
/// Compiled-program size limit for a user regex (the crate's default is 10 MiB).
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// A number as `last_number` sees it. Alternatives in order: a grouped
/// integer part ("1,234,567"), a plain one ("1234"), or a bare fraction part
/// (".5"); then optional decimals, exponent and "/denominator". The sign is
/// only kept when it does not follow a word character (see `last_number`).
static NUMBER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"[-+\x{2212}]?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?(?:/\d+)?",
    )
    .expect("NUMBER is a valid regex")
});

/// How to find the answer in a sample's text. Parsed from the request's
/// `ttc.extract` string.
#[derive(Debug, Clone)]
pub enum Extractor {
    /// The content of the last `\boxed{...}` (or `\fbox{...}`), nested braces allowed.
    Boxed,
    /// The last number in the text, as written (e.g. "1,234", "-3", "3/4").
    LastNumber,
    /// The last non-empty line, trimmed.
    FinalLine,
    /// The last match of a user pattern: capture group 1 when the pattern has
    /// one and it took part in the match, else the whole match.
    Regex(Regex),
}

impl PartialEq for Extractor {
    fn eq(&self, other: &Self) -> bool {
        self.spec() == other.spec()
    }
}

impl Eq for Extractor {}

impl Extractor {
    /// `"boxed" | "last_number" | "final_line" | "regex:<pattern>"`. The error
    /// is a message fit for a 400 response.
    pub fn parse(spec: &str) -> Result<Extractor, String> {
        match spec {
            "boxed" => return Ok(Self::Boxed),
            "last_number" => return Ok(Self::LastNumber),
            "final_line" => return Ok(Self::FinalLine),
            _ => {}
        }
        let Some(pattern) = spec.strip_prefix("regex:") else {
            return Err(format!(
                "`extract` must be one of \"boxed\", \"last_number\", \"final_line\" or \
                 \"regex:<pattern>\", given {spec:?}"
            ));
        };
        if pattern.is_empty() {
            return Err("`extract` regex pattern must not be empty".to_string());
        }
        if pattern.len() > MAX_REGEX_BYTES {
            return Err(format!(
                "`extract` regex pattern must be <= {MAX_REGEX_BYTES} bytes, given {}",
                pattern.len()
            ));
        }
        let re = RegexBuilder::new(pattern)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map_err(|e| format!("`extract` regex is invalid: {e}"))?;
        // captures_len counts the implicit whole-match group 0.
        let groups = re.captures_len() - 1;
        if groups > 1 {
            return Err(format!(
                "`extract` regex must have at most 1 capture group, given {groups} \
                 (use (?:...) for grouping)"
            ));
        }
        Ok(Self::Regex(re))
    }

    /// The string `parse` accepts for this extractor.
    pub fn spec(&self) -> String {
        match self {
            Self::Boxed => "boxed".to_string(),
            Self::LastNumber => "last_number".to_string(),
            Self::FinalLine => "final_line".to_string(),
            Self::Regex(re) => format!("regex:{}", re.as_str()),
        }
    }

    /// The answer text in a sample's final text, or `None`. The caller passes
    /// the content (not the reasoning) when the model has reasoning markers.
    pub fn extract(&self, text: &str) -> Option<String> {
        let answer = match self {
            Self::Boxed => last_boxed(text),
            Self::LastNumber => last_number(text),
            Self::FinalLine => text.lines().rev().map(str::trim).find(|l| !l.is_empty()),
            Self::Regex(re) => re
                .captures_iter(text)
                .last()
                .map(|c| c.get(1).or_else(|| c.get(0)).map_or("", |m| m.as_str())),
        }?;
        let answer = answer.trim();
        (!answer.is_empty()).then(|| answer.to_string())
    }
}

/// The content of the last `\boxed{..}` / `\fbox{..}` whose braces close.
/// "Last" is by start position; an unclosed one (a truncated sample) is skipped.
fn last_boxed(text: &str) -> Option<&str> {
    let mut best: Option<(usize, &str)> = None;
    for marker in ["\\boxed{", "\\fbox{"] {
        for (start, _) in text.match_indices(marker) {
            let open = start + marker.len();
            if best.is_some_and(|(s, _)| s > start) {
                continue;
            }
            if let Some(len) = balanced_len(&text[open..]) {
                best = Some((start, &text[open..open + len]));
            }
        }
    }
    best.map(|(_, inner)| inner)
}

/// Length of the text before the `}` that closes an already-open `{`, or
/// `None` when it never closes. `\{` and `\}` are escaped braces.
fn balanced_len(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '{' => depth += 1,
            '}' if depth == 0 => return Some(i),
            '}' => depth -= 1,
            _ => {}
        }
    }
    None
}

/// The last number in `text`, as written. A leading sign right after a word
/// character or `)` is an operator, not a sign ("12-3" -> "3", not "-3").
fn last_number(text: &str) -> Option<&str> {
    let m = NUMBER.find_iter(text).last()?;
    let s = m.as_str();
    let sign_len = s
        .chars()
        .next()
        .filter(|c| matches!(c, '-' | '+' | '\u{2212}'));
    let Some(sign) = sign_len else {
        return Some(s);
    };
    let before = text[..m.start()].chars().next_back();
    if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ')') {
        Some(&s[sign.len_utf8()..])
    } else {
        Some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(spec: &str, text: &str) -> Option<String> {
        Extractor::parse(spec).unwrap().extract(text)
    }

    fn some(s: &str) -> Option<String> {
        Some(s.to_string())
    }

    #[test]
    fn parse_and_spec_round_trip() {
        for spec in ["boxed", "last_number", "final_line", "regex:answer: (\\d+)"] {
            let e = Extractor::parse(spec).unwrap();
            assert_eq!(e.spec(), spec);
            assert_eq!(Extractor::parse(&e.spec()).unwrap(), e);
        }
        assert_eq!(Extractor::parse("boxed").unwrap(), Extractor::Boxed);
        assert_ne!(Extractor::Boxed, Extractor::LastNumber);
    }

    #[test]
    fn parse_errors_name_the_allowed_values() {
        let e = Extractor::parse("lastnumber").unwrap_err();
        assert_eq!(
            e,
            "`extract` must be one of \"boxed\", \"last_number\", \"final_line\" or \
             \"regex:<pattern>\", given \"lastnumber\""
        );
        assert_eq!(
            Extractor::parse("regex:").unwrap_err(),
            "`extract` regex pattern must not be empty"
        );
        let long = format!("regex:{}", "a".repeat(257));
        assert_eq!(
            Extractor::parse(&long).unwrap_err(),
            "`extract` regex pattern must be <= 256 bytes, given 257"
        );
        assert!(Extractor::parse(&format!("regex:{}", "a".repeat(256))).is_ok());
        let bad = Extractor::parse("regex:(\\d+").unwrap_err();
        assert!(bad.starts_with("`extract` regex is invalid: "), "{bad}");
        assert!(bad.contains("unclosed group"), "{bad}");
        assert_eq!(
            Extractor::parse("regex:(a)(b)").unwrap_err(),
            "`extract` regex must have at most 1 capture group, given 2 (use (?:...) for grouping)"
        );
        assert_eq!(
            Extractor::parse("regex:(?P<x>a)(b)").unwrap_err(),
            "`extract` regex must have at most 1 capture group, given 2 (use (?:...) for grouping)"
        );
    }

    #[test]
    fn parse_rejects_a_huge_compiled_regex() {
        let e = Extractor::parse("regex:\\w{1000}\\w{1000}\\w{1000}").unwrap_err();
        assert!(e.starts_with("`extract` regex is invalid: "), "{e}");
    }

    #[test]
    fn boxed_nested_and_last() {
        assert_eq!(
            ex("boxed", "so \\boxed{\\frac{1}{2}}."),
            some("\\frac{1}{2}")
        );
        assert_eq!(
            ex("boxed", "\\boxed{3} then \\boxed{ 4 } finally"),
            some("4")
        );
        assert_eq!(ex("boxed", "\\fbox{7} and \\boxed{8}"), some("8"));
        assert_eq!(ex("boxed", "\\boxed{8} and \\fbox{7}"), some("7"));
        assert_eq!(ex("boxed", "\\boxed{\\{1,2\\}}"), some("\\{1,2\\}"));
    }

    #[test]
    fn boxed_missing_unclosed_or_empty() {
        assert_eq!(ex("boxed", "the answer is 12"), None);
        assert_eq!(ex("boxed", "\\boxed{12} then \\boxed{1"), some("12"));
        assert_eq!(ex("boxed", "\\boxed{1"), None);
        assert_eq!(ex("boxed", "\\boxed{  }"), None);
    }

    #[test]
    fn last_number_forms() {
        assert_eq!(ex("last_number", "The answer is 1,234."), some("1,234"));
        assert_eq!(ex("last_number", "It is -3."), some("-3"));
        assert_eq!(ex("last_number", "It is +3"), some("+3"));
        assert_eq!(ex("last_number", "x = 3.50 dollars"), some("3.50"));
        assert_eq!(ex("last_number", "about .5"), some(".5"));
        assert_eq!(ex("last_number", "1e3 grams"), some("1e3"));
        assert_eq!(ex("last_number", "7 + 5 = 12"), some("12"));
        assert_eq!(ex("last_number", "12-3"), some("3"));
        assert_eq!(ex("last_number", "(12)-3"), some("3"));
        assert_eq!(ex("last_number", "x-3"), some("3"));
        assert_eq!(ex("last_number", "x = \u{2212}4"), some("\u{2212}4"));
        assert_eq!(ex("last_number", "it is 3/4 of it"), some("3/4"));
        assert_eq!(ex("last_number", "costs $12."), some("12"));
        assert_eq!(ex("last_number", "1,2,3"), some("3"));
        assert_eq!(ex("last_number", "12 apples, 5 left."), some("5"));
        assert_eq!(ex("last_number", "no number here"), None);
        assert_eq!(ex("last_number", ""), None);
    }

    #[test]
    fn final_line_is_last_non_empty_trimmed() {
        assert_eq!(
            ex("final_line", "a\n  The answer is 4.  \n\n \n"),
            some("The answer is 4.")
        );
        assert_eq!(ex("final_line", "one line"), some("one line"));
        assert_eq!(ex("final_line", "x\r\ny\r\n"), some("y"));
        assert_eq!(ex("final_line", " \n\t\n"), None);
    }

    #[test]
    fn regex_group_whole_match_and_last() {
        let spec = "regex:answer is (\\d+)";
        assert_eq!(ex(spec, "answer is 3, no, answer is 4"), some("4"));
        assert_eq!(ex(spec, "nothing"), None);
        assert_eq!(ex("regex:\\d+", "a 1 b 22"), some("22"));
        // group 1 did not take part in the last match: the whole match is the answer.
        assert_eq!(ex("regex:x(\\d)?", "x1 x"), some("x"));
        // empty group -> no answer
        assert_eq!(ex("regex:ans=(\\d*)", "ans="), None);
    }
}
