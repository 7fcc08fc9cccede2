//! Compose numbers as Kubernetes quantities.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// Bytes as the largest exact binary unit (`536870912` → `512Mi`), else plain bytes.
pub fn bytes(n: u64) -> Quantity {
    const UNITS: [(&str, u64); 5] = [
        ("Pi", 1 << 50),
        ("Ti", 1 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ];
    for (suffix, size) in UNITS {
        if n >= size && n.is_multiple_of(size) {
            return Quantity(format!("{}{suffix}", n / size));
        }
    }
    Quantity(n.to_string())
}

/// CPUs as cores or millicores (`0.5` → `500m`, `2` → `2`), rounded up to a
/// whole millicore; `None` for zero, negative or non-finite values.
pub fn cpus(cores: f64) -> Option<Quantity> {
    if !cores.is_finite() || cores <= 0.0 {
        return None;
    }
    // Round away float noise (0.1 * 3) before rounding up.
    let milli = ((cores * 1000.0 * 1000.0).round() / 1000.0).ceil();
    if milli > f64::from(u32::MAX) {
        return None;
    }
    let milli = milli as u64;
    Some(Quantity(if milli.is_multiple_of(1000) {
        (milli / 1000).to_string()
    } else {
        format!("{milli}m")
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_quantities() {
        assert_eq!(bytes(512 * 1024 * 1024).0, "512Mi");
        assert_eq!(bytes(1 << 30).0, "1Gi");
        assert_eq!(bytes(1536 * 1024 * 1024).0, "1536Mi");
        assert_eq!(bytes(1000).0, "1000");
        assert_eq!(bytes(0).0, "0");
    }

    #[test]
    fn cpu_quantities() {
        assert_eq!(cpus(0.5).map(|q| q.0).as_deref(), Some("500m"));
        assert_eq!(cpus(2.0).map(|q| q.0).as_deref(), Some("2"));
        assert_eq!(cpus(0.0001).map(|q| q.0).as_deref(), Some("1m"));
        assert_eq!(cpus(0.3).map(|q| q.0).as_deref(), Some("300m"));
        assert_eq!(cpus(0.0), None);
        assert_eq!(cpus(f64::NAN), None);
    }
}
