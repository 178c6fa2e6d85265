//! Answer equivalence: an answer text -> a canonical key; equal keys are the
//! same vote.
//!
//! ```text
//!  exact:    "  $x +  1$. " -> "x + 1"     trim, surrounding $..$, trailing '.',
//!                                          inner whitespace collapsed
//!  numeric:  "1,234" "1234.0" "$1,234" "1.234e3"          -> "1234"
//!            "3/4" "\frac{3}{4}" "\dfrac{6}{8}" "0.750"   -> "0.75"
//!            "1/3"                                        -> "1/3"
//!            "12%" -> "12"   "−3" -> "-3"   "-0" -> "0"
//!            "twelve"                                     -> exact key "twelve"
//! ```
//!
//! Numeric rule (documented contract):
//! 1. Strip: the exact-key cleanup, then a leading `$` (currency) and a
//!    trailing `%` / `\%` (the percent sign is dropped: "12%" == "12", not 0.12).
//! 2. Parse one of: a decimal `[sign] digits[.digits][e[sign]digits]` (digits may
//!    be grouped "1,234,567"), `a/b` with decimal `a`, `b`, or
//!    `[sign]\frac{a}{b}` / `\dfrac` / `\tfrac`. Anything else is not a number
//!    and gets the Exact key.
//! 3. Value as an exact rational p/q (i128, reduced, q > 0). Key: the integer
//!    when q = 1; the terminating decimal when q = 2^a 5^b ("0.75", never
//!    trailing zeros); else "p/q". So rationals compare exactly: "0.5" == "1/2",
//!    "0.333" != "1/3".
//! 4. When p or q (or an intermediate product) overflows i128, the value is
//!    taken as f64 instead (nearest double; key = `{}` formatting of the double,
//!    which is shortest round-trip). A non-finite or zero-denominator value is
//!    not a number. Only values beyond ~1.7e38 or with > 38 significant digits
//!    take this path, so for them "equal" means "same nearest double".
//!
//! Invariant: `key` is pure and total (never panics, any input).

/// How two answers are judged the same. Parsed from `ttc.equivalence`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Equivalence {
    /// Same text after light cleanup (see the module docs).
    Exact,
    /// Same number (exact rational), falling back to `Exact` for non-numbers.
    Numeric,
}

impl Equivalence {
    /// "exact" | "numeric".
    pub fn parse(s: &str) -> Result<Equivalence, String> {
        match s {
            "exact" => Ok(Self::Exact),
            "numeric" => Ok(Self::Numeric),
            _ => Err(format!(
                "`equivalence` must be one of \"exact\" or \"numeric\", given {s:?}"
            )),
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Exact => "exact",
            Self::Numeric => "numeric",
        }
    }

    /// Canonical key: answers with equal keys are the same vote.
    pub fn key(&self, answer: &str) -> String {
        let exact = exact_key(answer);
        match self {
            Self::Exact => exact,
            Self::Numeric => numeric_key(&exact).unwrap_or(exact),
        }
    }
}

/// Trim, strip surrounding `$...$` (any number of pairs) and trailing `.`,
/// collapse inner whitespace runs to one space.
fn exact_key(answer: &str) -> String {
    let mut s = answer.trim();
    loop {
        let before = s;
        s = s.trim_end_matches('.').trim();
        if s.len() >= 2 && s.starts_with('$') && s.ends_with('$') {
            s = s[1..s.len() - 1].trim();
        }
        if s == before {
            break;
        }
    }
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The numeric key of an exact-key-cleaned answer, or `None` if it is not a number.
fn numeric_key(s: &str) -> Option<String> {
    let s = s.replace('\u{2212}', "-");
    let s = s.strip_prefix('$').unwrap_or(&s).trim_start();
    let s = s
        .strip_suffix("\\%")
        .or_else(|| s.strip_suffix('%'))
        .unwrap_or(s)
        .trim_end();
    let s = s.strip_suffix('.').unwrap_or(s);
    match parse_value(s)? {
        Value::Exact(r) => Some(r.key()),
        Value::Float(f) => Some(format!("{}", f + 0.0)),
    }
}

enum Value {
    Exact(Ratio),
    Float(f64),
}

/// `[sign]\frac{a}{b}` | `a/b` | decimal.
fn parse_value(s: &str) -> Option<Value> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(rest) => (true, rest.trim_start()),
        None => (false, s.strip_prefix('+').unwrap_or(s).trim_start()),
    };
    if body.starts_with(['-', '+']) {
        return None; // "--3", "+-3": not a number
    }
    for cmd in ["\\frac", "\\dfrac", "\\tfrac"] {
        if let Some(rest) = body.strip_prefix(cmd) {
            let (a, rest) = braced(rest.trim_start())?;
            let (b, rest) = braced(rest.trim_start())?;
            if !rest.trim().is_empty() {
                return None;
            }
            return divide(parse_decimal(a.trim())?, parse_decimal(b.trim())?, neg);
        }
    }
    if let Some((a, b)) = body.split_once('/') {
        return divide(parse_decimal(a.trim())?, parse_decimal(b.trim())?, neg);
    }
    let v = parse_decimal(body)?;
    divide(v, Value::Exact(Ratio::ONE), neg)
}

/// `{inner}rest` -> (inner, rest); no nesting needed for numbers.
fn braced(s: &str) -> Option<(&str, &str)> {
    let rest = s.strip_prefix('{')?;
    let end = rest.find('}')?;
    Some((&rest[..end], &rest[end + 1..]))
}

/// `(-)a / b`, exactly when both are exact and nothing overflows.
fn divide(a: Value, b: Value, neg: bool) -> Option<Value> {
    let v = match (&a, &b) {
        (Value::Exact(x), Value::Exact(y)) => x.div(y).map(Value::Exact),
        _ => None,
    };
    let v = match v {
        Some(v) => v,
        None => {
            let (x, y) = (a.to_f64(), b.to_f64());
            if y == 0.0 {
                return None;
            }
            let f = x / y;
            if !f.is_finite() {
                return None;
            }
            Value::Float(f)
        }
    };
    Some(match v {
        Value::Exact(r) if neg => Value::Exact(r.neg()?),
        Value::Float(f) if neg => Value::Float(-f),
        v => v,
    })
}

impl Value {
    fn to_f64(&self) -> f64 {
        match self {
            Value::Exact(r) => r.num as f64 / r.den as f64,
            Value::Float(f) => *f,
        }
    }
}

/// `[sign]int[.frac][e[sign]exp]` with optional "1,234" grouping; `.5` and
/// `5.` are accepted. Exact when it fits i128, else f64.
fn parse_decimal(s: &str) -> Option<Value> {
    let (neg, s) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let (mantissa, exp) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let int = ungroup(int)?;
    if int.is_empty() && frac.is_empty() || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let exp: i64 = match exp {
        Some(e) => {
            let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            e.parse().unwrap_or(if e.starts_with('-') {
                i64::MIN
            } else {
                i64::MAX
            })
        }
        None => 0,
    };
    let frac = frac.trim_end_matches('0');
    let digits = format!("{int}{frac}");
    let digits = digits.trim_start_matches('0');
    // value = digits * 10^(exp - frac.len())
    let scale = exp.saturating_sub(frac.len() as i64);
    let exact = (|| {
        let m: i128 = if digits.is_empty() {
            0
        } else {
            digits.parse().ok()?
        };
        if m == 0 {
            return Some(Ratio::ZERO);
        }
        let p = pow10(scale.unsigned_abs())?;
        let r = if scale >= 0 {
            Ratio::new(m.checked_mul(p)?, 1)
        } else {
            Ratio::new(m, p)
        };
        if neg {
            r.neg()
        } else {
            Some(r)
        }
    })();
    if let Some(r) = exact {
        return Some(Value::Exact(r));
    }
    let text = format!("{}{}.{}e{}", if neg { "-" } else { "" }, int, frac, exp);
    let f: f64 = text.parse().ok()?;
    f.is_finite().then_some(Value::Float(f))
}

/// "1,234,567" -> "1234567"; "" stays ""; bad grouping or non-digits -> None.
fn ungroup(int: &str) -> Option<String> {
    if !int.contains(',') {
        return int
            .bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| int.to_string());
    }
    let mut groups = int.split(',');
    let first = groups.next()?;
    if first.is_empty() || first.len() > 3 || !first.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut out = first.to_string();
    for g in groups {
        if g.len() != 3 || !g.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        out.push_str(g);
    }
    Some(out)
}

fn pow10(e: u64) -> Option<i128> {
    10i128.checked_pow(u32::try_from(e).ok()?)
}

/// A reduced rational: gcd(|num|, den) = 1, den > 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ratio {
    num: i128,
    den: i128,
}

impl Ratio {
    const ZERO: Ratio = Ratio { num: 0, den: 1 };
    const ONE: Ratio = Ratio { num: 1, den: 1 };

    /// `num / den` reduced; `den` must be > 0.
    fn new(num: i128, den: i128) -> Ratio {
        let g = gcd(num.unsigned_abs(), den.unsigned_abs()) as i128;
        Ratio {
            num: num / g,
            den: den / g,
        }
    }

    fn neg(self) -> Option<Ratio> {
        Some(Ratio {
            num: self.num.checked_neg()?,
            den: self.den,
        })
    }

    /// `self / other`; None on division by zero or overflow.
    fn div(&self, other: &Ratio) -> Option<Ratio> {
        if other.num == 0 {
            return None;
        }
        // (a/b) / (c/d) = (a*d) / (b*c), cross-reduced first to delay overflow.
        let g1 = gcd(self.num.unsigned_abs(), other.num.unsigned_abs()).max(1) as i128;
        let g2 = gcd(self.den.unsigned_abs(), other.den.unsigned_abs()) as i128;
        let mut num = (self.num / g1).checked_mul(other.den / g2)?;
        let mut den = (self.den / g2).checked_mul(other.num / g1)?;
        if den < 0 {
            num = num.checked_neg()?;
            den = den.checked_neg()?;
        }
        Some(Ratio::new(num, den))
    }

    /// Integer, terminating decimal, or "p/q".
    fn key(&self) -> String {
        if self.den == 1 {
            return self.num.to_string();
        }
        let (mut twos, mut fives, mut rest) = (0u32, 0u32, self.den.unsigned_abs());
        while rest.is_multiple_of(2) {
            rest /= 2;
            twos += 1;
        }
        while rest.is_multiple_of(5) {
            rest /= 5;
            fives += 1;
        }
        let k = twos.max(fives);
        let scaled = (rest == 1)
            .then(|| 10i128.checked_pow(k))
            .flatten()
            .and_then(|p| self.num.checked_mul(p / self.den));
        let Some(scaled) = scaled else {
            return format!("{}/{}", self.num, self.den);
        };
        let sign = if scaled < 0 { "-" } else { "" };
        let abs = scaled.unsigned_abs();
        let p = 10u128.pow(k);
        format!("{sign}{}.{:0width$}", abs / p, abs % p, width = k as usize)
    }
}

fn gcd(mut a: u128, mut b: u128) -> u128 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(s: &str) -> String {
        Equivalence::Numeric.key(s)
    }

    fn exact(s: &str) -> String {
        Equivalence::Exact.key(s)
    }

    #[test]
    fn parse_and_as_str() {
        assert_eq!(Equivalence::parse("exact"), Ok(Equivalence::Exact));
        assert_eq!(Equivalence::parse("numeric"), Ok(Equivalence::Numeric));
        assert_eq!(Equivalence::Numeric.as_str(), "numeric");
        assert_eq!(Equivalence::Exact.as_str(), "exact");
        assert_eq!(
            Equivalence::parse("Numeric"),
            Err("`equivalence` must be one of \"exact\" or \"numeric\", given \"Numeric\"".into())
        );
    }

    #[test]
    fn exact_key_cleanup() {
        assert_eq!(exact("  $x +   1$. "), "x + 1");
        assert_eq!(exact("Paris."), "Paris");
        assert_eq!(exact("$$\\pi$$"), "\\pi");
        assert_eq!(exact("a\n\tb"), "a b");
        assert_eq!(exact("$12"), "$12");
        assert_eq!(exact("..."), "");
        assert_eq!(exact("1,234"), "1,234");
    }

    #[test]
    fn numeric_integers_agree() {
        for s in [
            "12", "12.0", "$12", "12.", "+12", "012", "12%", "12\\%", "$12.00", " $12$ ",
        ] {
            assert_eq!(num(s), "12", "{s}");
        }
        assert_eq!(num("1,234"), "1234");
        assert_eq!(num("1,234,567.50"), "1234567.5");
        assert_eq!(num("-3"), "-3");
        assert_eq!(num("\u{2212}3"), "-3");
        assert_eq!(num("- 3"), "-3");
        assert_eq!(num("-0"), "0");
        assert_eq!(num("-0.0"), "0");
        assert_eq!(num("0"), "0");
    }

    #[test]
    fn numeric_decimals_and_exponents() {
        assert_eq!(num("3.50"), "3.5");
        assert_eq!(num(".5"), "0.5");
        assert_eq!(num("-.25"), "-0.25");
        assert_eq!(num("1e3"), "1000");
        assert_eq!(num("1E+3"), "1000");
        assert_eq!(num("1.5e-3"), "0.0015");
        assert_eq!(num("2.5e1"), "25");
        assert_eq!(num("0.1"), "0.1");
    }

    #[test]
    fn numeric_fractions_are_exact_rationals() {
        assert_eq!(num("3/4"), "0.75");
        assert_eq!(num("\\frac{3}{4}"), "0.75");
        assert_eq!(num("\\dfrac{3}{4}"), "0.75");
        assert_eq!(num("\\tfrac{6}{8}"), "0.75");
        assert_eq!(num("-\\frac{1}{2}"), "-0.5");
        assert_eq!(num("\\frac{-1}{2}"), "-0.5");
        assert_eq!(num("1/-2"), "-0.5");
        assert_eq!(num("-1/-2"), "0.5");
        assert_eq!(num("1/3"), "1/3");
        assert_eq!(num("2/6"), "1/3");
        assert_eq!(num("-4/6"), "-2/3");
        assert_eq!(num("8/4"), "2");
        assert_eq!(num("1.5/0.5"), "3");
        assert_eq!(num("7/40"), "0.175");
        assert_ne!(num("0.333"), num("1/3"));
        assert_eq!(num("0.5"), num("1/2"));
    }

    #[test]
    fn numeric_falls_back_to_exact_for_non_numbers() {
        assert_eq!(num("twelve"), "twelve");
        assert_eq!(num("$x$."), "x");
        assert_eq!(num("3/0"), "3/0");
        assert_eq!(num("1,23"), "1,23");
        assert_eq!(num("12 apples"), "12 apples");
        assert_eq!(num("1e"), "1e");
        assert_eq!(num("\\frac{1}{2} + 1"), "\\frac{1}{2} + 1");
        assert_eq!(num("1e99999999999999999999"), "1e99999999999999999999");
        assert_eq!(num(""), "");
        assert_eq!(num("-"), "-");
        assert_eq!(num("--3"), "--3");
        assert_eq!(num("+-3"), "+-3");
        assert_eq!(num("."), "");
        assert_eq!(num("$"), "$");
    }

    proptest::proptest! {
        /// `key` is total, and a key is its own key (for both equivalences).
        #[test]
        fn key_is_total_and_idempotent(s in proptest::prop_oneof![
            proptest::prelude::any::<String>(),
            "[-+$ ]{0,2}[0-9,]{0,12}([.][0-9]{0,6})?([eE][-+]?[0-9]{1,3})?(/[-0-9]{1,4})?[%. ]{0,2}",
            "-?\\\\[dt]?frac[{][0-9]{1,3}[}][{]-?[0-9]{1,3}[}]",
        ]) {
            for eq in [Equivalence::Exact, Equivalence::Numeric] {
                let k = eq.key(&s);
                proptest::prop_assert_eq!(eq.key(&k), k.clone(), "{:?} {:?}", eq, s);
            }
        }
    }

    #[test]
    fn numeric_overflow_takes_the_f64_path() {
        // 1e40 does not fit i128: nearest double, shortest round-trip formatting.
        let big = num("1e40");
        assert_eq!(big, "10000000000000000000000000000000000000000");
        assert_eq!(num("10000000000000000000000000000000000000000"), big);
        assert_eq!(num("1e-50"), format!("{}", 1e-50f64));
        // i128::MAX fits; one more digit does not.
        assert_eq!(
            num("170141183460469231731687303715884105727"),
            "170141183460469231731687303715884105727"
        );
        assert_eq!(num("1e-300/1e-300"), "1");
        // trailing zeros never force the f64 path
        assert_eq!(num(&format!("1.{}", "0".repeat(60))), "1");
        assert_eq!(num(&format!("{}1", "0".repeat(60))), "1");
    }
}
