//! CSV as Excel writes it (issue 18): any of its charsets, any of its delimiters, decimal
//! commas.
//!
//! Excel's plain "CSV" is Windows-1252 (or the system's ANSI code page), "CSV UTF-8" is UTF-8
//! with a byte order mark, "Unicode Text" is UTF-16 with tabs; where the decimal separator is
//! a comma, Excel separates fields with `;`. The charset comes from the `Content-Type`
//! (`charset=`) or `--encoding`, a byte order mark wins over it, UTF-8 by default; bytes that
//! are not of the charset are refused naming it (never replaced silently). The delimiter is
//! the one given, else the one of `,` `;` tab the header line holds most of.

use encoding_rs::{DecoderResult, Encoding, UTF_8};
use std::io::{BufRead, Read};

/// The encoding a `charset` label names (WHATWG labels: `windows-1252`, `latin1`, `utf-16`, …).
///
/// # Errors
///
/// The label, when it names no encoding.
pub fn encoding(label: &str) -> Result<&'static Encoding, String> {
    Encoding::for_label(label.trim().as_bytes()).ok_or_else(|| format!("charset '{}' is not one officebridge knows", label.trim()))
}

/// The `charset` parameter of a media type, if it has one.
pub fn charset_of(media: &str) -> Option<&str> {
    media.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim().eq_ignore_ascii_case("charset").then(|| v.trim().trim_matches('"'))
    })
}

/// A delimiter as given (`,`, `;`, `tab` or a tab, `|`).
///
/// # Errors
///
/// What it accepts, when it is none of those.
pub fn delimiter(raw: &str) -> Result<u8, String> {
    match raw {
        "," => Ok(b','),
        ";" => Ok(b';'),
        "\t" | "tab" | "\\t" => Ok(b'\t'),
        "|" => Ok(b'|'),
        other => Err(format!("'{other}' is not a delimiter: use ',', ';', 'tab' or '|'")),
    }
}

/// A decimal separator as given: `,` (decimal commas) or `.`.
///
/// # Errors
///
/// What it accepts, when it is neither.
pub fn decimal(raw: &str) -> Result<bool, String> {
    match raw {
        "," => Ok(true),
        "." => Ok(false),
        other => Err(format!("'{other}' is not '.' or ','")),
    }
}

/// The delimiter of the header line `head` (the start of the input): the one of `,` `;` tab
/// it holds most of outside quotes; `,` when it holds none.
pub fn sniff(head: &[u8]) -> u8 {
    let mut counts = [0usize; 3];
    let mut quoted = false;
    for &b in head {
        match b {
            b'"' => quoted = !quoted,
            b'\n' | b'\r' if !quoted => break,
            b',' if !quoted => counts[0] += 1,
            b';' if !quoted => counts[1] += 1,
            b'\t' if !quoted => counts[2] += 1,
            _ => {}
        }
    }
    let best = (0..3).max_by_key(|&i| (counts[i], usize::from(i == 0))).unwrap_or(0);
    if counts[best] == 0 { b',' } else { [b',', b';', b'\t'][best] }
}

/// The delimiters a header line holds outside quotes, for telling a wrong `?delimiter=`.
pub fn holds(head: &[u8], delimiter: u8) -> bool {
    let mut quoted = false;
    for &b in head {
        match b {
            b'"' => quoted = !quoted,
            b'\n' | b'\r' if !quoted => return false,
            d if d == delimiter && !quoted => return true,
            _ => {}
        }
    }
    false
}

/// `1.234,56` (decimal comma, points or spaces grouping thousands) as `1234.56`; other
/// text unchanged.
pub fn decimal_comma(value: &str) -> std::borrow::Cow<'_, str> {
    let t = value.trim();
    let numeric = !t.is_empty()
        && t.contains(',')
        && t.chars()
            .all(|c| c.is_ascii_digit() || matches!(c, ',' | '.' | ' ' | '\u{a0}' | '-' | '+' | '%'))
        && t.matches(',').count() == 1;
    if !numeric {
        return std::borrow::Cow::Borrowed(value);
    }
    std::borrow::Cow::Owned(t.replace(['.', ' ', '\u{a0}'], "").replace(',', "."))
}

/// Decodes `inner` from `encoding` (a byte order mark wins) into UTF-8 as it is read. Bytes
/// the encoding does not allow are an `InvalidData` error saying which encoding was expected.
pub struct Decoded<R> {
    inner: R,
    decoder: encoding_rs::Decoder,
    label: &'static str,
    out: Vec<u8>,
    pos: usize,
    done: bool,
}

impl<R: BufRead> Decoded<R> {
    pub fn new(inner: R, encoding: &'static Encoding) -> Self {
        Self {
            inner,
            // BOM sniffing: a UTF-8 or UTF-16 byte order mark wins over the label, and goes.
            decoder: encoding.new_decoder(),
            label: encoding.name(),
            out: Vec::new(),
            pos: 0,
            done: false,
        }
    }
}

impl<R: BufRead> BufRead for Decoded<R> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        while self.pos == self.out.len() && !self.done {
            let input = self.inner.fill_buf()?;
            let last = input.is_empty();
            let room = self
                .decoder
                .max_utf8_buffer_length_without_replacement(input.len())
                .unwrap_or(input.len() * 3 + 16)
                .max(16);
            self.out.resize(room, 0);
            self.pos = 0;
            let (result, read, written) = self.decoder.decode_to_utf8_without_replacement(input, &mut self.out, last);
            self.out.truncate(written);
            self.inner.consume(read);
            match result {
                DecoderResult::Malformed(_, _) => {
                    let hint = if self.label == UTF_8.name() {
                        "; save it from Excel as \"CSV UTF-8 (Comma delimited)\", or send its charset (text/csv; charset=windows-1252)"
                    } else {
                        ""
                    };
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("the CSV is not {}{hint}", self.label),
                    ));
                }
                DecoderResult::InputEmpty if last => self.done = true,
                DecoderResult::InputEmpty | DecoderResult::OutputFull => {}
            }
        }
        Ok(&self.out[self.pos..])
    }

    fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.out.len());
    }
}

impl<R: BufRead> Read for Decoded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(bytes: &[u8], enc: &'static Encoding) -> std::io::Result<String> {
        let mut s = String::new();
        Decoded::new(std::io::BufReader::with_capacity(3, bytes), enc).read_to_string(&mut s)?;
        Ok(s)
    }

    #[test]
    fn charsets_decode_and_a_bom_wins() {
        assert_eq!(decode(b"Caf\xe9;12,5\n", encoding("windows-1252").unwrap()).unwrap(), "Café;12,5\n");
        assert_eq!(decode(b"\xef\xbb\xbfCaf\xc3\xa9\n", UTF_8).unwrap(), "Café\n");
        // Excel's "Unicode Text": UTF-16LE with its BOM, whatever the label said.
        let utf16: Vec<u8> = [0xFF, 0xFE]
            .into_iter()
            .chain("Zoë\t1\n".encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        assert_eq!(decode(&utf16, UTF_8).unwrap(), "Zoë\t1\n");
        let e = decode(b"Caf\xe9\n", UTF_8).unwrap_err();
        assert!(e.to_string().contains("CSV UTF-8"), "{e}");
        assert!(encoding("klingon").is_err());
        assert_eq!(charset_of("text/csv; charset=\"windows-1252\""), Some("windows-1252"));
        assert_eq!(charset_of("text/csv"), None);
    }

    #[test]
    fn the_delimiter_is_the_one_the_header_holds_most_of() {
        assert_eq!(sniff(b"a,b,c\n1;2;3\n"), b',');
        assert_eq!(sniff(b"Name;Amount;Note\n"), b';');
        assert_eq!(sniff(b"\"a;b\",c\n"), b',');
        assert_eq!(sniff(b"a\tb\n"), b'\t');
        assert_eq!(sniff(b"single\n"), b',');
        assert!(holds(b"a;b\n", b';') && !holds(b"a;b\n", b','));
    }

    #[test]
    fn decimal_commas_become_points_and_nothing_else_changes() {
        assert_eq!(decimal_comma("12,50"), "12.50");
        assert_eq!(decimal_comma("1.234,56"), "1234.56");
        assert_eq!(decimal_comma("-0,5"), "-0.5");
        assert_eq!(decimal_comma("A,1"), "A,1");
        assert_eq!(decimal_comma("1,2,3"), "1,2,3");
        assert_eq!(decimal_comma("12.5"), "12.5");
    }
}
