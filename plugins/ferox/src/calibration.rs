//! Auto-calibration: learns how the target answers paths that cannot exist, so
//! that a server answering `200` (or one redirect, or one error page) to every
//! path does not turn the whole wordlist into findings.
//!
//! Before a directory is scanned, a few random paths are requested in it (a plain
//! name, a shorter one, a directory, a dotfile, one per extension). Each answer
//! becomes a [`Signature`]: status, body length, word and line counts, and the
//! `Location` with the random name replaced by `{}`. A scanned path whose answer
//! has the same status and either the same length, or the same words and lines
//! (a soft-404 page that echoes the path changes length, not shape), or — for
//! redirects — the same normalised `Location`, is a wildcard answer and dropped.

use std::fmt;

/// What calibration and filtering look at in a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Measure {
    pub status: u16,
    /// Body bytes (or `Content-Length` for `HEAD`).
    pub length: u64,
    /// Whitespace-separated words of the body.
    pub words: u64,
    /// Lines of the body (as `str::lines` counts them).
    pub lines: u64,
    /// The `Location` header, as sent.
    pub location: Option<String>,
}

/// One learnt wildcard answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub status: u16,
    pub length: u64,
    pub words: u64,
    pub lines: u64,
    /// The `Location` with the requested name replaced by `{}`.
    pub location: Option<String>,
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "status {} size {} words {} lines {}",
            self.status, self.length, self.words, self.lines
        )?;
        if let Some(location) = &self.location {
            write!(f, " location {location}")?;
        }
        Ok(())
    }
}

/// A random path requested to learn a directory's wildcard answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The path relative to the directory, as a wordlist entry would be.
    pub relative: String,
    /// The part of `relative` that stands for "a name" (replaced by `{}` in `Location`).
    pub name: String,
}

/// Most extension probes per directory.
const MAX_EXTENSION_PROBES: usize = 4;

/// The random paths to request in a directory before scanning it.
pub fn probes(extensions: &[String]) -> Vec<Probe> {
    let long = random_token(32);
    let short = random_token(12);
    let mut probes = vec![
        Probe {
            relative: long.clone(),
            name: long.clone(),
        },
        Probe {
            relative: short.clone(),
            name: short,
        },
        Probe {
            relative: format!("{long}/"),
            name: long.clone(),
        },
        Probe {
            relative: format!(".{long}"),
            name: format!(".{long}"),
        },
    ];
    for ext in extensions.iter().take(MAX_EXTENSION_PROBES) {
        let relative = format!("{long}.{ext}");
        probes.push(Probe {
            name: relative.clone(),
            relative,
        });
    }
    probes
}

/// The wildcard answers of one directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Calibration {
    signatures: Vec<Signature>,
}

impl Calibration {
    /// Records the answer to a probe; answers already known are kept once.
    pub fn learn(&mut self, probe: &Probe, answer: &Measure) {
        let signature = Signature {
            status: answer.status,
            length: answer.length,
            words: answer.words,
            lines: answer.lines,
            location: normalise_location(answer.location.as_deref(), &probe.name),
        };
        if !self.signatures.contains(&signature) {
            self.signatures.push(signature);
        }
    }

    pub fn signatures(&self) -> &[Signature] {
        &self.signatures
    }

    /// Whether the answer to the wordlist entry `relative` is one of the wildcard answers.
    pub fn is_wildcard(&self, relative: &str, answer: &Measure) -> bool {
        let name = relative.trim_end_matches('/');
        let location = normalise_location(answer.location.as_deref(), name);
        self.signatures.iter().any(|s| {
            s.status == answer.status
                && if (300..400).contains(&answer.status) && s.location.is_some() {
                    s.location == location
                } else {
                    s.length == answer.length
                        || (s.words == answer.words && s.lines == answer.lines)
                }
        })
    }
}

/// The `Location` with the last occurrence of `name` replaced by `{}`.
fn normalise_location(location: Option<&str>, name: &str) -> Option<String> {
    let location = location?;
    Some(match location.rfind(name) {
        Some(at) if !name.is_empty() => {
            format!("{}{{}}{}", &location[..at], &location[at + name.len()..])
        }
        _ => location.to_owned(),
    })
}

/// `len` random lowercase letters and digits.
fn random_token(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..len)
        .map(|_| char::from(ALPHABET[fastrand::usize(..ALPHABET.len())]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measure(
        status: u16,
        length: u64,
        words: u64,
        lines: u64,
        location: Option<&str>,
    ) -> Measure {
        Measure {
            status,
            length,
            words,
            lines,
            location: location.map(str::to_owned),
        }
    }

    fn calibrated(answer: impl Fn(&Probe) -> Measure) -> Calibration {
        let mut calibration = Calibration::default();
        for probe in probes(&["php".to_owned()]) {
            calibration.learn(&probe, &answer(&probe));
        }
        calibration
    }

    #[test]
    fn probes_are_random_and_cover_plain_directory_dotfile_and_extension_names() {
        let first = probes(&["php".to_owned()]);
        let second = probes(&["php".to_owned()]);
        assert_ne!(first[0].relative, second[0].relative);
        assert!(first.iter().any(|p| p.relative.ends_with('/')));
        assert!(first.iter().any(|p| p.relative.starts_with('.')));
        assert!(first.iter().any(|p| p.relative.ends_with(".php")));
        assert!(first.iter().all(|p| p.relative.len() >= 12));
    }

    #[test]
    fn a_server_that_answers_200_to_everything_is_filtered_but_real_pages_are_not() {
        let calibration = calibrated(|_| measure(200, 1234, 80, 20, None));
        assert!(calibration.is_wildcard("whatever", &measure(200, 1234, 80, 20, None)));
        assert!(!calibration.is_wildcard("admin", &measure(200, 5120, 300, 41, None)));
        assert!(!calibration.is_wildcard("admin", &measure(403, 1234, 80, 20, None)));
    }

    #[test]
    fn a_soft_404_that_echoes_the_path_is_recognised_by_its_shape() {
        let calibration = calibrated(|p| {
            let len = 100 + p.relative.len() as u64;
            measure(200, len, 12, 3, None)
        });
        assert!(calibration.is_wildcard("a-much-longer-name", &measure(200, 118, 12, 3, None)));
        assert!(!calibration.is_wildcard("login", &measure(200, 118, 40, 9, None)));
    }

    #[test]
    fn a_redirect_of_every_path_to_one_place_is_filtered_by_its_location() {
        let calibration = calibrated(|_| measure(302, 0, 0, 0, Some("/login?next=x")));
        assert!(calibration.is_wildcard("secret", &measure(302, 0, 0, 0, Some("/login?next=x"))));
        assert!(!calibration.is_wildcard("secret", &measure(302, 0, 0, 0, Some("/secret/"))));
    }

    #[test]
    fn a_redirect_that_echoes_the_name_is_filtered_as_a_wildcard() {
        let calibration = calibrated(|p| {
            let location = format!("/{}/", p.name);
            measure(301, 0, 0, 0, Some(&location))
        });
        assert!(calibration.is_wildcard("admin", &measure(301, 0, 0, 0, Some("/admin/"))));
        assert_eq!(
            calibration.signatures()[0].location.as_deref(),
            Some("/{}/")
        );
    }

    #[test]
    fn without_calibration_nothing_is_a_wildcard() {
        let calibration = Calibration::default();
        assert!(!calibration.is_wildcard("x", &measure(200, 1, 1, 1, None)));
    }
}
