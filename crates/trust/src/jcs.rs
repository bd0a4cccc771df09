//! RFC 8785 JSON Canonicalization Scheme (JCS): the exact bytes a manifest
//! signature covers.
//!
//! A signature is only useful if every signer and verifier turns the same JSON
//! into the same bytes, whatever language they are written in; JCS is the
//! standard for that. Objects are written with their member names sorted by
//! UTF-16 code units, no whitespace anywhere, strings with the minimal
//! `JSON.stringify` escapes, and numbers as ECMAScript's `Number.prototype.toString`
//! writes the IEEE 754 double they denote.
//!
//! Written here rather than taken from a crate: it is a hundred lines over
//! `serde_json::Value`, and it refuses what RFC 8785 (through I-JSON, RFC 7493)
//! says cannot be canonicalized instead of rounding it silently: an integer
//! that no double holds exactly would let two parsers disagree about the value
//! that was signed.

use std::fmt::Write as _;

use serde_json::{Map, Number, Value};

/// A value that has no canonical form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JcsError {
    /// The number is outside what an IEEE 754 double holds exactly.
    #[error("number {number} at {pointer} is not exactly representable as an IEEE 754 double, which RFC 8785 (I-JSON) requires")]
    InexactNumber { pointer: String, number: String },
}

/// The canonical form of `value`, as UTF-8 text.
pub fn canonicalize(value: &Value) -> Result<String, JcsError> {
    let mut out = String::new();
    write_value(&mut out, value, &mut String::new())?;
    Ok(out)
}

/// Writes `value`; `pointer` is its JSON pointer, for error messages.
fn write_value(out: &mut String, value: &Value, pointer: &mut String) -> Result<(), JcsError> {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => write_number(out, n, pointer)?,
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let len = pointer.len();
                let _ = write!(pointer, "/{i}");
                write_value(out, item, pointer)?;
                pointer.truncate(len);
            }
            out.push(']');
        }
        Value::Object(map) => write_object(out, map, pointer)?,
    }
    Ok(())
}

fn write_object(
    out: &mut String,
    map: &Map<String, Value>,
    pointer: &mut String,
) -> Result<(), JcsError> {
    let mut members: Vec<(&String, &Value)> = map.iter().collect();
    members.sort_by(|(a, _), (b, _)| a.encode_utf16().cmp(b.encode_utf16()));
    out.push('{');
    for (i, (name, value)) in members.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_string(out, name);
        out.push(':');
        let len = pointer.len();
        pointer.push('/');
        pointer.push_str(&name.replace('~', "~0").replace('/', "~1"));
        write_value(out, value, pointer)?;
        pointer.truncate(len);
    }
    out.push('}');
    Ok(())
}

/// A string as `JSON.stringify` writes it: `"` and `\` escaped, the control
/// characters U+0000..U+001F escaped (the five with a short form use it, the
/// others `\u00xx` in lowercase hex), everything else as itself.
fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c < ' ' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn write_number(out: &mut String, n: &Number, pointer: &str) -> Result<(), JcsError> {
    let inexact = || JcsError::InexactNumber {
        pointer: if pointer.is_empty() {
            "/".to_string()
        } else {
            pointer.to_string()
        },
        number: n.to_string(),
    };
    // Integers are held exactly by serde_json; they must also be exactly a
    // double, the only number type JCS knows.
    let double = if let Some(u) = n.as_u64() {
        let d = u as f64;
        if d >= 18_446_744_073_709_551_616.0 || d as u64 != u {
            return Err(inexact());
        }
        d
    } else if let Some(i) = n.as_i64() {
        let d = i as f64;
        if d as i64 != i {
            return Err(inexact());
        }
        d
    } else {
        n.as_f64().ok_or_else(inexact)?
    };
    write_double(out, double);
    Ok(())
}

/// ECMAScript `Number.prototype.toString` (ECMA-262 §6.1.6.1.20) of a finite
/// double: the shortest digits that read back as the same double, placed as
/// plain digits when the decimal exponent is in [-6, 21) and in exponent form
/// (`1e+21`, `1.5e-7`) otherwise. `-0` is written `0`.
fn write_double(out: &mut String, x: f64) {
    if x == 0.0 {
        out.push('0');
        return;
    }
    if x < 0.0 {
        out.push('-');
    }
    let (digits, exponent) = shortest_digits(x.abs());
    // In ECMA-262's terms: the value is 0.d1d2..dk × 10^n.
    let k = digits.len() as i32;
    let n = exponent + 1;
    if k <= n && n <= 21 {
        out.push_str(&digits);
        out.extend(std::iter::repeat_n('0', (n - k) as usize));
    } else if 0 < n && n <= 21 {
        let (int, frac) = digits.split_at(n as usize);
        out.push_str(int);
        out.push('.');
        out.push_str(frac);
    } else if -6 < n && n <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-n) as usize));
        out.push_str(&digits);
    } else {
        let (first, rest) = digits.split_at(1);
        out.push_str(first);
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        let _ = write!(out, "e{}{}", if n > 0 { "+" } else { "-" }, (n - 1).abs());
    }
}

/// The shortest significant digits that read back as `x` (> 0), and the
/// decimal exponent of the first one, choosing as ECMAScript does: of two
/// equally short candidates, the closer to `x`, and of two equally close, the
/// one with an even last digit.
fn shortest_digits(x: f64) -> (String, i32) {
    // Rust's `{:e}` without a precision gives the shortest round-tripping
    // digits, the closer candidate when there are two; on an exact tie it
    // rounds half up where ECMAScript rounds half to even.
    let (digits, exponent) = split_scientific(&format!("{x:e}"));
    // The exact decimal value of the double (at most 767 significant digits).
    let (exact, exact_exponent) = split_scientific(&format!("{x:.800e}"));
    let exact = exact.trim_end_matches('0');
    let k = digits.len();
    let tie = exact_exponent == exponent && exact.len() == k + 1 && exact.ends_with('5');
    let odd = digits.bytes().last().is_some_and(|d| (d - b'0') % 2 == 1);
    if tie && odd {
        // The two candidates are the exact digits cut to k, and that plus one
        // in the last place; take the other one, if it is as short.
        let low = &exact[..k];
        let other = if digits == low {
            increment(low)
        } else {
            Some(low.to_string())
        };
        if let Some(other) = other.filter(|o| o.len() == k) {
            let reads_back = format!("{}.{}e{exponent}", &other[..1], &other[1..])
                .parse::<f64>()
                .is_ok_and(|v| v == x);
            if reads_back {
                return (other, exponent);
            }
        }
    }
    (digits, exponent)
}

/// `d.ddde±x` → (`dddd`, x).
fn split_scientific(text: &str) -> (String, i32) {
    let (mantissa, exponent) = text.split_once('e').unwrap_or((text, "0"));
    let digits = mantissa.chars().filter(char::is_ascii_digit).collect();
    (digits, exponent.parse().unwrap_or(0))
}

/// A decimal digit string plus one in its last place; `None` when it carries
/// past the first digit.
fn increment(digits: &str) -> Option<String> {
    let mut bytes = digits.as_bytes().to_vec();
    for b in bytes.iter_mut().rev() {
        if *b == b'9' {
            *b = b'0';
        } else {
            *b += 1;
            return String::from_utf8(bytes).ok();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn canonical(text: &str) -> String {
        canonicalize(&serde_json::from_str(text).unwrap()).unwrap()
    }

    #[test]
    fn the_rfc_8785_values_example_canonicalizes_byte_for_byte() {
        let input = r#"{
          "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
          "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
          "literals": [null, true, false]
        }"#;
        assert_eq!(
            canonical(input),
            "{\"literals\":[null,true,false],\"numbers\":[333333333.3333333,1e+30,4.5,0.002,1e-27],\
             \"string\":\"€$\\u000f\\nA'B\\\"\\\\\\\\\\\"/\"}"
        );
    }

    #[test]
    fn members_are_sorted_by_utf16_code_units_not_by_code_points() {
        // RFC 8785 §3.2.3: U+1F600 (a surrogate pair, 0xD83D…) sorts before
        // U+FB33, although its code point is larger.
        let input = r#"{
          "\u20ac": "Euro Sign",
          "\r": "Carriage Return",
          "\ufb33": "Hebrew Letter Dalet With Dagesh",
          "1": "One",
          "\ud83d\ude00": "Emoji: Grinning Face",
          "\u0080": "Control",
          "\u00f6": "Latin Small Letter O With Diaeresis"
        }"#;
        assert_eq!(
            canonical(input),
            "{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\u{80}\":\"Control\",\
             \"\u{f6}\":\"Latin Small Letter O With Diaeresis\",\"\u{20ac}\":\"Euro Sign\",\
             \"\u{1f600}\":\"Emoji: Grinning Face\",\"\u{fb33}\":\"Hebrew Letter Dalet With Dagesh\"}"
        );
    }

    #[test]
    fn numbers_follow_the_rfc_8785_appendix_b_table() {
        for (bits, expected) in [
            (0x0000000000000000_u64, "0"),
            (0x8000000000000000, "0"),
            (0x0000000000000001, "5e-324"),
            (0x8000000000000001, "-5e-324"),
            (0x7fefffffffffffff, "1.7976931348623157e+308"),
            (0xffefffffffffffff, "-1.7976931348623157e+308"),
            (0x4340000000000000, "9007199254740992"),
            (0xc340000000000000, "-9007199254740992"),
            (0x4430000000000000, "295147905179352830000"),
            (0x44b52d02c7e14af5, "9.999999999999997e+22"),
            (0x44b52d02c7e14af6, "1e+23"),
            (0x44b52d02c7e14af7, "1.0000000000000001e+23"),
            (0x444b1ae4d6e2ef4e, "999999999999999700000"),
            (0x444b1ae4d6e2ef4f, "999999999999999900000"),
            (0x444b1ae4d6e2ef50, "1e+21"),
            (0x3eb0c6f7a0b5ed8c, "9.999999999999997e-7"),
            (0x3eb0c6f7a0b5ed8d, "0.000001"),
            (0x41b3de4355555553, "333333333.3333332"),
            (0x41b3de4355555554, "333333333.33333325"),
            (0x41b3de4355555555, "333333333.3333333"),
            (0x41b3de4355555556, "333333333.3333334"),
            (0x41b3de4355555557, "333333333.33333343"),
            (0xbecbf647612f3696, "-0.0000033333333333333333"),
            (0x43143ff3c1cb0959, "1424953923781206.2"),
        ] {
            let mut out = String::new();
            write_double(&mut out, f64::from_bits(bits));
            assert_eq!(out, expected, "{bits:#018x}");
        }
    }

    #[test]
    fn integers_are_written_as_plain_digits_and_must_fit_a_double_exactly() {
        assert_eq!(
            canonical(r#"[0, -1, 256, 9007199254740992, 18446744073709549568]"#),
            "[0,-1,256,9007199254740992,18446744073709550000]"
        );
        let err = canonicalize(&json!({"sandbox": {"memory_mb": 9007199254740993_u64}}))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("9007199254740993") && err.contains("/sandbox/memory_mb"),
            "{err}"
        );
        assert!(canonicalize(&json!([u64::MAX])).is_err());
        assert!(
            canonicalize(&json!([i64::MIN])).is_ok(),
            "-2^63 is a double"
        );
    }

    #[test]
    fn strings_use_the_short_escapes_and_keep_other_characters_as_they_are() {
        assert_eq!(
            canonicalize(&json!("\u{8}\u{c}\n\r\t\u{1}\u{1f}\u{7f} /<>€😀\"\\")).unwrap(),
            "\"\\b\\f\\n\\r\\t\\u0001\\u001f\u{7f} /<>€😀\\\"\\\\\""
        );
    }

    #[test]
    fn whitespace_and_member_order_of_the_input_do_not_matter() {
        assert_eq!(
            canonical("{ \"b\" : [ 1 , {\"y\":2, \"x\":1} ], \"a\": \"\" }"),
            canonical("{\"a\":\"\",\"b\":[1,{\"x\":1,\"y\":2}]}")
        );
        assert_eq!(
            canonical("{\"b\":[1,{\"y\":2,\"x\":1}],\"a\":\"\"}"),
            "{\"a\":\"\",\"b\":[1,{\"x\":1,\"y\":2}]}"
        );
    }
}
