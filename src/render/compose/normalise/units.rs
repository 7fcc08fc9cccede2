//! Durations (Go `time.ParseDuration` syntax) and byte sizes (Docker's binary units).

/// `1m30s`, `10s`, `1.5s`, `500ms`, `2h45m` → milliseconds. Sub-millisecond
/// remainders round up so that a non-zero duration never becomes zero.
pub fn parse_duration_ms(text: &str) -> Result<u64, String> {
    let bad = || format!("invalid duration {text:?} (expected e.g. `10s`, `1m30s`, `500ms`)");
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    if rest == "0" {
        return Ok(0);
    }
    if let Some(stripped) = rest.strip_prefix('+') {
        rest = stripped;
    }
    let mut total_ns: f64 = 0.0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if number_len == 0 {
            return Err(bad());
        }
        let (number, tail) = rest.split_at(number_len);
        let value: f64 = number.parse().map_err(|_| bad())?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        total_ns += value * scale;
        rest = tail;
    }
    let ms = (total_ns / 1e6).ceil();
    if !ms.is_finite() || ms > u64::MAX as f64 / 2.0 {
        return Err(bad());
    }
    Ok(ms as u64)
}

/// `512m`, `1g`, `1gb`, `512M`, `100k`, `1024`, `1.5g` → bytes (k = 1024).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let bad = || format!("invalid byte size {text:?} (expected e.g. `512m`, `1g`, `1024`)");
    let trimmed = text.trim();
    let number_len = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(number_len);
    if number.is_empty() {
        return Err(bad());
    }
    let value: f64 = number.parse().map_err(|_| bad())?;
    let unit = unit.trim().to_ascii_lowercase();
    let unit = unit
        .strip_suffix("ib")
        .or_else(|| unit.strip_suffix('b'))
        .unwrap_or(&unit);
    let scale: f64 = match unit {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        "t" => 1024f64.powi(4),
        "p" => 1024f64.powi(5),
        _ => return Err(bad()),
    };
    let bytes = (value * scale).round();
    if !bytes.is_finite() || bytes > u64::MAX as f64 / 2.0 {
        return Err(bad());
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let cases = [
            ("1m30s", 90_000),
            ("10s", 10_000),
            ("1h", 3_600_000),
            ("500ms", 500),
            ("1.5s", 1_500),
            ("2h45m", 9_900_000),
            ("0", 0),
            ("0s", 0),
            ("100us", 1),
            ("1m0.5s", 60_500),
        ];
        for (text, ms) in cases {
            assert_eq!(parse_duration_ms(text), Ok(ms), "{text}");
        }
        for bad in ["", "10", "1x", "s", "1.2.3s", "-5s", "10 s"] {
            assert!(parse_duration_ms(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn byte_sizes() {
        let cases = [
            ("512m", 512 * 1024 * 1024),
            ("1g", 1024 * 1024 * 1024),
            ("1gb", 1024 * 1024 * 1024),
            ("512M", 512 * 1024 * 1024),
            ("100k", 102_400),
            ("1024", 1024),
            ("1.5g", 1_610_612_736),
            ("20b", 20),
            ("2KiB", 2048),
        ];
        for (text, bytes) in cases {
            assert_eq!(parse_bytes(text), Ok(bytes), "{text}");
        }
        for bad in ["", "m", "12q", "-1g", "1..2m"] {
            assert!(parse_bytes(bad).is_err(), "{bad} should be rejected");
        }
    }
}
