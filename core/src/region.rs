//! Regions: which relay a client lands on.
//!
//! A region is one of Cloudflare's Durable Object location hints. The Worker
//! maps the request's `cf` location to a hint with [`Region::from_location`];
//! the table is in `docs/ARCHITECTURE.md` and must change with this code.

use crate::error::{ErrorCode, Rejection};

/// A Durable Object location hint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Region {
    /// Western North America.
    Wnam,
    /// Eastern North America.
    Enam,
    /// South America.
    Sam,
    /// Western Europe.
    Weur,
    /// Eastern Europe.
    Eeur,
    /// Asia-Pacific.
    Apac,
    /// Oceania.
    Oc,
    /// Africa.
    Afr,
    /// Middle East.
    Me,
}

/// Countries on the European continent that map to `eeur` rather than `weur`.
const EASTERN_EUROPE: &[&str] = &[
    "AL", "BA", "BG", "BY", "CZ", "EE", "FI", "GR", "HR", "HU", "LT", "LV", "MD", "ME", "MK",
    "PL", "RO", "RS", "RU", "SI", "SK", "UA", "XK",
];

/// Countries Cloudflare reports on the Asian continent that map to `me`.
const MIDDLE_EAST: &[&str] = &[
    "AE", "BH", "CY", "IL", "IQ", "IR", "JO", "KW", "LB", "OM", "PS", "QA", "SA", "SY", "TR",
    "YE",
];

/// Longitude west of which North America is `wnam` (roughly the Rockies).
const WNAM_WEST_OF: f64 = -100.0;

impl Region {
    pub const ALL: [Region; 9] = [
        Region::Wnam,
        Region::Enam,
        Region::Sam,
        Region::Weur,
        Region::Eeur,
        Region::Apac,
        Region::Oc,
        Region::Afr,
        Region::Me,
    ];

    /// The location hint string.
    pub fn as_str(self) -> &'static str {
        match self {
            Region::Wnam => "wnam",
            Region::Enam => "enam",
            Region::Sam => "sam",
            Region::Weur => "weur",
            Region::Eeur => "eeur",
            Region::Apac => "apac",
            Region::Oc => "oc",
            Region::Afr => "afr",
            Region::Me => "me",
        }
    }

    /// Parses a location hint; anything else is `bad_region`.
    pub fn parse(hint: &str) -> Result<Region, Rejection> {
        Region::ALL
            .into_iter()
            .find(|r| r.as_str() == hint)
            .ok_or_else(|| {
                Rejection::new(
                    ErrorCode::BadRegion,
                    "region must be one of wnam enam sam weur eeur apac oc afr me",
                )
            })
    }

    /// Maps `request.cf` values to a region, or `None` when they say nothing
    /// usable (absent, Tor's `T1`, Antarctica, unknown codes).
    ///
    /// North America is split by longitude because a country code cannot tell
    /// Seattle from Boston; without coordinates it falls to `enam`.
    pub fn from_location(
        continent: Option<&str>,
        country: Option<&str>,
        longitude: Option<f64>,
    ) -> Option<Region> {
        let country = country.unwrap_or("");
        match continent? {
            "NA" => Some(match longitude {
                Some(lon) if lon < WNAM_WEST_OF => Region::Wnam,
                _ => Region::Enam,
            }),
            "SA" => Some(Region::Sam),
            "EU" if EASTERN_EUROPE.contains(&country) => Some(Region::Eeur),
            "EU" => Some(Region::Weur),
            "AS" if MIDDLE_EAST.contains(&country) => Some(Region::Me),
            "AS" => Some(Region::Apac),
            "OC" => Some(Region::Oc),
            "AF" => Some(Region::Afr),
            _ => None,
        }
    }
}

impl std::fmt::Display for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_round_trips_every_hint() {
        for r in Region::ALL {
            assert_eq!(Region::parse(r.as_str()).unwrap(), r);
        }
        assert_eq!(Region::parse("mars").unwrap_err().code, ErrorCode::BadRegion);
        assert_eq!(Region::parse("WNAM").unwrap_err().code, ErrorCode::BadRegion);
    }

    #[test]
    fn location_table() {
        let cases = [
            (Some("NA"), Some("US"), Some(-122.3), Some(Region::Wnam)),
            (Some("NA"), Some("US"), Some(-71.0), Some(Region::Enam)),
            (Some("NA"), Some("CA"), None, Some(Region::Enam)),
            (Some("SA"), Some("BR"), None, Some(Region::Sam)),
            (Some("EU"), Some("FR"), None, Some(Region::Weur)),
            (Some("EU"), Some("PL"), None, Some(Region::Eeur)),
            (Some("AS"), Some("AE"), None, Some(Region::Me)),
            (Some("AS"), Some("JP"), None, Some(Region::Apac)),
            (Some("OC"), Some("AU"), None, Some(Region::Oc)),
            (Some("AF"), Some("ZA"), None, Some(Region::Afr)),
            (Some("T1"), Some("T1"), None, None),
            (Some("AN"), None, None, None),
            (None, Some("US"), None, None),
        ];
        for (continent, country, lon, want) in cases {
            assert_eq!(Region::from_location(continent, country, lon), want, "{continent:?} {country:?}");
        }
    }
}
