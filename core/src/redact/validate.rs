//! Validators: the checks a candidate must pass after its pattern matched, so that only real
//! card numbers, SSNs, IBANs, addresses and credentials are redacted and look-alikes survive.

use std::net::Ipv6Addr;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

/// A named check, selectable for custom detectors in config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validator {
    /// Luhn checksum over the digits (13–19 of them).
    Luhn,
    /// Luhn plus a card network prefix and plausible digit grouping.
    CreditCard,
    /// US SSN: area not 000/666/9xx, group not 00, serial not 0000.
    UsSsn,
    /// 8 to 15 digits (E.164 allows at most 15).
    Phone,
    /// Four octets of at most 255, not part of a longer dotted number.
    Ipv4,
    /// Parses as an IPv6 address, not the unspecified address, not inside a longer token.
    Ipv6,
    /// ISO 13616 IBAN: length and mod-97 check.
    Iban,
    /// A JWT whose header decodes to a JSON object naming an `alg`.
    Jwt,
    /// An HTTP credential: Basic `user:pass` in base64, or a token that looks random.
    Credential,
    /// A secret that looks random: long enough, varied enough.
    Entropy,
    /// A password assignment that is not the shell's `PWD=`/`OLDPWD=` working directory.
    Password,
}

impl Validator {
    pub const NAMES: [&'static str; 11] = [
        "luhn",
        "credit_card",
        "us_ssn",
        "phone",
        "ipv4",
        "ipv6",
        "iban",
        "jwt",
        "credential",
        "entropy",
        "password",
    ];

    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "luhn" => Self::Luhn,
            "credit_card" => Self::CreditCard,
            "us_ssn" => Self::UsSsn,
            "phone" => Self::Phone,
            "ipv4" => Self::Ipv4,
            "ipv6" => Self::Ipv6,
            "iban" => Self::Iban,
            "jwt" => Self::Jwt,
            "credential" => Self::Credential,
            "entropy" => Self::Entropy,
            "password" => Self::Password,
            _ => return None,
        })
    }

    /// Whether `hay[start..end]`, the value a detector found, passes. The whole haystack is
    /// given so checks can look at the characters around the value.
    pub fn check(self, hay: &str, start: usize, end: usize) -> bool {
        let Some(value) = hay.get(start..end) else {
            return false;
        };
        match self {
            Self::Luhn => {
                let digits = digits(value);
                (13..=19).contains(&digits.len()) && luhn(&digits)
            }
            Self::CreditCard => {
                credit_card(value)
                    && !in_hyphenated_token(hay, start, end)
                    && !after_decimal_point(hay, start)
            }
            Self::UsSsn => us_ssn(value) && !in_hyphenated_token(hay, start, end),
            Self::Phone => {
                let digits = value.bytes().filter(u8::is_ascii_digit).count();
                (8..=15).contains(&digits) && !in_hyphenated_token(hay, start, end)
            }
            Self::Ipv4 => ipv4(hay, start, end),
            Self::Ipv6 => ipv6(hay, start, end),
            Self::Iban => iban(value),
            Self::Jwt => jwt(value),
            Self::Credential => credential(value),
            Self::Entropy => high_entropy(value),
            Self::Password => !working_directory(hay, start, value),
        }
    }
}

/// Whether the value at `start` follows `<digit>.`: the fraction of a number
/// (`0.4111111111111111`) or the next part of a dotted one (`10.0.0.1.4111 1111 1111 1111`, a
/// version or an OID, which is why the address in it is not taken either).
fn after_decimal_point(hay: &str, start: usize) -> bool {
    let bytes = hay.as_bytes();
    let before = |n: usize| start.checked_sub(n).and_then(|i| bytes.get(i)).copied();
    before(1) == Some(b'.') && before(2).is_some_and(|b| b.is_ascii_digit())
}

/// The ASCII digits of `s`, as numbers.
pub fn digits(s: &str) -> Vec<u8> {
    s.bytes()
        .filter(u8::is_ascii_digit)
        .map(|b| b - b'0')
        .collect()
}

pub fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 1 {
                let doubled = d * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                d
            }
        })
        .sum();
    !digits.is_empty() && sum.is_multiple_of(10)
}

fn number(digits: &[u8]) -> u32 {
    digits.iter().fold(0, |n, &d| n * 10 + u32::from(d))
}

fn credit_card(value: &str) -> bool {
    let d = digits(value);
    if !(13..=19).contains(&d.len()) || !luhn(&d) {
        return false;
    }
    // Separated numbers are written in groups of 3 to 6 (4-4-4-4, Amex 4-6-5, 4-4-4-4-3);
    // anything else is a list of small numbers that happens to pass Luhn.
    let mut groups = value.split([' ', '-']);
    if value.contains([' ', '-']) && groups.any(|g| !(3..=6).contains(&g.len())) {
        return false;
    }
    let prefix = |n: usize| d.get(..n).map(number).unwrap_or(0);
    let len = d.len();
    match d.first() {
        Some(2) => (2221..=2720).contains(&prefix(4)) && len == 16,
        Some(3) => match prefix(2) {
            34 | 37 => len == 15,
            35 => (3528..=3589).contains(&prefix(4)),
            30 | 36 | 38 | 39 => len >= 14,
            _ => false,
        },
        Some(4) => matches!(len, 13 | 16 | 19),
        Some(5) => (50..=59).contains(&prefix(2)),
        Some(6) => true,
        _ => false,
    }
}

fn us_ssn(value: &str) -> bool {
    let d = digits(value);
    let (Some(area), Some(group), Some(serial)) = (d.get(..3), d.get(3..5), d.get(5..9)) else {
        return false;
    };
    let area = number(area);
    d.len() == 9
        && area != 0
        && area != 666
        && area < 900
        && number(group) != 0
        && number(serial) != 0
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Whether `hay[start..end]` is the middle of a longer dash-joined token, like the digit
/// groups of a UUID (`26e7cedc-0629-4692-9268-f3659595e0d8`) or an order reference.
fn in_hyphenated_token(hay: &str, start: usize, end: usize) -> bool {
    let bytes = hay.as_bytes();
    let before = start
        .checked_sub(2)
        .and_then(|i| bytes.get(i..start))
        .is_some_and(|b| matches!(b, [c, b'-'] if c.is_ascii_alphanumeric()));
    let after = bytes
        .get(end..end + 2)
        .is_some_and(|b| matches!(b, [b'-', c] if c.is_ascii_alphanumeric()));
    before || after
}

/// `PWD=/home/x` (sudo and shell logs): a directory, not a password.
fn working_directory(hay: &str, start: usize, value: &str) -> bool {
    let key = hay.get(..start).unwrap_or_default();
    key.ends_with("PWD=") && (value.starts_with('/') || value.starts_with('~'))
}

fn ipv4(hay: &str, start: usize, end: usize) -> bool {
    let bytes = hay.as_bytes();
    // "1.2.3.4.5" and "v1.2.3.4" are version numbers, not addresses.
    let before = start.checked_sub(1).and_then(|i| bytes.get(i)).copied();
    // Nor is "Chrome/120.0.0.0", the reduced user-agent version.
    let before2 = start.checked_sub(2).and_then(|i| bytes.get(i)).copied();
    if before == Some(b'/')
        && before2.is_some_and(|b| b.is_ascii_alphabetic())
        && hay.get(start..end).is_some_and(|v| v.ends_with(".0.0.0"))
    {
        return false;
    }
    let after = bytes.get(end).copied();
    let after2 = bytes.get(end + 1).copied();
    if before.is_some_and(|b| b == b'.' || b == b']' || is_word_byte(b))
        || (after == Some(b'.') && after2.is_some_and(|b| b.is_ascii_digit()))
    {
        return false;
    }
    let Some(value) = hay.get(start..end) else {
        return false;
    };
    let mut octets = 0;
    value.split('.').all(|o| {
        octets += 1;
        octets <= 4 && !o.is_empty() && o.len() <= 3 && o.parse::<u16>().is_ok_and(|n| n <= 255)
    }) && octets == 4
}

fn ipv6(hay: &str, start: usize, end: usize) -> bool {
    let bytes = hay.as_bytes();
    let before = start.checked_sub(1).and_then(|i| bytes.get(i)).copied();
    let after = bytes.get(end).copied();
    // Inside a longer token ("std::vec", a MAC address, a hash) it is not an address.
    // `]` ends a redaction marker: what follows it was part of the redacted token.
    if before.is_some_and(|b| is_word_byte(b) || b == b':' || b == b'.' || b == b']')
        || after.is_some_and(|b| is_word_byte(b) || b == b':')
    {
        return false;
    }
    let Some(value) = hay.get(start..end) else {
        return false;
    };
    value.matches(':').count() >= 2 && value.parse::<Ipv6Addr>().is_ok_and(|a| !a.is_unspecified())
}

fn iban(value: &str) -> bool {
    let compact: Vec<u8> = value.bytes().filter(|b| *b != b' ').collect();
    if !(15..=34).contains(&compact.len()) {
        return false;
    }
    let (head, tail) = compact.split_at(4);
    let mut remainder: u32 = 0;
    for &b in tail.iter().chain(head) {
        let n = match b {
            b'0'..=b'9' => u32::from(b - b'0'),
            b'A'..=b'Z' => u32::from(b - b'A') + 10,
            _ => return false,
        };
        remainder = if n >= 10 {
            (remainder * 100 + n) % 97
        } else {
            (remainder * 10 + n) % 97
        };
    }
    remainder == 1
}

fn jwt(value: &str) -> bool {
    let Some(header) = value.split('.').next() else {
        return false;
    };
    let Ok(decoded) = URL_SAFE_NO_PAD.decode(header.trim_end_matches('=')) else {
        return false;
    };
    serde_json::from_slice::<serde_json::Value>(&decoded)
        .is_ok_and(|h| h.get("alg").is_some_and(serde_json::Value::is_string))
}

fn credential(value: &str) -> bool {
    let basic = STANDARD
        .decode(value)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .is_some_and(|s| s.contains(':') && !s.chars().any(char::is_control));
    basic || high_entropy(value)
}

/// Shannon entropy in bits per character.
pub fn shannon_entropy(s: &str) -> f64 {
    let mut counts = [0u32; 256];
    for b in s.bytes() {
        if let Some(c) = counts.get_mut(usize::from(b)) {
            *c += 1;
        }
    }
    let len = s.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / len;
            -p * p.log2()
        })
        .sum()
}

/// Long enough, varied enough, and mixing character classes the way generated secrets do;
/// words ("expired", "authentication") do not pass.
fn high_entropy(value: &str) -> bool {
    let classes = [
        value.bytes().any(|b| b.is_ascii_lowercase()),
        value.bytes().any(|b| b.is_ascii_uppercase()),
        value.bytes().any(|b| b.is_ascii_digit()),
        value.bytes().any(|b| !b.is_ascii_alphanumeric()),
    ]
    .iter()
    .filter(|&&c| c)
    .count();
    value.len() >= 12 && classes >= 2 && shannon_entropy(value) >= 3.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(v: Validator, s: &str) -> bool {
        v.check(s, 0, s.len())
    }

    #[test]
    fn cards_need_luhn_network_and_grouping() {
        assert!(ok(Validator::CreditCard, "4111111111111111"));
        assert!(ok(Validator::CreditCard, "4111 1111 1111 1111"));
        assert!(ok(Validator::CreditCard, "3782-822463-10005"));
        assert!(ok(Validator::CreditCard, "5555555555554444"));
        assert!(ok(Validator::CreditCard, "2223003122003222"));
        assert!(!ok(Validator::CreditCard, "4111111111111112"), "Luhn");
        assert!(
            !ok(Validator::CreditCard, "1234567812345670"),
            "no network starts with 1"
        );
        assert!(
            !ok(Validator::CreditCard, "41 11 11 11 11 11 11 11"),
            "grouping"
        );
        assert!(ok(Validator::Luhn, "1234567812345670"));
    }

    /// Found by the idempotence property: `10.0.0.1.4111 1111 1111 1111` kept the address (a
    /// fifth dotted part follows it) but masked the card, and the next pass, seeing the
    /// address followed by a marker, took it. Digits after `<digit>.` are not a card either.
    #[test]
    fn digits_after_a_decimal_point_are_not_a_card() {
        let card = "4111 1111 1111 1111";
        for (text, expected) in [
            (format!("10.0.0.1.{card}"), false),
            (format!("ratio 0.{card}"), false),
            (format!("card: {card}"), true),
            (format!("v.{card}"), true),
        ] {
            let start = text.len() - card.len();
            assert_eq!(
                Validator::CreditCard.check(&text, start, text.len()),
                expected,
                "{text}"
            );
        }
    }

    #[test]
    fn numbers_inside_dashed_ids_are_not_pii() {
        let uuid = "26e7cedc-0629-4692-9268-f3659595e0d8";
        assert!(!Validator::Phone.check(uuid, 9, 23));
        assert!(Validator::Phone.check("call 020-7946-0958 now", 5, 18));
    }

    #[test]
    fn ssn_rules() {
        assert!(ok(Validator::UsSsn, "123-45-6789"));
        for bad in [
            "000-12-3456",
            "666-12-3456",
            "912-12-3456",
            "123-00-4567",
            "123-45-0000",
        ] {
            assert!(!ok(Validator::UsSsn, bad), "{bad}");
        }
    }

    #[test]
    fn ip_addresses_and_their_look_alikes() {
        assert!(ok(Validator::Ipv4, "192.168.1.20"));
        assert!(!ok(Validator::Ipv4, "256.1.1.1"));
        let hay = "version 1.2.3.4.5";
        assert!(!Validator::Ipv4.check(hay, 8, 15));
        assert!(ok(Validator::Ipv6, "2001:db8::8a2e:370:7334"));
        assert!(ok(Validator::Ipv6, "fe80::1"));
        assert!(!ok(Validator::Ipv6, "::"));
        assert!(!ok(Validator::Ipv6, "12:30:45"));
        assert!(!ok(Validator::Ipv6, "00:1a:2b:3c:4d:5e"));
        let hay = "Vec::new";
        assert!(!Validator::Ipv6.check(hay, 2, 5));
    }

    #[test]
    fn iban_mod_97() {
        assert!(ok(Validator::Iban, "DE89370400440532013000"));
        assert!(ok(Validator::Iban, "GB82 WEST 1234 5698 7654 32"));
        assert!(!ok(Validator::Iban, "DE89370400440532013001"));
    }

    #[test]
    fn jwt_header_must_name_an_algorithm() {
        let jwt = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
        assert!(ok(Validator::Jwt, jwt));
        assert!(!ok(Validator::Jwt, "eyJmb28iOiJiYXIifQ.eyJzdWIiOiIxIn0.x"));
    }

    #[test]
    fn credentials_and_entropy() {
        assert!(ok(Validator::Credential, "dXNlcjpwYXNz"), "basic user:pass");
        assert!(ok(Validator::Credential, "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MA"));
        assert!(!ok(Validator::Credential, "authentication"));
        assert!(!ok(Validator::Entropy, "expired"));
        assert!(!ok(Validator::Entropy, "aaaaaaaaaaaaaaaa1"));
        assert!(ok(Validator::Entropy, "q8Xz2LmN4vB7pR1s"));
    }
}
