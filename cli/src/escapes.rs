//! Escapes for `cmdop session send`: `\n`, `\r`, `\t`, `\e` (escape), `\\` and `\xNN`.

/// Turns escaped text into bytes.
pub fn unescape(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match bytes.next() {
            Some(b'n') => out.push(b'\n'),
            Some(b'r') => out.push(b'\r'),
            Some(b't') => out.push(b'\t'),
            Some(b'e') => out.push(0x1b),
            Some(b'\\') => out.push(b'\\'),
            Some(b'x') => {
                let hex: Vec<u8> = bytes.by_ref().take(2).collect();
                let value = std::str::from_utf8(&hex)
                    .ok()
                    .filter(|h| h.len() == 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| {
                        "\\x must be followed by two hex digits, like \\x03 for Ctrl+C".to_string()
                    })?;
                out.push(value);
            }
            Some(other) => {
                return Err(format!(
                    "unknown escape \\{} (use \\n, \\r, \\t, \\e, \\\\ or \\xNN)",
                    other as char
                ))
            }
            None => return Err("the text ends with a lone backslash (write \\\\ for one)".into()),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn escapes() {
        assert_eq!(unescape(r"ls\n").unwrap(), b"ls\n");
        assert_eq!(unescape(r"a\r\t\\\x03\e").unwrap(), b"a\r\t\\\x03\x1b");
        assert!(unescape(r"\q").is_err());
        assert!(unescape(r"\x0").is_err());
        assert!(unescape("end\\").is_err());
    }
}
