//! A validating JSON scanner for the one hot path: a page of logs.
//!
//! `serde_json` into borrowed raw values is general, and on a page of logs it
//! costs as much as everything else the exporter does with the page. This
//! scanner walks the bytes once, checks the JSON grammar as it goes, and hands
//! back slices of the raw text. It is deliberately partial: every method
//! returns `None` for anything outside the plain shape — invalid JSON, escaped
//! object keys, deep nesting — and the caller then decodes the body with
//! `serde_json`, which gives the answer (or the error) it always gave. So the
//! scanner never has to agree with `serde_json` on an edge case; it only has
//! to decline it. Where it accepts, it must produce exactly what `serde_json`
//! would: the differential tests in the providers hold it to that.
//!
//! What it accepts is what `serde_json` accepts when it skips a value
//! (`IgnoredAny`, `RawValue`): strings without control characters whose
//! escapes are `\" \\ \/ \b \f \n \r \t` or `\u` and four hex digits (a lone
//! surrogate is not checked there either), numbers in the JSON grammar,
//! `true`/`false`/`null`, objects and arrays. The input must be UTF-8 as a
//! whole (`serde_json` checks each raw value it returns).

/// Nesting the scanner follows below the value it was asked for; deeper
/// values are left to `serde_json` (whose own limit is 128 in all).
const MAX_DEPTH: u32 = 64;

/// Bytes that end the fast run inside a string: the quote, the backslash and
/// the control characters `serde_json` refuses.
static STRING_STOP: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 0x20 {
        t[c] = true;
        c += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// A cursor over a JSON text.
pub(crate) struct Scan<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Scan<'a> {
    /// A scanner over `text` (UTF-8 as a whole, as `serde_json` requires
    /// of every raw value it returns).
    pub(crate) fn new(text: &'a str) -> Scan<'a> {
        Scan { text, at: 0 }
    }

    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.bytes().get(self.at) {
            self.at += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        self.ws();
        (self.bytes().get(self.at) == Some(&c)).then(|| self.at += 1)
    }

    /// Whitespace, then the end of the text.
    pub(crate) fn end(mut self) -> Option<()> {
        self.ws();
        (self.at == self.text.len()).then_some(())
    }

    /// Enters an object: call [`Scan::next_key`] until it says the object ended.
    pub(crate) fn object(&mut self) -> Option<()> {
        self.eat(b'{')
    }

    /// The next key of the object being read, without its quotes (`None`
    /// inside: the object ended). Keys with escapes are declined: what they
    /// name is only known once unescaped.
    pub(crate) fn next_key(&mut self, first: &mut bool) -> Option<Option<&'a str>> {
        Some(match self.next_key_span(first)? {
            Some((start, end)) => Some(self.text.get(start + 1..end - 1)?),
            None => None,
        })
    }

    /// Like [`Scan::next_key`], but gives where the key's raw text (quotes
    /// included) lies in the text. The colon after it is read too.
    pub(crate) fn next_key_span(&mut self, first: &mut bool) -> Option<Option<(usize, usize)>> {
        if !self.next_member(first, b'}')? {
            return Some(None);
        }
        let start = self.at;
        if self.skip_string()? {
            return None;
        }
        let end = self.at;
        self.eat(b':')?;
        Some(Some((start, end)))
    }

    /// Where the cursor is.
    pub(crate) fn pos(&self) -> usize {
        self.at
    }

    /// The text between two positions.
    pub(crate) fn slice(&self, (start, end): (usize, usize)) -> Option<&'a str> {
        self.text.get(start..end)
    }

    /// How many bytes at the cursor repeat the text from `from` to `to`, an
    /// earlier stretch this scanner has read: the length of their common
    /// prefix. The caller may move past as much of the repeat as ends where
    /// the grammar leaves no choice (see [`Scan::skip_repeat`]).
    pub(crate) fn repeats(&self, from: usize, to: usize) -> usize {
        let b = self.bytes();
        match (b.get(from..to), b.get(self.at..)) {
            (Some(old), Some(new)) => common_prefix(old, new),
            _ => 0,
        }
    }

    /// Moves the cursor to `to`, past text that repeats, byte for byte, a
    /// stretch this scanner read in the same state and took: it reads the
    /// same way again. The caller must make sure the repeat ends where the
    /// earlier reading of it ended — after a closing quote, bracket or brace,
    /// or before the byte that ended a number or a literal, that byte
    /// included in the repeat (`1` is the start of `12`, `1,` is not).
    pub(crate) fn skip_repeat(&mut self, to: usize) {
        self.at = to;
    }

    /// Enters an array: call [`Scan::next_element`] until it says `false`.
    pub(crate) fn array(&mut self) -> Option<()> {
        self.eat(b'[')
    }

    /// Whether another element follows (the cursor is then on it).
    pub(crate) fn next_element(&mut self, first: &mut bool) -> Option<bool> {
        self.next_member(first, b']')
    }

    /// Whether another member of the object or array being read follows (the
    /// cursor is then on it) or the container ends at `close`: `[]` and
    /// `[1]`, never `[1,]` (the comma then leaves the cursor on `]`, which no
    /// member starts with).
    fn next_member(&mut self, first: &mut bool, close: u8) -> Option<bool> {
        self.ws();
        let c = *self.bytes().get(self.at)?;
        if c == close {
            self.at += 1;
            return Some(false);
        }
        if !*first {
            if c != b',' {
                return None;
            }
            self.at += 1;
            self.ws();
        }
        *first = false;
        Some(true)
    }

    /// The first byte of the next value, without consuming it.
    pub(crate) fn peek_value(&mut self) -> Option<u8> {
        self.ws();
        self.bytes().get(self.at).copied()
    }

    /// The next value, whole, as its raw text (what `serde_json` gives as a
    /// `RawValue`: no surrounding whitespace).
    pub(crate) fn value(&mut self) -> Option<&'a str> {
        let span = self.value_span()?;
        self.slice(span)
    }

    /// Where the next value lies in the text (as [`Scan::value`]).
    pub(crate) fn value_span(&mut self) -> Option<(usize, usize)> {
        self.ws();
        let start = self.at;
        self.skip(0)?;
        Some((start, self.at))
    }

    /// The next value if it is a string without escapes: its contents.
    pub(crate) fn plain_string(&mut self) -> Option<&'a str> {
        self.ws();
        let (raw, escaped) = self.string()?;
        (!escaped).then(|| &raw[1..raw.len() - 1])
    }

    fn skip(&mut self, depth: u32) -> Option<()> {
        match *self.bytes().get(self.at)? {
            b'"' => {
                self.skip_string()?;
            }
            b'{' => {
                if depth >= MAX_DEPTH {
                    return None;
                }
                self.at += 1;
                let mut first = true;
                while self.next_member(&mut first, b'}')? {
                    // Keys are skipped as strings, escapes and all, as serde_json
                    // skips them.
                    self.skip_string()?;
                    self.eat(b':')?;
                    self.ws();
                    self.skip(depth + 1)?;
                }
            }
            b'[' => {
                if depth >= MAX_DEPTH {
                    return None;
                }
                self.at += 1;
                let mut first = true;
                while self.next_element(&mut first)? {
                    self.skip(depth + 1)?;
                }
            }
            b't' => self.literal(b"true")?,
            b'f' => self.literal(b"false")?,
            b'n' => self.literal(b"null")?,
            b'-' | b'0'..=b'9' => self.number()?,
            _ => return None,
        }
        Some(())
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.at + word.len();
        (self.bytes().get(self.at..end)? == word).then(|| self.at = end)
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
    fn number(&mut self) -> Option<()> {
        let b = self.bytes();
        let digits = |mut i: usize| {
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            i
        };
        let mut i = self.at;
        if b.get(i) == Some(&b'-') {
            i += 1;
        }
        i = match *b.get(i)? {
            b'0' => i + 1,
            b'1'..=b'9' => digits(i + 1),
            _ => return None,
        };
        if b.get(i) == Some(&b'.') {
            let end = digits(i + 1);
            if end == i + 1 {
                return None;
            }
            i = end;
        }
        if let Some(b'e' | b'E') = b.get(i) {
            i += 1;
            if let Some(b'+' | b'-') = b.get(i) {
                i += 1;
            }
            let end = digits(i);
            if end == i {
                return None;
            }
            i = end;
        }
        self.at = i;
        Some(())
    }

    /// The string at the cursor: its raw text, quotes included, and whether
    /// it has escapes.
    fn string(&mut self) -> Option<(&'a str, bool)> {
        let start = self.at;
        let escaped = self.skip_string()?;
        Some((&self.text[start..self.at], escaped))
    }

    /// Moves past the string at the cursor; whether it has escapes.
    #[inline(always)]
    fn skip_string(&mut self) -> Option<bool> {
        let b = self.bytes();
        if b.get(self.at) != Some(&b'"') {
            return None;
        }
        let mut i = self.at + 1;
        let mut escaped = false;
        loop {
            // Eight bytes at a time to the first that ends the run; byte by
            // byte where fewer than eight are left.
            loop {
                match b.get(i..i + 8).and_then(|c| <[u8; 8]>::try_from(c).ok()) {
                    Some(chunk) => match first_stop(u64::from_le_bytes(chunk)) {
                        Some(n) => {
                            i += n;
                            break;
                        }
                        None => i += 8,
                    },
                    None => {
                        i += b
                            .get(i..)?
                            .iter()
                            .position(|c| STRING_STOP[usize::from(*c)])?;
                        break;
                    }
                }
            }
            match b[i] {
                b'"' => break,
                b'\\' => {
                    escaped = true;
                    i += match *b.get(i + 1)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => 2,
                        b'u' if b.get(i + 2..i + 6)?.iter().all(u8::is_ascii_hexdigit) => 6,
                        _ => return None,
                    };
                }
                // A control character.
                _ => return None,
            }
        }
        self.at = i + 1;
        Some(escaped)
    }
}

/// Whether `b` holds a quote, a backslash or a control character: eight
/// bytes at a time, the last eight (or a short `b` padded with spaces) as one
/// more word. Inside a valid JSON string only a backslash can be one.
pub(crate) fn has_string_stop(b: &[u8]) -> bool {
    let word = |w: &[u8]| <[u8; 8]>::try_from(w).map_or(0, u64::from_le_bytes);
    let Some(last) = b.len().checked_sub(8) else {
        let mut w = [b' '; 8];
        w[..b.len()].copy_from_slice(b);
        return first_stop(u64::from_le_bytes(w)).is_some();
    };
    let mut i = 0;
    while i < last {
        if first_stop(word(&b[i..i + 8])).is_some() {
            return true;
        }
        i += 8;
    }
    first_stop(word(&b[last..])).is_some()
}

/// The length of the common prefix of `a` and `b`, eight bytes at a time.
fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    let mut i = 0;
    while let (Some(x), Some(y)) = (a.get(i..i + 8), b.get(i..i + 8)) {
        let (Ok(x), Ok(y)) = (<[u8; 8]>::try_from(x), <[u8; 8]>::try_from(y)) else {
            break;
        };
        let diff = u64::from_le_bytes(x) ^ u64::from_le_bytes(y);
        if diff != 0 {
            return i + diff.trailing_zeros() as usize / 8;
        }
        i += 8;
    }
    i + a
        .get(i..)
        .unwrap_or_default()
        .iter()
        .zip(b.get(i..).unwrap_or_default())
        .take_while(|(x, y)| x == y)
        .count()
}

/// The index of the first of the eight bytes of `w` (little-endian: the
/// first byte is the lowest) that is in [`STRING_STOP`] — a quote, a
/// backslash or a byte below 0x20.
///
/// The usual SWAR tests for "a byte is zero" (after XOR with the quote or the
/// backslash) and "a byte is less than 0x20" set the high bit of every such
/// byte. They can also flag a byte that is not one, but only above a flagged
/// one (the borrow of a subtraction runs upwards), so the lowest flag is exact.
#[inline(always)]
fn first_stop(w: u64) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let quote = zero(w ^ (ONES * u64::from(b'"')));
    let backslash = zero(w ^ (ONES * u64::from(b'\\')));
    let control = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    let flags = quote | backslash | control;
    (flags != 0).then(|| flags.trailing_zeros() as usize / 8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::IgnoredAny;
    use serde_json::value::RawValue;

    /// The scanner's raw value of `text`, if it takes all of it.
    fn scan_value(text: &str) -> Option<&str> {
        let mut s = Scan::new(text);
        let v = s.value()?;
        s.end()?;
        Some(v)
    }

    /// serde_json's raw value of `text`.
    fn serde_value(text: &str) -> Option<&str> {
        serde_json::from_str::<&RawValue>(text)
            .ok()
            .map(|r| r.get())
    }

    #[test]
    fn accepts_what_serde_json_skips_and_slices_the_same() {
        for text in [
            r#""""#,
            r#""plain""#,
            r#""esc \" \\ \/ \b \f \n \r \t \u00e9 \uD800""#,
            "\"unicode é 中\"",
            "0",
            "-0",
            "12",
            "-12.5e+7",
            "1E5",
            "0.0001",
            "true",
            "false",
            "null",
            "{}",
            "[]",
            r#" { "a" : [1, {"b\"": null}], "c": "d" } "#,
            "[[[[]]]]",
        ] {
            assert_eq!(scan_value(text), serde_value(text), "{text}");
            assert!(scan_value(text).is_some(), "{text}");
        }
    }

    #[test]
    fn declines_what_serde_json_refuses() {
        for text in [
            "",
            " ",
            "\"open",
            "\"ctl \u{1} char\"",
            "\"tab \t\"",
            r#""bad \x escape""#,
            r#""short \u12""#,
            r#""hex \u12g4""#,
            "01",
            "-",
            "+1",
            ".5",
            "1.",
            "1e",
            "1e+",
            "tru",
            "nul",
            "{",
            "[",
            "{\"a\"}",
            "{\"a\":}",
            "{\"a\":1,}",
            "[1,]",
            "[,1]",
            "{,}",
            "{1:2}",
            "[1 2]",
            "1 2",
            "NaN",
            "\u{feff}{}",
        ] {
            assert_eq!(serde_value(text), None, "serde_json takes {text:?}");
            assert_eq!(scan_value(text), None, "scanner takes {text:?}");
        }
    }

    #[test]
    fn deep_nesting_is_left_to_serde_json() {
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert!(serde_json::from_str::<IgnoredAny>(&deep).is_ok());
        assert_eq!(scan_value(&deep), None);
        let ok = format!("{}{}", "[".repeat(60), "]".repeat(60));
        assert_eq!(scan_value(&ok), Some(ok.as_str()));
    }

    #[test]
    fn the_word_test_finds_exactly_the_first_stop_byte() {
        let naive = |w: [u8; 8]| w.iter().position(|c| STRING_STOP[usize::from(*c)]);
        let check = |w: [u8; 8]| assert_eq!(first_stop(u64::from_le_bytes(w)), naive(w), "{w:?}");
        // Every byte value at every position, among fills that sit next to
        // the stop bytes (a borrow from one must not hide or invent another).
        for fill in [
            b'a', b' ', b'!', b'#', b'[', b']', b'\\', b'"', 0, 0x1f, 0x21, 0x7f, 0x80, 0xa0, 0xff,
        ] {
            for pos in 0..8 {
                for c in 0..=255u8 {
                    let mut w = [fill; 8];
                    w[pos] = c;
                    check(w);
                }
            }
        }
        // And random words, weighted to the bytes near the stops.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let near = [
            0u8,
            1,
            0x1f,
            0x20,
            0x21,
            b'"' - 1,
            b'"',
            b'"' + 1,
            b'\\' - 1,
            b'\\',
            b'\\' + 1,
            0x7f,
            0x80,
            0x9f,
            0xa0,
            0xff,
        ];
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let w = x.to_le_bytes().map(|b| {
                if b & 1 == 0 {
                    near[usize::from(b >> 4)]
                } else {
                    b
                }
            });
            check(w);
        }
    }

    #[test]
    fn long_strings_cross_word_boundaries() {
        for n in 0..40 {
            for tail in ["", "\\n", "\\u00e9", "é"] {
                let text = format!("\"{}{tail}{}\"", "x".repeat(n), "y".repeat(n % 9));
                assert_eq!(scan_value(&text), serde_value(&text), "{text}");
                assert!(scan_value(&text).is_some(), "{text}");
                let bad = format!("\"{}\u{1}{}\"", "x".repeat(n), "y".repeat(n % 9));
                assert_eq!(scan_value(&bad), None, "{bad:?}");
                let open = format!("\"{}", "x".repeat(n));
                assert_eq!(scan_value(&open), None, "{open}");
            }
        }
    }

    #[test]
    fn common_prefix_finds_the_first_difference_at_every_position() {
        let a: Vec<u8> = (0..40u8).collect();
        for len in 0..=a.len() {
            assert_eq!(common_prefix(&a[..len], &a), len);
            assert_eq!(common_prefix(&a, &a[..len]), len);
            for at in 0..len {
                let mut b = a[..len].to_vec();
                b[at] ^= 0x80;
                assert_eq!(common_prefix(&a, &b), at, "{len} {at}");
            }
        }
    }

    #[test]
    fn has_string_stop_sees_every_stop_byte_at_every_position() {
        for len in 0..=24 {
            let plain = vec![b'a'; len];
            assert!(!has_string_stop(&plain), "{len}");
            for at in 0..len {
                for stop in [b'"', b'\\', 0x00, 0x1f, b'\n'] {
                    let mut b = plain.clone();
                    b[at] = stop;
                    assert!(has_string_stop(&b), "{len} {at} {stop}");
                }
                // Bytes next to the stops, and UTF-8, are not stops.
                for other in [b' ', b'!', b'#', b'[', b']', 0x7f, 0xc3, 0xff] {
                    let mut b = plain.clone();
                    b[at] = other;
                    assert!(!has_string_stop(&b), "{len} {at} {other}");
                }
            }
        }
    }

    #[test]
    fn keys_with_escapes_are_declined_plain_ones_given() {
        let mut s = Scan::new(r#"{"a": 1, "b\u0063": 2}"#);
        s.object().expect("object");
        let mut first = true;
        assert_eq!(s.next_key(&mut first), Some(Some("a")));
        assert_eq!(s.value(), Some("1"));
        assert_eq!(s.next_key(&mut first), None);
    }

    /// Every prefix and every one-byte change of a realistic text: wherever
    /// the scanner takes the text, serde_json takes it too, with the same raw
    /// value. (Whole pages are differential-tested in the providers.)
    #[test]
    fn truncations_and_mutations_never_disagree() {
        let text =
            r#"{"a": [1, -2.5e3, true, false, null], "s": "x\"y\u00e9", "o": {"k": {}}, "e": []}"#;
        let check = |t: &str| {
            if let Some(v) = scan_value(t) {
                assert_eq!(serde_value(t), Some(v), "{t:?}");
            }
        };
        for n in 0..=text.len() {
            check(&text[..n]);
        }
        let mut taken = 0;
        for i in 0..text.len() {
            for c in [
                b' ', b'"', b'\\', b',', b':', b'{', b'}', b'[', b']', b'0', b'e', b'.', b'-',
                b'\n', 1,
            ] {
                let mut b = text.as_bytes().to_vec();
                b[i] = c;
                if let Ok(t) = std::str::from_utf8(&b) {
                    check(t);
                    taken += usize::from(scan_value(t).is_some());
                }
            }
        }
        // Not vacuous: many one-byte changes are still JSON.
        assert!(taken > 100, "{taken}");
    }
}
