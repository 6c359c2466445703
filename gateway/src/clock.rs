//! Wall-clock times as JavaScript writes them (`Date.prototype.toISOString`):
//! what the Socket.IO ecosystem's messages carry.

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` of a time in milliseconds since the epoch.
pub(crate) fn iso8601_ms(ms: i64) -> String {
    iso8601(ms.div_euclid(1000), ms.rem_euclid(1000) as u32).unwrap_or_default()
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` of a Unix time (as JavaScript's
/// `Date.prototype.toISOString`), for years 0 to 9999.
pub(crate) fn iso8601(secs: i64, millis: u32) -> Option<String> {
    let days = secs.div_euclid(86_400);
    let of_day = secs.rem_euclid(86_400);
    let (y, m, d) = civil(days);
    if !(0..=9999).contains(&y) {
        return None;
    }
    Some(format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60,
        millis
    ))
}

/// The proleptic Gregorian date of a day count from 1970-01-01.
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_dates_as_javascript_does() {
        assert_eq!(iso8601_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601_ms(1_614_834_367_089), "2021-03-04T05:06:07.089Z");
        assert_eq!(iso8601_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(iso8601_ms(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(iso8601(253_402_300_800, 0), None); // year 10000
    }
}
