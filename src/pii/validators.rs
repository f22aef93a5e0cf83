//! Check-digit and range validators. They run only on candidates the scanner has
//! already shaped, so they keep precision high at no cost on clean text.

/// Luhn check over ASCII digits.
pub fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, &d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(d.wrapping_sub(b'0'));
        if v > 9 {
            return false;
        }
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    !digits.is_empty() && sum % 10 == 0
}

/// The leading `n` digits as a number (digits must be ASCII digits).
fn prefix(digits: &[u8], n: usize) -> u32 {
    digits.iter().take(n).fold(0u32, |acc, &d| acc * 10 + u32::from(d.wrapping_sub(b'0') % 10))
}

/// Whether a card number of this length starts in a known issuer range
/// (Visa, Mastercard incl. 2-series, Amex, Discover, Diners, JCB, UnionPay, Maestro).
pub fn card_issuer_ok(digits: &[u8]) -> bool {
    let len = digits.len();
    let p1 = prefix(digits, 1);
    let p2 = prefix(digits, 2);
    let p3 = prefix(digits, 3);
    let p4 = prefix(digits, 4);
    let p6 = prefix(digits, 6);
    let visa = p1 == 4 && matches!(len, 13 | 16 | 19);
    let mastercard = ((51..=55).contains(&p2) || (2221..=2720).contains(&p4)) && len == 16;
    let amex = (p2 == 34 || p2 == 37) && len == 15;
    let discover = (p4 == 6011 || (644..=649).contains(&p3) || p2 == 65 || (622126..=622925).contains(&p6))
        && (16..=19).contains(&len);
    let diners = ((300..=305).contains(&p3) || p2 == 36 || p2 == 38 || p2 == 39) && (14..=19).contains(&len);
    let jcb = (3528..=3589).contains(&p4) && (16..=19).contains(&len);
    let unionpay = p2 == 62 && (16..=19).contains(&len);
    let maestro = (matches!(p4, 5018 | 5020 | 5038 | 5893 | 6304 | 6759 | 6761 | 6762 | 6763))
        && (13..=19).contains(&len);
    visa || mastercard || amex || discover || diners || jcb || unionpay || maestro
}

/// A credit card number: 13-19 digits, issuer range and Luhn.
pub fn credit_card(digits: &[u8]) -> bool {
    (13..=19).contains(&digits.len()) && card_issuer_ok(digits) && luhn(digits)
}

/// US SSN rules on the nine digits: area not 000, 666 or 9xx; group not 00;
/// serial not 0000.
pub fn ssn(digits: &[u8; 9]) -> bool {
    let area = prefix(digits, 3);
    let group = prefix(digits.get(3..5).unwrap_or(&[]), 2);
    let serial = prefix(digits.get(5..9).unwrap_or(&[]), 4);
    area != 0 && area != 666 && area < 900 && group != 0 && serial != 0
}

/// IBAN length per ISO country code (the registry's fixed lengths).
pub fn iban_length(country: [u8; 2]) -> Option<usize> {
    let n = match &country {
        b"AD" => 24, b"AE" => 23, b"AL" => 28, b"AT" => 20, b"AZ" => 28, b"BA" => 20,
        b"BE" => 16, b"BG" => 22, b"BH" => 22, b"BR" => 29, b"BY" => 28, b"CH" => 21,
        b"CR" => 22, b"CY" => 28, b"CZ" => 24, b"DE" => 22, b"DK" => 18, b"DO" => 28,
        b"EE" => 20, b"EG" => 29, b"ES" => 24, b"FI" => 18, b"FO" => 18, b"FR" => 27,
        b"GB" => 22, b"GE" => 22, b"GI" => 23, b"GL" => 18, b"GR" => 27, b"GT" => 28,
        b"HR" => 21, b"HU" => 28, b"IE" => 22, b"IL" => 23, b"IQ" => 23, b"IS" => 26,
        b"IT" => 27, b"JO" => 30, b"KW" => 30, b"KZ" => 20, b"LB" => 28, b"LC" => 32,
        b"LI" => 21, b"LT" => 20, b"LU" => 20, b"LV" => 21, b"MC" => 27, b"MD" => 24,
        b"ME" => 22, b"MK" => 19, b"MR" => 27, b"MT" => 31, b"MU" => 30, b"NL" => 18,
        b"NO" => 15, b"PK" => 24, b"PL" => 28, b"PS" => 29, b"PT" => 25, b"QA" => 29,
        b"RO" => 24, b"RS" => 22, b"SA" => 24, b"SC" => 31, b"SE" => 24, b"SI" => 19,
        b"SK" => 24, b"SM" => 27, b"ST" => 25, b"SV" => 28, b"TL" => 23, b"TN" => 24,
        b"TR" => 26, b"UA" => 29, b"VA" => 22, b"VG" => 24, b"XK" => 20,
        _ => return None,
    };
    Some(n)
}

/// ISO 13616 mod-97 check over an IBAN without spaces (upper-case letters, digits).
pub fn iban_mod97(iban: &[u8]) -> bool {
    if iban.len() < 5 {
        return false;
    }
    let (head, rest) = iban.split_at(4);
    let mut rem = 0u32;
    for &c in rest.iter().chain(head.iter()) {
        match c {
            b'0'..=b'9' => rem = (rem * 10 + u32::from(c - b'0')) % 97,
            b'A'..=b'Z' => rem = (rem * 100 + u32::from(c - b'A') + 10) % 97,
            _ => return false,
        }
    }
    rem == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_table() {
        for (n, ok) in [
            ("4111111111111111", true),
            ("4111111111111112", false),
            ("378282246310005", true),
            ("5555555555554444", true),
            ("2223003122003222", true),
            ("6011111111111117", true),
            ("0", true),
            ("", false),
        ] {
            assert_eq!(luhn(n.as_bytes()), ok, "{n}");
        }
    }

    #[test]
    fn issuers() {
        for (n, ok) in [
            ("4111111111111111", true),
            ("5555555555554444", true),
            ("2223003122003222", true),
            ("378282246310005", true),
            ("6011111111111117", true),
            ("3530111333300000", true),
            ("30569309025904", true),
            ("6200000000000005", true),
            ("1234567812345670", false),
            ("9111111111111111", false),
        ] {
            assert_eq!(credit_card(n.as_bytes()), ok, "{n}");
        }
    }

    #[test]
    fn ssn_rules() {
        for (n, ok) in [
            (b"123456789", true),
            (b"000456789", false),
            (b"666456789", false),
            (b"900456789", false),
            (b"123006789", false),
            (b"123450000", false),
        ] {
            assert_eq!(ssn(n), ok, "{:?}", std::str::from_utf8(n));
        }
    }

    #[test]
    fn iban_check() {
        assert!(iban_mod97(b"DE89370400440532013000"));
        assert!(iban_mod97(b"GB82WEST12345698765432"));
        assert!(!iban_mod97(b"GB82WEST12345698765433"));
        assert_eq!(iban_length(*b"DE"), Some(22));
        assert_eq!(iban_length(*b"ZZ"), None);
    }
}
