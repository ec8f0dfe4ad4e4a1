//! `google.protobuf.Timestamp` with the proto3 JSON form the mapping prescribes.
//!
//! The generated types use this instead of `pbjson_types::Timestamp` (see `build.rs`):
//! the binary form is the same message, but the JSON is always Z-normalized with 0, 3,
//! 6 or 9 fractional digits (`2026-12-06T11:40:05.250Z`), as the proto3 JSON mapping
//! says, where `pbjson_types` writes `+00:00`. Reading accepts any RFC 3339 offset.

use std::time::{SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A point in time: seconds and nanoseconds since the Unix epoch (field numbers and
/// types of `google.protobuf.Timestamp`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Message)]
pub struct Timestamp {
    /// Seconds since 1970-01-01T00:00:00Z.
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    /// Nanoseconds within the second, 0 to 999,999,999.
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

impl Timestamp {
    /// The timestamp of `at` (before 1970 clamps to 0).
    pub fn of(at: SystemTime) -> Self {
        let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
        Self {
            seconds: i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
            // Always below 1e9, so it fits.
            nanos: i32::try_from(since.subsec_nanos()).unwrap_or(0),
        }
    }

    /// The proto3 JSON form: RFC 3339 in UTC, `Z`, 0, 3, 6 or 9 fractional digits.
    /// `None` outside the years 0001 to 9999, which the mapping does not allow.
    pub fn to_rfc3339(&self) -> Option<String> {
        let nanos = u32::try_from(self.nanos)
            .ok()
            .filter(|n| *n < 1_000_000_000)?;
        let at = OffsetDateTime::from_unix_timestamp(self.seconds).ok()?;
        if !(1..=9999).contains(&at.year()) {
            return None;
        }
        let mut out = at.replace_nanosecond(0).ok()?.format(&Rfc3339).ok()?;
        // `format` wrote `...:SSZ` (no fraction at 0 ns): put the fraction before `Z`.
        out.pop();
        let fraction = match nanos {
            0 => String::new(),
            n if n % 1_000_000 == 0 => format!(".{:03}", n / 1_000_000),
            n if n % 1_000 == 0 => format!(".{:06}", n / 1_000),
            n => format!(".{n:09}"),
        };
        out.push_str(&fraction);
        out.push('Z');
        Some(out)
    }

    /// Parses RFC 3339 with any offset.
    pub fn parse_rfc3339(text: &str) -> Option<Self> {
        let at = OffsetDateTime::parse(text, &Rfc3339).ok()?;
        Some(Self {
            seconds: at.unix_timestamp(),
            nanos: i32::try_from(at.nanosecond()).ok()?,
        })
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.to_rfc3339() {
            Some(text) => serializer.serialize_str(&text),
            None => Err(serde::ser::Error::custom(format!(
                "timestamp {}s {}ns is outside 0001-01-01 to 9999-12-31",
                self.seconds, self.nanos
            ))),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse_rfc3339(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("not an RFC 3339 time: {text:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64, nanos: i32) -> Timestamp {
        Timestamp { seconds, nanos }
    }

    #[test]
    fn json_is_z_normalized_with_0_3_6_or_9_digits() {
        for (ts, text) in [
            (at(0, 0), "1970-01-01T00:00:00Z"),
            (at(1_796_557_205, 250_000_000), "2026-12-06T11:40:05.250Z"),
            (at(1_796_557_205, 1_000), "2026-12-06T11:40:05.000001Z"),
            (at(1_796_557_205, 1), "2026-12-06T11:40:05.000000001Z"),
        ] {
            assert_eq!(ts.to_rfc3339().as_deref(), Some(text));
            assert_eq!(serde_json::to_string(&ts).unwrap(), format!("\"{text}\""));
            assert_eq!(Timestamp::parse_rfc3339(text), Some(ts));
        }
        assert_eq!(
            Timestamp::parse_rfc3339("2026-12-06T12:40:05.25+01:00"),
            Some(at(1_796_557_205, 250_000_000))
        );
    }

    #[test]
    fn out_of_range_is_an_error_not_a_panic() {
        assert_eq!(at(i64::MAX, 0).to_rfc3339(), None);
        assert_eq!(at(0, -1).to_rfc3339(), None);
        assert!(serde_json::to_string(&at(i64::MIN, 0)).is_err());
        assert!(serde_json::from_str::<Timestamp>("\"yesterday\"").is_err());
    }
}
