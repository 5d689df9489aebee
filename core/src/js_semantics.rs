//! What JavaScript would print or compute, for the few places where the lockfile must be
//! byte-identical to `JSON.stringify` and `Date#toISOString`, and where records written by
//! the original module are read with its loose (coercing) semantics.

use serde_json::Value;

/// `String(x)` / `JSON.stringify(x)` for a finite number: the shortest round-trip digits,
/// laid out by the ECMAScript Number::toString rules. Non-finite numbers print as
/// `JSON.stringify` prints them: `null`.
pub fn number_to_js_string(x: f64) -> String {
    if !x.is_finite() {
        return "null".to_string();
    }
    if x == 0.0 {
        return "0".to_string(); // covers -0, which JS prints as "0"
    }
    let mut buf = ryu::Buffer::new();
    let printed = buf.format_finite(x);
    let (negative, unsigned) = match printed.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, printed),
    };
    let (mantissa, exp10) = match unsigned.split_once('e') {
        Some((m, e)) => (m, e.parse::<i32>().unwrap_or(0)),
        None => (unsigned, 0),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    // digits d1..dk and n such that x = 0.d1..dk * 10^n (ECMAScript's k and n).
    let mut digits: String = format!("{int_part}{frac_part}");
    let mut n = int_part.len() as i32 + exp10;
    let leading = digits.len() - digits.trim_start_matches('0').len();
    digits.drain(..leading);
    n -= leading as i32;
    let trimmed_len = digits.trim_end_matches('0').len();
    digits.truncate(trimmed_len);
    let k = digits.len() as i32;
    let mut out = String::with_capacity(24);
    if negative {
        out.push('-');
    }
    if k <= n && n <= 21 {
        out.push_str(&digits);
        out.extend(std::iter::repeat_n('0', (n - k) as usize));
    } else if 0 < n && n <= 21 {
        out.push_str(&digits[..n as usize]);
        out.push('.');
        out.push_str(&digits[n as usize..]);
    } else if -6 < n && n <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-n) as usize));
        out.push_str(&digits);
    } else {
        let e = n - 1;
        out.push_str(&digits[..1]);
        if k > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push(if e >= 0 { '+' } else { '-' });
        out.push_str(&e.abs().to_string());
    }
    out
}

/// The largest time value a JavaScript Date can hold.
const MAX_TIME_MS: f64 = 8.64e15;

/// `new Date(ms).toISOString()`, or `None` where JavaScript throws
/// `RangeError: Invalid time value`.
pub fn iso_string(ms: f64) -> Option<String> {
    if !ms.is_finite() || ms.abs() > MAX_TIME_MS {
        return None;
    }
    let t = ms.trunc() as i64; // TimeClip
    let day = t.div_euclid(86_400_000);
    let in_day = t.rem_euclid(86_400_000);
    let (year, month, dom) = civil_from_days(day);
    let (h, m, s, milli) = (
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000,
    );
    let year_text = if (0..=9999).contains(&year) {
        format!("{year:04}")
    } else if year < 0 {
        format!("-{:06}", -year)
    } else {
        format!("+{year:06}")
    };
    Some(format!(
        "{year_text}-{month:02}-{dom:02}T{h:02}:{m:02}:{s:02}.{milli:03}Z"
    ))
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `JSON.stringify(s)` for a string.
pub fn json_string(s: &str) -> String {
    // serde_json escapes exactly the characters JSON.stringify escapes, with the same
    // short forms and lowercase \u00xx; serialising a &str cannot fail.
    serde_json::to_string(s).unwrap_or_else(|_| String::from("\"\""))
}

/// JavaScript's `ToNumber` on a value read from JSON (`None` = `undefined`).
pub fn to_number(v: Option<&Value>) -> f64 {
    match v {
        None => f64::NAN,
        Some(Value::Null) => 0.0,
        Some(Value::Bool(b)) => f64::from(u8::from(*b)),
        Some(Value::Number(n)) => n.as_f64().unwrap_or(f64::NAN),
        Some(Value::String(s)) => string_to_number(s),
        Some(Value::Array(a)) => match a.as_slice() {
            [] => 0.0,
            [only] if !only.is_array() && !only.is_object() => {
                string_to_number(&template_string(Some(only)))
            }
            _ => f64::NAN,
        },
        Some(Value::Object(_)) => f64::NAN,
    }
}

/// JavaScript's StringToNumber for the decimal forms (hex/octal/binary literals included).
fn string_to_number(s: &str) -> f64 {
    let t = s.trim_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
    if t.is_empty() {
        return 0.0;
    }
    let radix = |prefix: &[&str], radix: u32| -> Option<f64> {
        let lower = t.get(..2)?;
        if !prefix.contains(&lower) {
            return None;
        }
        let body = &t[2..];
        if body.is_empty() {
            return Some(f64::NAN);
        }
        Some(u128::from_str_radix(body, radix).map_or(f64::NAN, |v| v as f64))
    };
    if let Some(v) = radix(&["0x", "0X"], 16)
        .or_else(|| radix(&["0o", "0O"], 8))
        .or_else(|| radix(&["0b", "0B"], 2))
    {
        return v;
    }
    match t {
        "Infinity" | "+Infinity" => return f64::INFINITY,
        "-Infinity" => return f64::NEG_INFINITY,
        _ => {}
    }
    // Rust accepts "inf"/"nan" spellings that JavaScript does not.
    if t.chars()
        .any(|c| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
    {
        return f64::NAN;
    }
    t.parse::<f64>().unwrap_or(f64::NAN)
}

/// What a template literal `${v}` prints for a value read from JSON (`None` = `undefined`).
pub fn template_string(v: Option<&Value>) -> String {
    match v {
        None => "undefined".to_string(),
        Some(Value::Null) => "null".to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => number_to_js_string(n.as_f64().unwrap_or(f64::NAN)),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|e| match e {
                Value::Null => String::new(),
                other => template_string(Some(other)),
            })
            .collect::<Vec<_>>()
            .join(","),
        Some(Value::Object(_)) => "[object Object]".to_string(),
    }
}

/// `a === b` where `a` is a value read from JSON and `b` a JavaScript number.
pub fn strict_equals_number(a: Option<&Value>, b: f64) -> bool {
    matches!(a, Some(Value::Number(n)) if n.as_f64() == Some(b))
}

/// Node's posix `path.join(dir, name)`: joined with `/`, then normalised (`.` and `..`
/// folded, repeated slashes collapsed), relative paths kept relative.
pub fn node_path_join(dir: &str, name: &str) -> String {
    let joined = match (dir.is_empty(), name.is_empty()) {
        (true, true) => return ".".to_string(),
        (true, false) => name.to_string(),
        (false, true) => dir.to_string(),
        (false, false) => format!("{dir}/{name}"),
    };
    let absolute = joined.starts_with('/');
    let trailing = joined.ends_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for seg in joined.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !absolute {
                    parts.push("..");
                }
            }
            s => parts.push(s),
        }
    }
    let mut out = parts.join("/");
    if out.is_empty() && !absolute {
        out.push('.');
    }
    if trailing && !out.is_empty() && out != "." {
        out.push('/');
    } else if trailing && out == "." {
        out = "./".to_string();
    }
    if absolute {
        out.insert(0, '/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_print_as_javascript_prints_them() {
        let cases: &[(f64, &str)] = &[
            (0.0, "0"),
            (-0.0, "0"),
            (1.0, "1"),
            (-1.0, "-1"),
            (1_700_000_000_123.0, "1700000000123"),
            (1000.5, "1000.5"),
            (0.1, "0.1"),
            (123456789012345680000.0, "123456789012345680000"),
            (1e21, "1e+21"),
            (1.5e21, "1.5e+21"),
            (1e-6, "0.000001"),
            (1e-7, "1e-7"),
            (1.25e-7, "1.25e-7"),
            (0.000123, "0.000123"),
            (5e-324, "5e-324"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (f64::NAN, "null"),
            (f64::INFINITY, "null"),
            (12345.0, "12345"),
            (100.0, "100"),
        ];
        for (x, want) in cases {
            assert_eq!(number_to_js_string(*x), *want, "for {x:e}");
        }
    }

    #[test]
    fn iso_strings_match_date_to_iso_string() {
        assert_eq!(iso_string(0.0).as_deref(), Some("1970-01-01T00:00:00.000Z"));
        assert_eq!(
            iso_string(1_700_000_000_123.0).as_deref(),
            Some("2023-11-14T22:13:20.123Z")
        );
        assert_eq!(
            iso_string(-1.0).as_deref(),
            Some("1969-12-31T23:59:59.999Z")
        );
        assert_eq!(iso_string(1.9).as_deref(), Some("1970-01-01T00:00:00.001Z"));
        assert_eq!(
            iso_string(951_782_400_000.0).as_deref(),
            Some("2000-02-29T00:00:00.000Z")
        );
        assert_eq!(
            iso_string(8.64e15).as_deref(),
            Some("+275760-09-13T00:00:00.000Z")
        );
        assert_eq!(
            iso_string(-8.64e15).as_deref(),
            Some("-271821-04-20T00:00:00.000Z")
        );
        assert_eq!(
            iso_string(-62_198_755_200_000.0).as_deref(),
            Some("-000001-01-01T00:00:00.000Z")
        );
        assert_eq!(
            iso_string(253_402_300_800_000.0).as_deref(),
            Some("+010000-01-01T00:00:00.000Z")
        );
        assert_eq!(iso_string(8.64e15 + 1.0), None);
        assert_eq!(iso_string(f64::NAN), None);
    }

    #[test]
    fn strings_escape_as_json_stringify() {
        assert_eq!(json_string("goal_a"), "\"goal_a\"");
        assert_eq!(
            json_string("a\"b\\c\n\t\u{1}é/"),
            "\"a\\\"b\\\\c\\n\\t\\u0001é/\""
        );
    }

    #[test]
    fn to_number_coerces_like_javascript() {
        assert!(to_number(None).is_nan());
        assert_eq!(to_number(Some(&json!(null))), 0.0);
        assert_eq!(to_number(Some(&json!(true))), 1.0);
        assert_eq!(to_number(Some(&json!(" 12 "))), 12.0);
        assert_eq!(to_number(Some(&json!(""))), 0.0);
        assert_eq!(to_number(Some(&json!("0x10"))), 16.0);
        assert!(to_number(Some(&json!("12abc"))).is_nan());
        assert!(to_number(Some(&json!("inf"))).is_nan());
        assert_eq!(to_number(Some(&json!("-Infinity"))), f64::NEG_INFINITY);
        assert_eq!(to_number(Some(&json!([]))), 0.0);
        assert_eq!(to_number(Some(&json!([7]))), 7.0);
        assert!(to_number(Some(&json!([1, 2]))).is_nan());
        assert!(to_number(Some(&json!({}))).is_nan());
    }

    #[test]
    fn path_join_normalises_like_node() {
        assert_eq!(node_path_join("/a/b/", "x.lock"), "/a/b/x.lock");
        assert_eq!(node_path_join("a//b/../c", "x.lock"), "a/c/x.lock");
        assert_eq!(node_path_join("./d", "x.lock"), "d/x.lock");
        assert_eq!(node_path_join("../d", "x.lock"), "../d/x.lock");
        assert_eq!(node_path_join("/..", "x.lock"), "/x.lock");
        assert_eq!(node_path_join("", "x.lock"), "x.lock");
        assert_eq!(node_path_join(".", "x.lock"), "x.lock");
        assert_eq!(node_path_join("/", "x.lock"), "/x.lock");
    }

    #[test]
    fn template_strings_print_like_javascript() {
        assert_eq!(template_string(None), "undefined");
        assert_eq!(template_string(Some(&json!(12345))), "12345");
        assert_eq!(template_string(Some(&json!("g"))), "g");
        assert_eq!(template_string(Some(&json!([1, null, "x"]))), "1,,x");
        assert_eq!(template_string(Some(&json!({"a": 1}))), "[object Object]");
    }
}
