//! Error-message normalization for the `error` label (SPEC §5).
//!
//! Free text from a provider would explode a label's cardinality: every
//! `connect ECONNREFUSED 10.1.2.3:4432` differs by address. The variable parts —
//! URLs, e-mail addresses, UUIDs, IP addresses and ports, hex ids, numbers and
//! quoted strings — become placeholders, control characters and runs of
//! whitespace become one space, and the result is cut to [`MAX_LEN`] characters.
//! A single left-to-right pass with no regular expressions: this runs for every
//! failed attempt.

/// Longest normalized value, in characters.
pub const MAX_LEN: usize = 80;

/// Normalizes a provider's error message. Returns `None` for a message that is
/// empty after normalization (the caller then uses `http_<code>` or `unknown`).
pub fn normalize_error(msg: &str) -> Option<String> {
    let chars: Vec<char> = msg.chars().collect();
    let mut out = String::with_capacity(msg.len().min(MAX_LEN * 2));
    let mut i = 0;
    let mut pending_space = false;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() || c.is_control() {
            pending_space = !out.is_empty();
            i += 1;
            continue;
        }
        if pending_space {
            out.push(' ');
            pending_space = false;
        }
        let at_word_start = i == 0 || !is_word(chars[i - 1]);
        if at_word_start && let Some((len, ph)) = placeholder_at(&chars[i..]) {
            out.push_str(ph);
            i += len;
            continue;
        }
        if (c == '"' || c == '\'' || c == '`')
            && let Some(end) = chars[i + 1..].iter().position(|&q| q == c)
        {
            out.push_str("<str>");
            i += end + 2;
            continue;
        }
        out.push(c);
        i += 1;
    }
    // Trimmed, cut to MAX_LEN characters, trimmed again: in place.
    out.truncate(out.trim_end().len());
    if out.is_empty() {
        return None;
    }
    if let Some((cut, _)) = out.char_indices().nth(MAX_LEN) {
        out.truncate(cut);
        out.truncate(out.trim_end().len());
    }
    Some(out)
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn token_len(s: &[char], ok: impl Fn(char) -> bool) -> usize {
    s.iter().take_while(|&&c| ok(c)).count()
}

/// The placeholder for the variable part starting at `s[0]`, and its length.
fn placeholder_at(s: &[char]) -> Option<(usize, &'static str)> {
    // URL: scheme://… up to whitespace or a closing quote/bracket.
    let scheme = token_len(s, |c| {
        c.is_ascii_alphanumeric() || c == '+' || c == '.' || c == '-'
    });
    if scheme > 0 && s.get(scheme..scheme + 3) == Some(&[':', '/', '/']) {
        let rest = token_len(&s[scheme + 3..], |c| {
            !(c.is_whitespace() || matches!(c, '"' | '\'' | '`' | '<' | '>' | ')' | ']' | ','))
        });
        return Some((scheme + 3 + rest, "<url>"));
    }
    // E-mail: local@domain.tld
    let local = token_len(s, |c| {
        c.is_alphanumeric() || matches!(c, '.' | '_' | '%' | '+' | '-')
    });
    if local > 0 && s.get(local) == Some(&'@') {
        let dom = token_len(&s[local + 1..], |c| {
            c.is_alphanumeric() || c == '.' || c == '-'
        });
        let domain: String = s[local + 1..local + 1 + dom].iter().collect();
        let domain = domain.trim_end_matches('.');
        if domain.contains('.') {
            return Some((local + 1 + domain.chars().count(), "<email>"));
        }
    }
    // UUID 8-4-4-4-12
    if s.len() >= 36 && is_uuid(&s[..36]) && s.get(36).is_none_or(|c| !is_word(*c)) {
        return Some((36, "<uuid>"));
    }
    // Bracketed IPv6 with optional port: [::1]:8080
    if s[0] == '[' {
        let inner = token_len(&s[1..], |c| c.is_ascii_hexdigit() || c == ':' || c == '.');
        if inner >= 2 && s.get(1 + inner) == Some(&']') && s[1..1 + inner].contains(&':') {
            let mut len = inner + 2;
            len += port_len(&s[len..]);
            return Some((
                len,
                if len > inner + 2 {
                    "<ip>:<port>"
                } else {
                    "<ip>"
                },
            ));
        }
    }
    // IPv4 with optional :port
    if let Some(len) = ipv4_len(s) {
        let port = port_len(&s[len..]);
        return Some((len + port, if port > 0 { "<ip>:<port>" } else { "<ip>" }));
    }
    // Bare IPv6: hex groups with at least two colons.
    let v6 = token_len(s, |c| c.is_ascii_hexdigit() || c == ':');
    if v6 >= 3
        && s[..v6].iter().filter(|&&c| c == ':').count() >= 2
        && s.get(v6).is_none_or(|c| !is_word(*c))
    {
        // Avoid eating "a::b"-like words only when they have hex digits and colons.
        if s[..v6].iter().any(|c| c.is_ascii_hexdigit()) || v6 == 2 {
            return Some((v6, "<ip>"));
        }
    }
    // Hex id: 8+ hex digits with at least one digit and one letter, or 0x-prefixed.
    if s.len() > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X') {
        let h = token_len(&s[2..], |c| c.is_ascii_hexdigit());
        if h > 0 && s.get(2 + h).is_none_or(|c| !is_word(*c)) {
            return Some((2 + h, "<hex>"));
        }
    }
    let w = token_len(s, is_word);
    let word = &s[..w];
    if w >= 8
        && word.iter().all(|c| c.is_ascii_hexdigit())
        && word.iter().any(|c| c.is_ascii_digit())
        && word.iter().any(|c| c.is_ascii_alphabetic())
    {
        return Some((w, "<hex>"));
    }
    // Numbers (with decimals) at the start of a word, units kept: "3000ms" → "<n>ms".
    // Digits inside a word ("ipv4", "ERR_H2") are part of the word.
    if s[0].is_ascii_digit() {
        let mut n = token_len(s, |c| c.is_ascii_digit());
        if s.get(n) == Some(&'.') && s.get(n + 1).is_some_and(|c| c.is_ascii_digit()) {
            n += 1 + token_len(&s[n + 1..], |c| c.is_ascii_digit());
        }
        return Some((n, "<n>"));
    }
    None
}

fn is_uuid(s: &[char]) -> bool {
    s.iter().enumerate().all(|(i, c)| match i {
        8 | 13 | 18 | 23 => *c == '-',
        _ => c.is_ascii_hexdigit(),
    })
}

fn ipv4_len(s: &[char]) -> Option<usize> {
    let mut i = 0;
    for octet in 0..4 {
        let d = token_len(&s[i..], |c| c.is_ascii_digit());
        if d == 0 || d > 3 {
            return None;
        }
        i += d;
        if octet < 3 {
            if s.get(i) != Some(&'.') {
                return None;
            }
            i += 1;
        }
    }
    if s.get(i).is_some_and(|c| {
        is_word(*c) || *c == '.' && s.get(i + 1).is_some_and(|c| c.is_ascii_digit())
    }) {
        return None;
    }
    Some(i)
}

fn port_len(s: &[char]) -> usize {
    if s.first() != Some(&':') {
        return 0;
    }
    let d = token_len(&s[1..], |c| c.is_ascii_digit());
    if d == 0 || d > 5 || s.get(1 + d).is_some_and(|c| is_word(*c)) {
        0
    } else {
        1 + d
    }
}

#[cfg(test)]
mod tests {
    use super::normalize_error as n;

    #[test]
    fn addresses_share_one_value() {
        assert_eq!(
            n("connect ECONNREFUSED 10.1.2.3:4432").as_deref(),
            Some("connect ECONNREFUSED <ip>:<port>")
        );
        assert_eq!(
            n("connect ECONNREFUSED 10.9.8.7:51000"),
            n("connect ECONNREFUSED 10.1.2.3:4432")
        );
        assert_eq!(
            n("connect ECONNREFUSED [::1]:80").as_deref(),
            Some("connect ECONNREFUSED <ip>:<port>")
        );
        assert_eq!(
            n("host fe80::1ff:fe23:4567:890a down").as_deref(),
            Some("host <ip> down")
        );
    }

    #[test]
    fn variable_parts_become_placeholders() {
        assert_eq!(
            n("POST https://hooks.example.com/a/b?x=1 timed out after 30000 ms").as_deref(),
            Some("POST <url> timed out after <n> ms")
        );
        assert_eq!(
            n("user bob.smith+x@example.co.uk rejected").as_deref(),
            Some("user <email> rejected")
        );
        assert_eq!(
            n("request 123e4567-e89b-12d3-a456-426614174000 failed").as_deref(),
            Some("request <uuid> failed")
        );
        assert_eq!(
            n("object 6229ffa1b2c3d4e5cade3e3d9 missing").as_deref(),
            Some("object <hex> missing")
        );
        assert_eq!(
            n("bad value \"abc def\" and 'x'").as_deref(),
            Some("bad value <str> and <str>")
        );
        assert_eq!(n("took 1.25s").as_deref(), Some("took <n>s"));
        assert_eq!(
            n("timeout of 3000ms exceeded"),
            n("timeout of 5000ms exceeded")
        );
    }

    #[test]
    fn words_with_digits_stay() {
        assert_eq!(n("ERRTIMEOUT").as_deref(), Some("ERRTIMEOUT"));
        assert_eq!(
            n("upstream error from ipv4 peer h2").as_deref(),
            Some("upstream error from ipv4 peer h2")
        );
        assert_eq!(n("socket hang up").as_deref(), Some("socket hang up"));
    }

    #[test]
    fn whitespace_and_control_characters_collapse() {
        assert_eq!(n("  a \n\t b\r\n  ").as_deref(), Some("a b"));
        assert_eq!(n(" \n\t "), None);
        assert_eq!(n(""), None);
    }

    #[test]
    fn long_messages_are_cut_to_80_chars() {
        let long = "é".repeat(500);
        let out = n(&long).expect("non-empty");
        assert_eq!(out.chars().count(), super::MAX_LEN);
        // A cut that ends on a space leaves no trailing space.
        let spaced = format!("{} tail of the message", "é".repeat(79));
        assert_eq!(n(&spaced), Some("é".repeat(79)));
    }
}
