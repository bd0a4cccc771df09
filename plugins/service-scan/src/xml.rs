//! A minimal pull reader for the XML nmap writes with `-oX`.
//!
//! nmap's XML is machine-written and well-formed: elements, attributes in double
//! or single quotes, character data, comments, a DOCTYPE and processing
//! instructions; no namespaces, no CDATA that matters here. This reader yields
//! start tags (with decoded attributes), end tags and text, and fails with the
//! byte offset on anything malformed rather than guessing.

/// One XML event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<'a> {
    /// `<name a="v">` or `<name a="v"/>` (then `empty` is true and no `End` follows).
    Start {
        name: &'a str,
        attributes: Vec<(&'a str, String)>,
        empty: bool,
    },
    End {
        name: &'a str,
    },
    /// Character data between tags, entities decoded, never only whitespace.
    Text(String),
}

/// Why the document could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed XML at byte {offset}: {reason}")]
pub struct XmlError {
    pub offset: usize,
    pub reason: &'static str,
}

/// Reads events from a document.
#[derive(Debug)]
pub struct Reader<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Reader<'a> {
    pub fn new(text: &'a str) -> Reader<'a> {
        Reader { text, at: 0 }
    }

    fn error(&self, reason: &'static str) -> XmlError {
        XmlError {
            offset: self.at,
            reason,
        }
    }

    fn rest(&self) -> &'a str {
        &self.text[self.at..]
    }

    /// Skips past `end`, which must follow.
    fn skip_past(&mut self, end: &str, reason: &'static str) -> Result<(), XmlError> {
        let found = self.rest().find(end).ok_or_else(|| self.error(reason))?;
        self.at += found + end.len();
        Ok(())
    }

    fn name(&mut self) -> Result<&'a str, XmlError> {
        let rest = self.rest();
        let len = rest
            .find(|c: char| c.is_whitespace() || c == '>' || c == '/' || c == '=')
            .unwrap_or(rest.len());
        if len == 0 {
            return Err(self.error("expected a name"));
        }
        self.at += len;
        Ok(&rest[..len])
    }

    fn skip_space(&mut self) {
        let rest = self.rest();
        self.at += rest.len() - rest.trim_start().len();
    }

    /// The next event, `None` at the end of the document.
    pub fn next_event(&mut self) -> Result<Option<Event<'a>>, XmlError> {
        loop {
            let rest = self.rest();
            if rest.is_empty() {
                return Ok(None);
            }
            if !rest.starts_with('<') {
                let len = rest.find('<').unwrap_or(rest.len());
                let raw = &rest[..len];
                self.at += len;
                if raw.trim().is_empty() {
                    continue;
                }
                return Ok(Some(Event::Text(
                    decode(raw).map_err(|reason| self.error(reason))?,
                )));
            }
            if rest.starts_with("<?") {
                self.skip_past("?>", "unterminated processing instruction")?;
            } else if rest.starts_with("<!--") {
                self.skip_past("-->", "unterminated comment")?;
            } else if rest.starts_with("<![CDATA[") {
                let start = self.at + 9;
                self.skip_past("]]>", "unterminated CDATA section")?;
                return Ok(Some(Event::Text(self.text[start..self.at - 3].to_owned())));
            } else if rest.starts_with("<!") {
                self.skip_past(">", "unterminated declaration")?;
            } else if rest.starts_with("</") {
                self.at += 2;
                let name = self.name()?;
                self.skip_space();
                if !self.rest().starts_with('>') {
                    return Err(self.error("expected '>' after an end tag"));
                }
                self.at += 1;
                return Ok(Some(Event::End { name }));
            } else {
                self.at += 1;
                return self.start_tag().map(Some);
            }
        }
    }

    fn start_tag(&mut self) -> Result<Event<'a>, XmlError> {
        let name = self.name()?;
        let mut attributes = Vec::new();
        loop {
            self.skip_space();
            let rest = self.rest();
            if rest.starts_with("/>") {
                self.at += 2;
                return Ok(Event::Start {
                    name,
                    attributes,
                    empty: true,
                });
            }
            if rest.starts_with('>') {
                self.at += 1;
                return Ok(Event::Start {
                    name,
                    attributes,
                    empty: false,
                });
            }
            let key = self.name()?;
            self.skip_space();
            if !self.rest().starts_with('=') {
                return Err(self.error("expected '=' after an attribute name"));
            }
            self.at += 1;
            self.skip_space();
            let quote = self
                .rest()
                .chars()
                .next()
                .filter(|q| *q == '"' || *q == '\'')
                .ok_or_else(|| self.error("expected a quoted attribute value"))?;
            self.at += 1;
            let len = self
                .rest()
                .find(quote)
                .ok_or_else(|| self.error("unterminated attribute value"))?;
            let raw = &self.rest()[..len];
            self.at += len + 1;
            attributes.push((key, decode(raw).map_err(|reason| self.error(reason))?));
        }
    }
}

/// Decodes the five predefined entities and numeric character references.
fn decode(raw: &str) -> Result<String, &'static str> {
    if !raw.contains('&') {
        return Ok(raw.to_owned());
    }
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp + 1..];
        let semi = rest.find(';').ok_or("an entity without ';'")?;
        let entity = &rest[..semi];
        let decoded = match entity {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = if let Some(hex) = entity.strip_prefix("#x") {
                    u32::from_str_radix(hex, 16).ok()
                } else if let Some(dec) = entity.strip_prefix('#') {
                    dec.parse().ok()
                } else {
                    None
                };
                code.and_then(char::from_u32).ok_or("an unknown entity")?
            }
        };
        out.push(decoded);
        rest = &rest[semi + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(text: &str) -> Vec<Event<'_>> {
        let mut reader = Reader::new(text);
        let mut all = Vec::new();
        while let Some(event) = reader.next_event().unwrap() {
            all.push(event);
        }
        all
    }

    #[test]
    fn tags_attributes_and_text_come_out_in_document_order_with_entities_decoded() {
        let doc = r#"<?xml version="1.0"?><!DOCTYPE nmaprun><!-- c --><a x="1 &amp; 2" y='&#x41;'><b/>t&lt;x&gt;</a>"#;
        assert_eq!(
            events(doc),
            vec![
                Event::Start {
                    name: "a",
                    attributes: vec![("x", "1 & 2".into()), ("y", "A".into())],
                    empty: false
                },
                Event::Start {
                    name: "b",
                    attributes: vec![],
                    empty: true
                },
                Event::Text("t<x>".into()),
                Event::End { name: "a" },
            ]
        );
    }

    #[test]
    fn malformed_input_is_an_error_with_its_offset() {
        let mut reader = Reader::new("<a x=1>");
        let err = reader.next_event().unwrap_err();
        assert_eq!(err.reason, "expected a quoted attribute value");
        assert_eq!(err.offset, 5);
        let mut unknown = Reader::new("<a x=\"&bogus;\">");
        assert!(unknown.next_event().is_err());
    }
}
