//! The words the scan tries: the default list embedded in the executable, or a
//! user's file named by `config.wordlist`, and the candidate paths built from them.
//!
//! Staging copies only the executable beside the manifest, so the default list is
//! compiled in here (the only embedded asset); a user list comes from a path the
//! manifest grants as a sandbox `read_path`.

use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The default wordlist (`plugins/ferox/wordlists/default.txt`).
pub const DEFAULT_WORDLIST: &str = include_str!("../wordlists/default.txt");
/// Largest wordlist file read.
pub const MAX_WORDLIST_BYTES: u64 = 64 << 20;
/// Longest word kept; longer lines are skipped.
pub const MAX_WORD_BYTES: usize = 1024;
/// Most words kept from one list.
pub const MAX_WORDS: usize = 2_000_000;

/// The wordlist file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum WordlistError {
    /// config.wordlist {path}: cannot be read
    #[error("config.wordlist {path}: cannot be read")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// config.wordlist {path}: larger than the limit
    #[error("config.wordlist {path}: larger than {MAX_WORDLIST_BYTES} bytes")]
    TooLarge { path: PathBuf },
    /// config.wordlist {path}: no words
    #[error("config.wordlist {path}: holds no words")]
    Empty { path: PathBuf },
}

/// Reads a wordlist file (UTF-8; invalid bytes are replaced).
pub fn load(path: &Path) -> Result<Vec<String>, WordlistError> {
    let read_err = |source| WordlistError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut bytes = Vec::new();
    file.take(MAX_WORDLIST_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_WORDLIST_BYTES {
        return Err(WordlistError::TooLarge {
            path: path.to_owned(),
        });
    }
    let words = parse(&String::from_utf8_lossy(&bytes));
    if words.is_empty() {
        return Err(WordlistError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(words)
}

/// The words of a list: one per line, trimmed, `#` comments and blank lines
/// skipped, a leading `/` dropped (words are relative to the scanned directory),
/// duplicates dropped (first kept), bounded by [`MAX_WORD_BYTES`] and [`MAX_WORDS`].
pub fn parse(text: &str) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut words = Vec::new();
    for line in text.lines() {
        let word = line.trim().trim_start_matches('/');
        if word.is_empty()
            || line.trim_start().starts_with('#')
            || word.len() > MAX_WORD_BYTES
            || word.chars().any(char::is_control)
        {
            continue;
        }
        if seen.insert(word) {
            words.push(word.to_owned());
            if words.len() == MAX_WORDS {
                break;
            }
        }
    }
    words
}

/// The relative paths requested in every scanned directory: each word, then the
/// word with each extension; words ending in `/` (directory probes) and words that
/// already end in `.ext` get no extensions.
pub fn candidates(words: &[String], extensions: &[String]) -> Vec<Box<str>> {
    let mut out = Vec::with_capacity(words.len() * (1 + extensions.len()));
    for word in words {
        out.push(word.as_str().into());
        if word.ends_with('/') {
            continue;
        }
        for ext in extensions {
            let suffix = format!(".{ext}");
            if !word.ends_with(&suffix) {
                out.push(format!("{word}{suffix}").into());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_list_covers_vcs_env_backups_admin_and_api_docs() {
        let words = parse(DEFAULT_WORDLIST);
        for expected in [
            ".git/config",
            ".env",
            "backup.zip",
            "index.php.bak",
            "admin/",
            "swagger.json",
            "server-status",
        ] {
            assert!(words.iter().any(|w| w == expected), "{expected} missing");
        }
        assert!(words.len() > 2000, "{} words", words.len());
    }

    #[test]
    fn parsing_skips_comments_blanks_and_duplicates_and_drops_leading_slashes() {
        let words = parse("# comment\n\n/admin\nadmin\n  .git/HEAD  \r\nx\u{7}y\n");
        assert_eq!(words, ["admin", ".git/HEAD"]);
    }

    #[test]
    fn extensions_are_added_to_files_but_not_to_directory_probes() {
        let words = vec!["index".to_owned(), "admin/".to_owned(), "a.php".to_owned()];
        let exts = vec!["php".to_owned(), "bak".to_owned()];
        let got: Vec<String> = candidates(&words, &exts)
            .iter()
            .map(|c| c.to_string())
            .collect();
        assert_eq!(
            got,
            [
                "index",
                "index.php",
                "index.bak",
                "admin/",
                "a.php",
                "a.php.bak"
            ]
        );
    }

    #[test]
    fn a_missing_wordlist_file_is_an_error_naming_it() {
        let err = load(Path::new("/nonexistent/words.txt")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "config.wordlist /nonexistent/words.txt: cannot be read"
        );
    }
}
