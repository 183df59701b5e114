//! Secrets out of configuration errors: a parse error quotes the line it failed on, and
//! that line may be `database_url = "postgres://user:PASSWORD@host/db"` (an unclosed quote,
//! a duplicate key). Every problem text goes through [`secrets`] before it is printed or
//! logged.

/// `text` with the password of every URL's user info (`scheme://user:PASSWORD@host`), every
/// `password=VALUE` (libpq's key/value form, spaces and quotes allowed) and the value of any
/// line that sets `database_url` replaced by `***`.
pub(crate) fn secrets(text: &str) -> String {
    let text = database_url_lines(text);
    let text = url_passwords(&text);
    keyword_passwords(&text)
}

/// Characters that end a token in quoted config text (a URL's password may hold `/`, `?`
/// or `#` unencoded: the PostgreSQL client reads the user info up to the `@`).
fn ends_token(c: char) -> bool {
    matches!(c, '"' | '\'' | '`') || c.is_whitespace()
}

/// The value of every `database_url = ...` line, whatever its form (a parse error may
/// quote it half-written).
fn database_url_lines(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let lower = line.to_ascii_lowercase();
        match lower.find("database_url").and_then(|at| {
            let eq = lower[at..].find('=')?;
            Some(at + eq + 1)
        }) {
            Some(value) => {
                out.push_str(&line[..value]);
                out.push_str(" ***");
            }
            None => out.push_str(line),
        }
    }
    out
}

fn url_passwords(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let end = tail.find(ends_token).unwrap_or(tail.len());
        let token = &tail[..end];
        // The last `@` of the token: a password holding `@` is hidden whole.
        match token.rfind('@') {
            Some(user_end) => {
                let userinfo = &token[..user_end];
                match userinfo.find(':') {
                    Some(colon) => {
                        out.push_str(&userinfo[..=colon]);
                        out.push_str("***");
                    }
                    None => out.push_str(userinfo),
                }
                out.push_str(&token[user_end..]);
            }
            None => out.push_str(token),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

fn keyword_passwords(text: &str) -> String {
    const KEY: &str = "password";
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut from = 0;
    while let Some(found) = lower[from..].find(KEY) {
        let after_key = from + found + KEY.len();
        // `password`, spaces, `=`, spaces, then a quoted value or a word.
        let spaced = |at: usize| at + text[at..].len() - text[at..].trim_start_matches(' ').len();
        let eq = spaced(after_key);
        if !text[eq..].starts_with('=') {
            out.push_str(&text[from..after_key]);
            from = after_key;
            continue;
        }
        let value = spaced(eq + 1);
        out.push_str(&text[from..value]);
        let rest = &text[value..];
        let len = match rest.chars().next() {
            Some(q @ ('\'' | '"')) => rest[1..].find(q).map_or(rest.len(), |end| end + 2),
            _ => rest
                .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`' | '&' | ';'))
                .unwrap_or(rest.len()),
        };
        if len > 0 {
            out.push_str("***");
        }
        from = value + len;
    }
    out.push_str(&text[from..]);
    out
}

#[cfg(test)]
mod tests {
    use super::secrets;

    #[test]
    fn url_passwords_are_hidden_and_the_rest_kept() {
        assert_eq!(
            secrets("see postgres://cdn:S3cret@db:5432/cdn and https://d/hls/a.ts"),
            "see postgres://cdn:***@db:5432/cdn and https://d/hls/a.ts"
        );
        for (text, secret) in [
            ("postgres://cdn:Ab/9+x@db:5432/cdn", "Ab/9+x"),
            ("postgresql://cdn:p#ss?w@db/cdn", "p#ss?w"),
            ("postgres://cdn:p@ss:w@rd@db/x", "ss:w@rd"),
        ] {
            let shown = secrets(text);
            assert!(!shown.contains(secret), "{shown}");
            assert!(shown.contains("@db"), "{shown}");
        }
        assert_eq!(secrets("postgres://cdn@db/x"), "postgres://cdn@db/x");
        assert_eq!(secrets("a://"), "a://");
    }

    #[test]
    fn a_database_url_line_is_hidden_whatever_its_form() {
        assert_eq!(
            secrets("2 | database_url = \"postgres://cdn:S3cret/x@db:5432/cdn\n  |     ^"),
            "2 | database_url = ***\n  |     ^"
        );
        assert_eq!(
            secrets("DATABASE_URL=postgres://u:p@h"),
            "DATABASE_URL= ***"
        );
        assert_eq!(
            secrets("database_url is not set"),
            "database_url is not set"
        );
    }

    #[test]
    fn keyword_passwords_are_hidden() {
        assert_eq!(
            secrets("host=db user=cdn PassWord=S3cret dbname=x"),
            "host=db user=cdn PassWord=*** dbname=x"
        );
        assert_eq!(secrets("password = S3cret x"), "password = *** x");
        assert_eq!(secrets("password='S3 cret' x"), "password=*** x");
        assert_eq!(
            secrets("postgres://db/x?password=S3cret&sslmode=require"),
            "postgres://db/x?password=***&sslmode=require"
        );
        assert_eq!(secrets("password="), "password=");
        assert_eq!(secrets("a password is needed"), "a password is needed");
    }

    #[test]
    fn any_text_is_handled_without_panicking() {
        for text in [
            "://@:",
            "é://é:é@é",
            "PASSWORD=é",
            "x://a:b@",
            "\u{130}password=x",
            "password='",
            "password = ",
            "database_url",
            "database_url=",
        ] {
            let _ = secrets(text);
        }
    }
}
