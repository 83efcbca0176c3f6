//! Normal form of a prompt for the exact tier.

use unicode_normalization::UnicodeNormalization;

/// NFKC, lower case, runs of whitespace collapsed to one space, trimmed.
///
/// NFKC folds compatibility forms (full-width letters, ligatures, non-breaking spaces), so
/// prompts that render the same map to one key. Nothing else is stripped: punctuation can
/// change a question's meaning ("2+3" is not "23").
pub fn normalize(prompt: &str) -> String {
    // ASCII is its own NFKC form: skip the Unicode tables for the common case.
    let folded: String = if prompt.is_ascii() {
        prompt.to_ascii_lowercase()
    } else {
        prompt.nfkc().flat_map(char::to_lowercase).collect()
    };
    let mut out = String::with_capacity(folded.len());
    for word in folded.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn folds_case_unicode_and_whitespace() {
        assert_eq!(normalize("  How do I\tReset   my\nPASSWORD? "), "how do i reset my password?");
        // Full-width letters and a non-breaking space fold to their plain forms.
        assert_eq!(normalize("ＡＢＣ\u{00a0}def"), "abc def");
        // Composed and decomposed é are one key.
        assert_eq!(normalize("caf\u{00e9}"), normalize("cafe\u{0301}"));
    }

    #[test]
    fn keeps_punctuation_and_digits() {
        assert_ne!(normalize("What is 2+3?"), normalize("What is 23?"));
        assert_ne!(normalize("What is 2+3?"), normalize("What is 2+4?"));
    }

    #[test]
    fn whitespace_only_is_empty() {
        assert_eq!(normalize(" \t\n "), "");
    }
}
