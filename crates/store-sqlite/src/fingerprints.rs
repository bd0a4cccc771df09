//! The fingerprint index: how the writer finds the stored finding of a
//! fingerprint (deduplication, enrichment), in two parts.
//!
//! A fingerprint key is a hash, so a B-tree over the keys takes each new key
//! on a random page. Past the page cache (a million findings' key index is
//! about 17 MB, the writer's cache 8 MiB) every commit rewrote most of that
//! index into the WAL, and the checkpoint copied it again: with the index on
//! `findings` (schema versions 2 to 4), streaming a million findings wrote
//! 4.3 GB for about 1 GB of rows.
//!
//! So the keys of the newest findings, at most [`FRESH_LIMIT`] of them, are
//! held in the writer's memory (`fresh`): their rows already hold them
//! durably (`findings.fingerprint_key`), and storing a finding writes no index
//! page for its key. Once that many are held, they are merged into
//! `finding_keys` in key order, one pass over its pages, within the
//! transaction that reached the limit, and `finding_keys_merged.upto` moves to
//! the highest id merged. The invariant, at every commit: each finding with an
//! id up to `upto` is in `finding_keys`, each later one only in its row.
//!
//! A new finding (nearly every one while a scan streams) would still read a
//! page of `finding_keys` to learn that its key is not there; a Bloom filter
//! of the merged keys (`MergedKeys`, 1 MiB) answers that from memory.
//!
//! Memory is rebuilt from the rows after `upto` whenever it may differ from
//! the database: when the writer opens it, after a batch rolled back, and when
//! another connection moved the merge mark or added findings (a second
//! process writing the same file; SQLite's write lock orders the two).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use rusqlite::{params, OptionalExtension, Transaction};

/// The most keys held in memory before they are merged: 7/8 of 65 536, the
/// most a table of 65 536 slots holds (1.1 MiB, reserved once). Each merge
/// rewrites `finding_keys` once, so a larger limit writes fewer bytes per
/// finding but costs memory and a longer rebuild at open (one read of the
/// rows after the mark).
pub(crate) const FRESH_LIMIT: usize = 57_344;

/// The Bloom filter's size in bits (1 MiB). Four probes per key: about 2 %
/// false positives at a million merged keys, half at four million (it stays
/// bounded rather than growing with the database); a false positive costs
/// only the table lookup the filter would have saved.
const FILTER_BITS: u64 = 1 << 23;

const SELECT_MERGED_KEYS: &str = "SELECT key FROM finding_keys";
const SELECT_MARK: &str = "SELECT upto FROM finding_keys_merged WHERE id = 1";
const SELECT_HIGHEST: &str = "SELECT coalesce(max(id), 0) FROM findings";
const SELECT_KEYS_AFTER: &str =
    "SELECT id, fingerprint_key FROM findings WHERE id > ?1 AND id <= ?2";
const SELECT_FRESH: &str = "SELECT 1 FROM findings WHERE id = ?1 AND fingerprint = ?2";
const SELECT_MERGED: &str = "SELECT k.finding_id FROM finding_keys k \
    JOIN findings f ON f.id = k.finding_id WHERE k.key = ?1 AND f.fingerprint = ?2";
const INSERT_MERGED: &str = "INSERT INTO finding_keys (key, finding_id) VALUES (?1, ?2)";
const UPDATE_MARK: &str = "UPDATE finding_keys_merged SET upto = ?1 WHERE id = 1";

/// The writer's part of the index: the merge mark as last read or written,
/// and the keys of the findings after it.
#[derive(Debug)]
pub(crate) struct FingerprintIndex {
    /// How many keys are held before a merge ([`FRESH_LIMIT`]; smaller in tests).
    limit: usize,
    /// `finding_keys_merged.upto` as this writer last saw it.
    merged_upto: i64,
    /// The highest finding id whose key `fresh` holds; `None` when memory
    /// must be rebuilt before the next use.
    held_upto: Option<i64>,
    /// Key → id of every finding after `merged_upto`.
    fresh: HashMap<i64, i64, BuildHasherDefault<KeyHasher>>,
    /// Further (key, id) pairs whose key `fresh` already holds for another
    /// fingerprint (two fingerprints whose 64-bit keys collide).
    collided: Vec<(i64, i64)>,
    /// Every key in `finding_keys` (and possibly others); `None` until built.
    merged: Option<MergedKeys>,
}

impl Default for FingerprintIndex {
    fn default() -> FingerprintIndex {
        FingerprintIndex::with_limit(FRESH_LIMIT)
    }
}

impl FingerprintIndex {
    /// An index that merges once `limit` keys are held.
    pub(crate) fn with_limit(limit: usize) -> FingerprintIndex {
        FingerprintIndex {
            limit: limit.max(1),
            merged_upto: 0,
            held_upto: None,
            fresh: HashMap::default(),
            collided: Vec::new(),
            merged: None,
        }
    }

    /// Brings memory in line with the database as this transaction sees it;
    /// call first in every transaction that stores or looks up findings.
    pub(crate) fn sync(&mut self, tx: &Transaction<'_>) -> Result<(), rusqlite::Error> {
        let mark: i64 = tx.query_row(SELECT_MARK, [], |row| row.get(0))?;
        let highest: i64 = tx.query_row(SELECT_HIGHEST, [], |row| row.get(0))?;
        let from = match self.held_upto {
            Some(held) if mark == self.merged_upto && held <= highest => held,
            _ => {
                self.clear();
                self.merged = Some(MergedKeys::of_table(tx)?);
                self.merged_upto = mark;
                mark
            }
        };
        if from < highest {
            let mut select = tx.prepare(SELECT_KEYS_AFTER)?;
            let mut rows = select.query(params![from, highest])?;
            while let Some(row) = rows.next()? {
                self.hold(row.get(1)?, row.get(0)?);
            }
        }
        self.held_upto = Some(highest);
        Ok(())
    }

    /// The id the next new finding takes: the one after the highest stored
    /// (as SQLite would choose).
    pub(crate) fn next_id(&self) -> i64 {
        self.held_upto.unwrap_or(0) + 1
    }

    /// The stored finding with this fingerprint, if any.
    pub(crate) fn find(
        &self,
        tx: &Transaction<'_>,
        key: i64,
        fingerprint: &str,
    ) -> Result<Option<i64>, rusqlite::Error> {
        let held = self.fresh.get(&key).into_iter().copied().chain(
            self.collided
                .iter()
                .filter(move |(k, _)| *k == key)
                .map(|(_, id)| *id),
        );
        let mut check = tx.prepare_cached(SELECT_FRESH)?;
        for id in held {
            if check.exists(params![id, fingerprint])? {
                return Ok(Some(id));
            }
        }
        if self.merged.as_ref().is_some_and(|m| !m.may_hold(key)) {
            return Ok(None);
        }
        tx.prepare_cached(SELECT_MERGED)?
            .query_row(params![key, fingerprint], |row| row.get(0))
            .optional()
    }

    /// Records the key of a finding just inserted with `id`.
    pub(crate) fn inserted(&mut self, key: i64, id: i64) {
        self.hold(key, id);
        self.held_upto = Some(self.held_upto.unwrap_or(0).max(id));
    }

    /// Merges the held keys into `finding_keys` once there are as many as
    /// the limit, in key order (each page of the table is then
    /// written once however many keys land on it).
    pub(crate) fn merge_if_full(&mut self, tx: &Transaction<'_>) -> Result<(), rusqlite::Error> {
        if self.held() < self.limit {
            return Ok(());
        }
        let Some(upto) = self.held_upto else {
            return Ok(());
        };
        let mut keys: Vec<(i64, i64)> = self
            .fresh
            .drain()
            .chain(std::mem::take(&mut self.collided))
            .collect();
        keys.sort_unstable();
        let mut insert = tx.prepare_cached(INSERT_MERGED)?;
        for (key, id) in keys {
            insert.execute(params![key, id])?;
            // Added before the commit: if it rolls back, the extra keys only
            // cost a lookup each until the filter is rebuilt.
            if let Some(merged) = &mut self.merged {
                merged.add(key);
            }
        }
        tx.execute(UPDATE_MARK, [upto])?;
        self.merged_upto = upto;
        Ok(())
    }

    /// Memory no longer matches the database (its transaction rolled back).
    pub(crate) fn forget(&mut self) {
        self.held_upto = None;
    }

    /// How many keys memory holds.
    pub(crate) fn held(&self) -> usize {
        self.fresh.len() + self.collided.len()
    }

    fn hold(&mut self, key: i64, id: i64) {
        match self.fresh.entry(key) {
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(id);
            }
            std::collections::hash_map::Entry::Occupied(_) => self.collided.push((key, id)),
        }
    }

    fn clear(&mut self) {
        self.fresh.clear();
        self.collided.clear();
        // Reserved once for the most it holds: it never grows past that
        // (a rebuild may hold more, rarely: a second writer's findings).
        self.fresh.reserve(self.limit);
    }
}

/// A Bloom filter of the keys in `finding_keys`: a key it does not hold is
/// not in the table.
#[derive(Debug)]
struct MergedKeys {
    /// [`FILTER_BITS`] bits, allocated with the first key.
    bits: Vec<u64>,
}

impl MergedKeys {
    /// The filter of every key the table holds (one read of the table:
    /// about 17 MB at a million findings).
    fn of_table(tx: &Transaction<'_>) -> Result<MergedKeys, rusqlite::Error> {
        let mut merged = MergedKeys { bits: Vec::new() };
        let mut select = tx.prepare(SELECT_MERGED_KEYS)?;
        let mut rows = select.query([])?;
        while let Some(row) = rows.next()? {
            merged.add(row.get(0)?);
        }
        Ok(merged)
    }

    fn add(&mut self, key: i64) {
        if self.bits.is_empty() {
            self.bits = vec![0; (FILTER_BITS / 64) as usize];
        }
        for bit in probes(key) {
            self.bits[(bit / 64) as usize] |= 1 << (bit % 64);
        }
    }

    fn may_hold(&self, key: i64) -> bool {
        !self.bits.is_empty()
            && probes(key)
                .iter()
                .all(|bit| self.bits[(bit / 64) as usize] & (1 << (bit % 64)) != 0)
    }
}

/// The filter's four bits for a key: 23-bit slices of the key and of a
/// multiplicative remix of it (the key's bits are already uniform).
fn probes(key: i64) -> [u64; 4] {
    let (a, b) = (key as u64, (key as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mask = FILTER_BITS - 1;
    [
        a & mask,
        (a >> 23) & mask,
        (b >> 18) & mask,
        (b >> 41) & mask,
    ]
}

/// Fingerprint keys are already 64 uniformly distributed bits of a SHA-256:
/// hashing them again would only cost time.
#[derive(Debug, Default)]
pub(crate) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `i64` keys are hashed; any other input still hashes, slowly.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_i64(&mut self, key: i64) {
        self.0 = key as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Uniform 64-bit keys, as SHA-256 prefixes are (splitmix64).
    fn keys(seed: u64, n: usize) -> impl Iterator<Item = i64> {
        let mut state = seed;
        std::iter::repeat_with(move || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (z ^ (z >> 31)) as i64
        })
        .take(n)
    }

    #[test]
    fn the_merged_keys_filter_holds_every_key_added_and_few_others_at_a_million() {
        let mut merged = MergedKeys { bits: Vec::new() };
        assert!(!merged.may_hold(42), "an empty filter holds nothing");
        for key in keys(1, 1_000_000) {
            merged.add(key);
        }
        assert!(keys(1, 1_000_000).all(|key| merged.may_hold(key)));
        let others = keys(2, 100_000).filter(|&key| merged.may_hold(key)).count();
        // Four probes into 8 Mbit at a million keys: about 2 % expected.
        assert!(
            others < 4_000,
            "{others} of 100 000 absent keys pass the filter"
        );
    }
}
