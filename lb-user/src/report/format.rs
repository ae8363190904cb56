//! How the renderers show numbers to people: durations the HAProxy way, bytes in binary units,
//! rates, the last check as `L7OK/200 in 2ms`.

use std::fmt::Write as _;

use super::snapshot::CheckView;

pub const VERIFY_NONE_WARNING: &str = "TLS checks do not verify the server certificate (verify none)";

/// HAProxy's way of showing a duration: the two largest units, `2d3h`, `1h2m`, `5m3s`, `12s`.
pub fn human_time(s: u64) -> String {
    let (d, h, m, sec) = (s / 86_400, s / 3_600 % 24, s / 60 % 60, s % 60);
    if d > 0 {
        format!("{d}d{h}h")
    } else if h > 0 {
        format!("{h}h{m}m")
    } else if m > 0 {
        format!("{m}m{sec}s")
    } else {
        format!("{sec}s")
    }
}

/// Binary units with one decimal: `512 B`, `1.5 KiB`, `3.2 GiB`.
#[expect(clippy::cast_precision_loss, reason = "shown with one decimal")]
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if b < 1024 {
        return format!("{b} B");
    }
    let mut v = b as f64 / 1024.0;
    let mut i = 0;
    // 1023.95 would print as "1024.0": roll over to the next unit instead.
    while v >= 1023.95 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.1} {}", UNITS.get(i).unwrap_or(&"EiB"))
}

/// Flows per second: integers when large or whole, one decimal otherwise.
pub fn fmt_rate(r: f64) -> String {
    // A rate from a clock step can be NaN or negative: show it as idle, not as garbage.
    if !r.is_finite() || r <= 0.0 {
        return "0".to_string();
    }
    if r >= 100.0 || r.fract() == 0.0 {
        format!("{r:.0}")
    } else {
        let s = format!("{r:.1}");
        s.strip_suffix(".0").map(str::to_string).unwrap_or(s)
    }
}

/// `L7OK/200 in 2ms`, as in HAProxy's LastChk column.
pub fn last_check_text(c: &CheckView) -> String {
    let mut s = c.code.name().to_owned();
    if let Some(st) = c.http_status {
        let _ = write!(s, "/{st}");
    }
    let _ = write!(s, " in {}ms", c.duration_ms);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(human_time(12), "12s");
        assert_eq!(human_time(303), "5m3s");
        assert_eq!(human_time(3723), "1h2m");
        assert_eq!(human_time(93_784), "1d2h");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(1024 * 1024 - 1), "1.0 MiB");
        assert_eq!(fmt_rate(f64::NAN), "0");
        assert_eq!(fmt_rate(2.5), "2.5");
        assert_eq!(fmt_rate(12.0), "12");
    }
}
