//! Fuzzes cve-mapper's CPE 2.3 parser and version order, the two things that
//! read the CPE strings and version fields of findings and NVD/OSV records.
//!
//! The input is cut at `\n` into up to three strings. Beyond "no panic":
//! `version::compare` must be a total order on them (reflexive, antisymmetric,
//! transitive) and `Range::contains` must agree with it; a parsed CPE must
//! match itself whenever its version is concrete, `*` or `-`.

#![no_main]

use std::cmp::Ordering;

use libfuzzer_sys::fuzz_target;
use secflow_cve_mapper::cpe::{matches, Cpe};
use secflow_cve_mapper::version::{compare, is_concrete, Range};

fn check_order(a: &str, b: &str, c: &str) {
    assert_eq!(compare(a, a), Ordering::Equal, "not reflexive: {a:?}");
    assert_eq!(
        compare(a, b),
        compare(b, a).reverse(),
        "not antisymmetric: {a:?} {b:?}"
    );
    let (ab, bc, ac) = (compare(a, b), compare(b, c), compare(a, c));
    if ab != Ordering::Greater && bc != Ordering::Greater {
        assert_ne!(
            ac,
            Ordering::Greater,
            "not transitive: {a:?} <= {b:?} <= {c:?}"
        );
    }
    if ab == Ordering::Equal && bc == Ordering::Equal {
        assert_eq!(
            ac,
            Ordering::Equal,
            "equality not transitive: {a:?} {b:?} {c:?}"
        );
    }
    let between = Range {
        start_including: Some(a),
        end_including: Some(c),
        ..Range::default()
    };
    assert_eq!(
        between.contains(b),
        ab != Ordering::Greater && bc != Ordering::Greater,
        "[{a:?}, {c:?}] contains {b:?}"
    );
    let open = Range {
        start_excluding: Some(a),
        end_excluding: Some(c),
        ..Range::default()
    };
    assert_eq!(
        open.contains(b),
        ab == Ordering::Less && bc == Ordering::Less,
        "({a:?}, {c:?}) contains {b:?}"
    );
}

fn check_cpe(text: &str, others: &[&str]) {
    let Ok(cpe) = Cpe::parse(text) else {
        return;
    };
    assert!(!cpe.part().is_empty() && !cpe.vendor().is_empty() && !cpe.product().is_empty());
    let key = cpe.product_key();
    assert_eq!(key, key.to_ascii_lowercase());
    let version = cpe.version();
    if is_concrete(version) || version.is_empty() || version == "*" || version == "-" {
        assert!(
            matches(&cpe, &Range::default(), &cpe),
            "{text:?} does not match itself"
        );
    }
    for other in others {
        if let Ok(target) = Cpe::parse(other) {
            let range = Range {
                start_including: Some(version),
                end_excluding: Some(other),
                ..Range::default()
            };
            let _ = matches(&cpe, &range, &target);
            let _ = matches(&target, &Range::default(), &cpe);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\n');
    let a = parts.next().unwrap_or("");
    let b = parts.next().unwrap_or("");
    let c = parts.next().unwrap_or("");
    check_order(a, b, c);
    check_cpe(a, &[b, c]);
    check_cpe(b, &[a, c]);
});
