//! Secrets out of configuration errors: a parse error quotes the line it failed on, and
//! that line may be `database_url = "postgres://user:PASSWORD@host/db"` (an unclosed quote,
//! a duplicate key). Every problem text goes through [`secrets`] before it is printed or
//! logged.

/// `text` with the password of every URL's user info (`scheme://user:PASSWORD@host`) and
/// every `password=VALUE` (libpq's key/value form) replaced by `***`.
pub(crate) fn secrets(text: &str) -> String {
    let text = url_passwords(text);
    keyword_passwords(&text)
}

/// Characters that end a URL's authority (or the URL) in quoted config text.
fn ends_authority(c: char) -> bool {
    matches!(c, '/' | '?' | '#' | '"' | '\'' | '`' | '\\') || c.is_whitespace()
}

fn url_passwords(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let end = tail.find(ends_authority).unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(user_end) => {
                let userinfo = &authority[..user_end];
                match userinfo.find(':') {
                    Some(colon) => {
                        out.push_str(&userinfo[..=colon]);
                        out.push_str("***");
                    }
                    None => out.push_str(userinfo),
                }
                out.push_str(&authority[user_end..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

fn keyword_passwords(text: &str) -> String {
    const KEY: &str = "password=";
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut from = 0;
    while let Some(found) = lower[from..].find(KEY) {
        let value_start = from + found + KEY.len();
        out.push_str(&text[from..value_start]);
        let value_len = text[value_start..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`' | '&' | ';'))
            .unwrap_or(text.len() - value_start);
        if value_len > 0 {
            out.push_str("***");
        }
        from = value_start + value_len;
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
            secrets(r#"1 | database_url = "postgres://cdn:S3cret@db:5432/cdn"#),
            r#"1 | database_url = "postgres://cdn:***@db:5432/cdn"#
        );
        assert_eq!(
            secrets("postgres://cdn:p@ss:w@rd@db/x and https://d/hls/a.ts"),
            "postgres://cdn:***@db/x and https://d/hls/a.ts"
        );
        assert_eq!(secrets("postgres://cdn@db/x"), "postgres://cdn@db/x");
        assert_eq!(
            secrets("unclosed postgres://u:pw"),
            "unclosed postgres://u:pw"
        );
        assert_eq!(secrets("a://"), "a://");
    }

    #[test]
    fn keyword_passwords_are_hidden() {
        assert_eq!(
            secrets("host=db user=cdn PassWord=S3cret dbname=x"),
            "host=db user=cdn PassWord=*** dbname=x"
        );
        assert_eq!(
            secrets("postgres://db/x?password=S3cret&sslmode=require"),
            "postgres://db/x?password=***&sslmode=require"
        );
        assert_eq!(secrets("password="), "password=");
    }

    #[test]
    fn any_text_is_handled_without_panicking() {
        for text in [
            "://@:",
            "é://é:é@é",
            "PASSWORD=é",
            "x://a:b@",
            "\u{130}password=x",
        ] {
            let _ = secrets(text);
        }
    }
}
