//! What every backend does the same way around its rows: the stored finding
//! assembled from its columns (the document with the enrichers' merges and the
//! stored fields), an enricher's merge, and the query bounds. A backend reads
//! its row into a [`FindingRow`] and stores what [`merge_enrichment`] gives.

use std::borrow::Borrow;
use std::collections::BTreeMap;

use secflow_plugin_sdk::protocol::Severity;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::{NewFinding, PluginId, StorageError, StoredFinding};

/// Page sizes of the list queries.
pub const DEFAULT_RUNS_LIMIT: u32 = 50;
pub const DEFAULT_FINDINGS_LIMIT: u32 = 100;
pub const DEFAULT_EVENTS_LIMIT: u32 = 100;
pub const MAX_LIMIT: u32 = 1000;

/// A query's page size: its own limit, else `default`, within 1..=[`MAX_LIMIT`].
pub fn page_limit(limit: Option<u32>, default: u32) -> u32 {
    limit.unwrap_or(default).clamp(1, MAX_LIMIT)
}

/// The message of a run that `mark_interrupted` failed.
pub const INTERRUPTED_MESSAGE: &str = "the supervisor stopped while this run was in flight";

/// Fields of a finding document that say what and where it is, or that storage
/// owns; an enricher's document without them is what it added.
pub const STANDARD_FIELDS: &[&str] = &[
    "finding_schema_version",
    "rule_id",
    "title",
    "severity",
    "target",
    "location",
    "fingerprint",
    "vulnerabilities",
    "id",
    "run_id",
    "plugin",
    "first_seen",
    "last_seen",
    "occurrences",
    "enrichment",
    "hosts",
];

/// The rank a severity is stored and compared with (`info` lowest).
pub fn severity_rank(s: Severity) -> i64 {
    s as i64
}

pub fn severity_of_rank(rank: i64) -> Severity {
    usize::try_from(rank)
        .ok()
        .and_then(|r| Severity::ALL.get(r).copied())
        .unwrap_or(Severity::Unknown)
}

/// What an enricher adds under `enrichment.<plugin>`: its finding's own
/// `enrichment` object, else its document without the standard fields.
pub fn enrichment_of(document: &Value) -> Value {
    if let Some(own @ Value::Object(_)) = document.get("enrichment") {
        return own.clone();
    }
    let mut added = Map::new();
    if let Value::Object(fields) = document {
        for (key, value) in fields {
            if !STANDARD_FIELDS.contains(&key.as_str()) {
                added.insert(key.clone(), value.clone());
            }
        }
    }
    Value::Object(added)
}

/// Adds an enricher's vulnerabilities: a CVE already listed (say, named by the
/// detector) gains the fields it lacks (CVSS, KEV dates, CWEs, …) instead of
/// being skipped; a new CVE is appended; entries without a `cve` are
/// deduplicated by equality.
pub fn append_vulnerabilities(list: &mut Vec<Value>, new: &[Value]) {
    for v in new {
        let same_cve = v.get("cve").and_then(Value::as_str).and_then(|cve| {
            list.iter().position(|old| {
                old.get("cve")
                    .and_then(Value::as_str)
                    .is_some_and(|c| c.eq_ignore_ascii_case(cve))
            })
        });
        match same_cve {
            Some(i) => {
                if let (Value::Object(old), Value::Object(fields)) = (&mut list[i], v) {
                    for (key, value) in fields {
                        let empty = match old.get(key) {
                            None | Some(Value::Null) => true,
                            Some(Value::Array(a)) => a.is_empty(),
                            Some(Value::String(s)) => s.is_empty(),
                            Some(_) => false,
                        };
                        if empty {
                            old.insert(key.clone(), value.clone());
                        }
                    }
                }
            }
            None if v.get("cve").is_none() && list.contains(v) => {}
            None => list.push(v.clone()),
        }
    }
}

/// A stored finding's enrichment columns after an enricher's merge.
#[derive(Debug, Clone, PartialEq)]
pub struct MergedEnrichment {
    /// The `enrichment` column: JSON object text, one member per enricher.
    pub enrichment: String,
    /// The `enrichment_vulnerabilities` column: JSON array text.
    pub vulnerabilities: String,
    /// The highest severity the enrichers gave, and its rank.
    pub severity: Severity,
    pub rank: i64,
}

/// Merges `finding` (from enricher `plugin`) into the stored enrichment
/// columns (`enrichment` object text, `vulnerabilities` array text, the
/// enriched severity rank so far).
pub fn merge_enrichment(
    enrichment: &str,
    vulnerabilities: &str,
    enriched_rank: i64,
    plugin: &str,
    finding: &NewFinding,
) -> MergedEnrichment {
    let mut enrichment = match serde_json::from_str::<Value>(enrichment) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    };
    enrichment.insert(plugin.to_string(), enrichment_of(&finding.document));
    let mut vulnerabilities = match serde_json::from_str::<Value>(vulnerabilities) {
        Ok(Value::Array(list)) => list,
        _ => Vec::new(),
    };
    if let Some(Value::Array(new)) = finding.document.get("vulnerabilities") {
        append_vulnerabilities(&mut vulnerabilities, new);
    }
    let rank = enriched_rank.max(severity_rank(finding.severity));
    MergedEnrichment {
        enrichment: Value::Object(enrichment).to_string(),
        vulnerabilities: Value::Array(vulnerabilities).to_string(),
        severity: severity_of_rank(rank),
        rank,
    }
}

/// A stored finding's columns as a backend reads them.
#[derive(Debug, Clone)]
pub struct FindingRow {
    pub id: i64,
    pub run_id: String,
    pub plugin_name: String,
    pub plugin_version: String,
    pub fingerprint: String,
    pub first_seen: String,
    pub last_seen: String,
    pub occurrences: u64,
    /// The effective severity (the higher of the document's and the enrichers').
    pub severity: String,
    /// The newest document the detector sent, as JSON text.
    pub document: String,
    /// JSON object text: what each enricher added.
    pub enrichment: String,
    /// JSON array text: the vulnerabilities the enrichers added.
    pub enrichment_vulnerabilities: String,
    /// The hosts whose runs observed it, sorted, each once.
    pub hosts: Vec<String>,
}

impl FindingRow {
    /// The stored finding as one object: the document with the enrichments
    /// merged in and the stored fields added (contracts §5).
    pub fn into_stored(self) -> Result<StoredFinding, StorageError> {
        let id = self.id;
        let malformed = |what: &str| StorageError::Malformed(format!("finding {id}: {what}"));
        let mut document = match serde_json::from_str(&self.document) {
            Ok(Value::Object(map)) => map,
            _ => return Err(malformed("document is not a JSON object")),
        };
        let Ok(Value::Object(enrichment)) = serde_json::from_str(&self.enrichment) else {
            return Err(malformed("enrichment is not a JSON object"));
        };
        let Ok(Value::Array(added)) = serde_json::from_str(&self.enrichment_vulnerabilities) else {
            return Err(malformed("enrichment_vulnerabilities is not a JSON array"));
        };
        if !added.is_empty() {
            let mut vulnerabilities = match document.remove("vulnerabilities") {
                Some(Value::Array(list)) => list,
                _ => Vec::new(),
            };
            append_vulnerabilities(&mut vulnerabilities, &added);
            document.insert("vulnerabilities".into(), Value::Array(vulnerabilities));
        }
        // A detector may send its own `enrichment`; the enrichers' entries go over it.
        let mut merged = match document.remove("enrichment") {
            Some(Value::Object(own)) => own,
            _ => Map::new(),
        };
        merged.extend(enrichment);
        document.insert("enrichment".into(), Value::Object(merged));
        let hosts = self.hosts;
        let stored = StoredFinding {
            id,
            run_id: self.run_id,
            plugin: PluginId {
                name: self.plugin_name,
                version: self.plugin_version,
            },
            fingerprint: self.fingerprint,
            first_seen: self.first_seen,
            last_seen: self.last_seen,
            occurrences: self.occurrences,
            finding: Value::Null,
        };
        document.insert("severity".into(), Value::String(self.severity));
        document.insert("id".into(), Value::from(stored.id));
        document.insert("run_id".into(), Value::String(stored.run_id.clone()));
        document.insert(
            "plugin".into(),
            serde_json::json!({"name": stored.plugin.name, "version": stored.plugin.version}),
        );
        document.insert(
            "fingerprint".into(),
            Value::String(stored.fingerprint.clone()),
        );
        document.insert(
            "first_seen".into(),
            Value::String(stored.first_seen.clone()),
        );
        document.insert("last_seen".into(), Value::String(stored.last_seen.clone()));
        document.insert("occurrences".into(), Value::from(stored.occurrences));
        document.insert("hosts".into(), Value::from(hosts));
        Ok(StoredFinding {
            finding: Value::Object(document),
            ..stored
        })
    }

    /// Writes the stored finding as JSON text, the same object as
    /// [`FindingRow::into_stored`]'s, to `out`.
    ///
    /// A finding no enricher touched (most of them) is assembled from its
    /// document's top-level members as stored, without parsing them into a
    /// tree and serialising that again: an API page of them costs a
    /// fraction. The members come out in key order, as the tree's do. An
    /// enriched finding takes the tree's merge.
    pub fn write_text(self, out: &mut Vec<u8>) -> Result<(), StorageError> {
        let id = self.id;
        let failed = |e: serde_json::Error| StorageError::Malformed(format!("finding {id}: {e}"));
        if self.enrichment != "{}" || self.enrichment_vulnerabilities != "[]" {
            let stored = self.into_stored()?;
            return serde_json::to_writer(out, &stored.finding).map_err(failed);
        }
        let malformed =
            || StorageError::Malformed(format!("finding {id}: document is not a JSON object"));
        // The keys borrowed from the text when none is escaped (the usual
        // case), copied otherwise.
        match serde_json::from_str::<BTreeMap<&str, &RawValue>>(&self.document) {
            Ok(members) => serde_json::to_writer(out, &Assembled::new(&self, &members)),
            Err(_) => {
                let members: BTreeMap<String, &RawValue> =
                    serde_json::from_str(&self.document).map_err(|_| malformed())?;
                serde_json::to_writer(out, &Assembled::new(&self, &members))
            }
        }
        .map_err(failed)
    }
}

/// A page of findings as one JSON array text, written finding by finding
/// into one buffer (sized for a page at the first push).
#[derive(Debug, Default)]
pub struct FindingsArray {
    text: Vec<u8>,
    count: usize,
    last_id: Option<i64>,
}

impl FindingsArray {
    /// Appends `row`'s finding.
    pub fn push(&mut self, row: FindingRow) -> Result<(), StorageError> {
        if self.text.is_empty() {
            self.text.reserve(64 * 1024);
        }
        self.text.push(if self.count == 0 { b'[' } else { b',' });
        self.last_id = Some(row.id);
        row.write_text(&mut self.text)?;
        self.count += 1;
        Ok(())
    }

    /// How many findings it holds.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The id of the last finding pushed.
    pub fn last_id(&self) -> Option<i64> {
        self.last_id
    }

    /// The array's JSON text.
    pub fn into_text(mut self) -> Result<String, StorageError> {
        if self.count == 0 {
            self.text.push(b'[');
        }
        self.text.push(b']');
        // serde_json writes only UTF-8; checked all the same (a page is
        // ~100 KB: a few µs).
        String::from_utf8(self.text)
            .map_err(|e| StorageError::Malformed(format!("findings page text: {e}")))
    }
}

/// The members every stored finding gets from its row, in key order (the
/// order of a tree's keys); a document's members of the same names give way
/// to them, but for an `enrichment` object of the detector's own.
const STORED_MEMBERS: [&str; 10] = [
    "enrichment",
    "fingerprint",
    "first_seen",
    "hosts",
    "id",
    "last_seen",
    "occurrences",
    "plugin",
    "run_id",
    "severity",
];

/// A finding no enricher touched, serialised straight from its document's
/// members (as stored, not parsed further) and its row's fields, in key order.
struct Assembled<'a, K> {
    row: &'a FindingRow,
    members: &'a BTreeMap<K, &'a RawValue>,
    /// The detector's own `enrichment` object, which stays.
    own_enrichment: Option<&'a RawValue>,
}

impl<'a, K: Borrow<str> + Ord> Assembled<'a, K> {
    fn new(row: &'a FindingRow, members: &'a BTreeMap<K, &'a RawValue>) -> Assembled<'a, K> {
        let own_enrichment = members
            .get("enrichment")
            .copied()
            .filter(|v| v.get().starts_with('{'));
        Assembled {
            row,
            members,
            own_enrichment,
        }
    }
}

impl<K: Borrow<str> + Ord> Serialize for Assembled<'_, K> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let row = self.row;
        let mut map = serializer.serialize_map(None)?;
        let mut members = self
            .members
            .iter()
            .map(|(k, v)| (k.borrow(), *v))
            .filter(|(k, _)| !STORED_MEMBERS.contains(k))
            .peekable();
        for name in STORED_MEMBERS {
            while let Some((k, v)) = members.next_if(|(k, _)| *k < name) {
                map.serialize_entry(k, v)?;
            }
            match name {
                "enrichment" => match self.own_enrichment {
                    Some(own) => map.serialize_entry(name, own)?,
                    None => map.serialize_entry(name, &Map::new())?,
                },
                "fingerprint" => map.serialize_entry(name, &row.fingerprint)?,
                "first_seen" => map.serialize_entry(name, &row.first_seen)?,
                "hosts" => map.serialize_entry(name, &row.hosts)?,
                "id" => map.serialize_entry(name, &row.id)?,
                "last_seen" => map.serialize_entry(name, &row.last_seen)?,
                "occurrences" => map.serialize_entry(name, &row.occurrences)?,
                "plugin" => map.serialize_entry(
                    name,
                    &PluginMember {
                        name: &row.plugin_name,
                        version: &row.plugin_version,
                    },
                )?,
                "run_id" => map.serialize_entry(name, &row.run_id)?,
                _ => map.serialize_entry(name, &row.severity)?,
            }
        }
        for (k, v) in members {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// `{"name": .., "version": ..}`, the keys in order.
#[derive(serde::Serialize)]
struct PluginMember<'a> {
    name: &'a str,
    version: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_stored_members_are_listed_in_key_order() {
        assert!(STORED_MEMBERS.is_sorted(), "{STORED_MEMBERS:?}");
    }

    #[test]
    fn an_enricher_completes_a_cve_the_detector_already_named() {
        let mut list = vec![json!({"cve": "CVE-2021-41773"})];
        let enriched = json!({"cve": "cve-2021-41773", "cvss": [{"version": "3.1", "base_score": 7.5}],
            "kev": {"date_added": "2021-11-03"}});
        append_vulnerabilities(&mut list, &[enriched, json!({"cve": "CVE-2021-42013"})]);
        assert_eq!(list.len(), 2);
        assert_eq!(
            list[0]["cve"], "CVE-2021-41773",
            "the detector's entry stays, completed"
        );
        assert_eq!(list[0]["cvss"][0]["base_score"], 7.5);
        assert_eq!(list[0]["kev"]["date_added"], "2021-11-03");
        assert_eq!(list[1]["cve"], "CVE-2021-42013");
    }
}
