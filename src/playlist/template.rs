//! DASH URL templates (ISO/IEC 23009-1 5.3.9.4.4): `$RepresentationID$`, `$Bandwidth$`,
//! `$Number$`, `$Time$`, `$SubNumber$` (the last three with an optional `%0<width>d`), and
//! `$$` for a `$`.

/// What a URI's identifiers make it stand for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// No identifiers: one URL.
    None,
    /// `$RepresentationID$` / `$Bandwidth$` only: one URL per Representation.
    PerRepresentation,
    /// `$Number$`, `$Time$` or `$SubNumber$`: one URL per segment.
    PerSegment,
}

/// The identifiers in `text`, or why they cannot be read.
pub fn classify(text: &str) -> Result<Kind, String> {
    let mut kind = Kind::None;
    for ident in identifiers(text)? {
        let name = ident.split_once('%').map_or(ident, |(n, _)| n);
        let this = match name {
            "RepresentationID" | "Bandwidth" => Kind::PerRepresentation,
            "Number" | "Time" | "SubNumber" => Kind::PerSegment,
            other => {
                return Err(format!(
                    "unknown template identifier ${other}$ (DASH defines RepresentationID, \
                     Number, Bandwidth, Time and SubNumber)"
                ));
            }
        };
        if this == Kind::PerSegment || kind == Kind::None {
            kind = this;
        }
    }
    Ok(kind)
}

/// The template as a policy pattern: each identifier becomes `*`, `$$` becomes `$`.
pub fn to_pattern(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        match after.find('$') {
            Some(0) => {
                out.push('$');
                rest = &after[1..];
            }
            Some(j) => {
                out.push('*');
                rest = &after[j + 1..];
            }
            None => {
                out.push_str(&rest[i..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

fn identifiers(text: &str) -> Result<Vec<&str>, String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        let after = &rest[i + 1..];
        match after.find('$') {
            Some(0) => rest = &after[1..],
            Some(j) => {
                out.push(&after[..j]);
                rest = &after[j + 1..];
            }
            None => {
                return Err(
                    "has a '$' that opens no template identifier (write $$ for a literal '$')"
                        .into(),
                );
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_classified() {
        assert_eq!(classify("init.mp4"), Ok(Kind::None));
        assert_eq!(classify("a$$b.mp4"), Ok(Kind::None));
        assert_eq!(
            classify("init-$RepresentationID$.m4s"),
            Ok(Kind::PerRepresentation)
        );
        assert_eq!(
            classify("chunk-$RepresentationID$-$Number%05d$.m4s"),
            Ok(Kind::PerSegment)
        );
        assert_eq!(classify("t-$Time$.m4s"), Ok(Kind::PerSegment));
        assert!(classify("x-$Foo$.m4s").is_err());
        assert!(classify("x-$Number.m4s").is_err());
    }

    #[test]
    fn patterns_replace_identifiers_with_wildcards() {
        assert_eq!(
            to_pattern("https://d/v/chunk-$RepresentationID$-$Number%05d$.m4s"),
            "https://d/v/chunk-*-*.m4s"
        );
        assert_eq!(to_pattern("a$$b"), "a$b");
        assert_eq!(to_pattern("plain"), "plain");
    }
}
