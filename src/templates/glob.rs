//! Globs over Kubernetes names: `*` stands for any run of characters
//! (also none), `?` for exactly one; every other character for itself.
//! Pure, no I/O. Whether two globs can match one same name is decided
//! here too ([`Glob::overlaps`]): `spec.secretTemplates` refuses rules that
//! could select one Secret twice.

use std::collections::BTreeSet;
use std::fmt;

/// One glob pattern, e.g. `*-tls`, `web-?`, `registry`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Glob {
    pattern: Vec<char>,
}

/// One position of a pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    /// `*`: any run of characters.
    Star,
    /// `?`: one character.
    One,
    /// Itself.
    Char(char),
}

impl Glob {
    /// The glob `pattern`.
    pub fn new(pattern: &str) -> Self {
        Self {
            pattern: pattern.chars().collect(),
        }
    }

    /// The pattern as written.
    pub fn as_str(&self) -> String {
        self.pattern.iter().collect()
    }

    /// Whether the pattern has no `*` or `?` (an exact name).
    pub fn is_exact(&self) -> bool {
        !self.pattern.iter().any(|c| matches!(c, '*' | '?'))
    }

    fn token(&self, at: usize) -> Option<Token> {
        self.pattern.get(at).map(|c| match c {
            '*' => Token::Star,
            '?' => Token::One,
            c => Token::Char(*c),
        })
    }

    /// Whether `text` matches the whole pattern.
    pub fn matches(&self, text: &str) -> bool {
        let text: Vec<char> = text.chars().collect();
        // Classic two-pointer match with backtracking to the last star.
        let (mut p, mut t) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while t < text.len() {
            match self.token(p) {
                Some(Token::Star) => {
                    star = Some((p, t));
                    p += 1;
                }
                Some(Token::One) => {
                    p += 1;
                    t += 1;
                }
                Some(Token::Char(c)) if c == text[t] => {
                    p += 1;
                    t += 1;
                }
                _ => match star {
                    Some((star_p, star_t)) => {
                        p = star_p + 1;
                        t = star_t + 1;
                        star = Some((star_p, star_t + 1));
                    }
                    None => return false,
                },
            }
        }
        (p..self.pattern.len()).all(|i| self.token(i) == Some(Token::Star))
    }

    /// Whether some name matches both `self` and `other`. Decided exactly
    /// over pairs of pattern positions (a name is built one character at a
    /// time, or a star of either side stops matching).
    pub fn overlaps(&self, other: &Glob) -> bool {
        let mut seen = BTreeSet::new();
        let mut todo = vec![(0usize, 0usize)];
        while let Some((i, j)) = todo.pop() {
            if !seen.insert((i, j)) {
                continue;
            }
            let (a, b) = (self.token(i), other.token(j));
            match (a, b) {
                (None, None) => return true,
                (Some(Token::Star), _) | (_, Some(Token::Star)) => {
                    // A star may match nothing more...
                    if a == Some(Token::Star) {
                        todo.push((i + 1, j));
                    }
                    if b == Some(Token::Star) {
                        todo.push((i, j + 1));
                    }
                    // ...or one more character that the other side takes.
                    match (a, b) {
                        (Some(Token::Star), Some(Token::Star)) => {
                            todo.push((i + 1, j + 1));
                        }
                        (Some(Token::Star), Some(_)) => todo.push((i, j + 1)),
                        (Some(_), Some(Token::Star)) => todo.push((i + 1, j)),
                        _ => {}
                    }
                }
                (Some(x), Some(y)) if one_char_matches(x, y) => todo.push((i + 1, j + 1)),
                _ => {}
            }
        }
        false
    }
}

/// Whether two single-character tokens (no star) can match one character.
fn one_char_matches(a: Token, b: Token) -> bool {
    match (a, b) {
        (Token::Char(x), Token::Char(y)) => x == y,
        _ => true,
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(pattern: &str) -> Glob {
        Glob::new(pattern)
    }

    #[test]
    fn matches_exact_names_stars_and_question_marks() {
        assert!(g("registry").matches("registry"));
        assert!(!g("registry").matches("registry2"));
        assert!(!g("registry").matches("registr"));
        assert!(g("*-tls").matches("site-tls"));
        assert!(g("*-tls").matches("-tls"));
        assert!(!g("*-tls").matches("site-tls2"));
        assert!(g("web-?").matches("web-a"));
        assert!(!g("web-?").matches("web-"));
        assert!(!g("web-?").matches("web-ab"));
        assert!(g("*").matches(""));
        assert!(g("*").matches("anything"));
        assert!(g("a*b*c").matches("axxbyyc"));
        assert!(g("a*b*c").matches("abc"));
        assert!(!g("a*b*c").matches("acb"));
        assert!(g("**").matches("x"));
        assert!(g("a*a").matches("aaa"));
        assert!(!g("a*a").matches("a"));
    }

    #[test]
    fn exact_names_have_no_wildcards() {
        assert!(g("site-tls").is_exact());
        assert!(!g("site-*").is_exact());
        assert!(!g("site-?").is_exact());
    }

    #[test]
    fn overlap_is_exact_and_symmetric() {
        let cases = [
            ("registry", "registry", true),
            ("registry", "registry2", false),
            ("*-tls", "site-tls", true),
            ("*-tls", "site-*", true),
            ("*-tls", "*-key", false),
            ("web-?", "web-ab", false),
            ("web-?", "web-a", true),
            ("web-?", "*b", true),
            ("a*", "b*", false),
            ("*a", "*b", false),
            ("a*", "*b", true),
            ("*", "", true),
            ("?", "", false),
            ("a?c", "*b*", true),
            ("a*c", "?x?", true),
            ("a*c", "??x", false),
            ("a*c", "??x?", true),
        ];
        for (a, b, expected) in cases {
            assert_eq!(g(a).overlaps(&g(b)), expected, "{a} vs {b}");
            assert_eq!(g(b).overlaps(&g(a)), expected, "{b} vs {a}");
        }
    }

    #[test]
    fn overlap_agrees_with_matching_on_small_names() {
        // Every name over {a, b} up to length 4 against a few patterns.
        let patterns = ["a*", "*b", "?a", "a?b*", "*ab*", "b", "??", "*a*a*"];
        let mut names = vec![String::new()];
        for _ in 0..4 {
            let longer: Vec<String> = names
                .iter()
                .flat_map(|n| [format!("{n}a"), format!("{n}b")])
                .collect();
            names.extend(longer);
        }
        names.sort();
        names.dedup();
        for a in patterns {
            for b in patterns {
                let witness = names.iter().any(|n| g(a).matches(n) && g(b).matches(n));
                if witness {
                    assert!(g(a).overlaps(&g(b)), "{a} and {b} share a name");
                }
            }
        }
        assert!(!g("a*").overlaps(&g("b")));
    }
}
