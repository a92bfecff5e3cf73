//! Credentials out of anything shown: the one place that decides which parts
//! of a URL are secret.
//!
//! [`url`] hides the password of `scheme://user:password@host` and the values
//! of query parameters that carry secrets (`?password=`, `sslpassword`,
//! `token`, `secret`, `*key`, `passphrase`). [`scrub`] removes a URL's secrets
//! from a message that may quote them (a driver's error). Every message, log
//! line and record that shows a URL goes through here; this module never
//! logs or stores anything itself.

/// What a hidden secret is shown as.
pub const HIDDEN: &str = "***";

/// `text` (a URL, or something meant to be one) with every credential
/// replaced by `***`.
pub fn url(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut from = 0;
    for range in secret_ranges(text) {
        out.push_str(&text[from..range.start]);
        out.push_str(HIDDEN);
        from = range.end;
    }
    out.push_str(&text[from..]);
    out
}

/// `message` with every credential of `url` in it replaced by `***`.
pub fn scrub(message: &str, url: &str) -> String {
    let mut secrets: Vec<&str> = secret_ranges(url).into_iter().map(|r| &url[r]).collect();
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut out = message.to_string();
    for secret in secrets {
        out = out.replace(secret, HIDDEN);
    }
    out
}

/// Where the secrets of a URL are, in order: the userinfo password and the
/// values of secret query parameters.
fn secret_ranges(text: &str) -> Vec<std::ops::Range<usize>> {
    let mut found = Vec::new();
    let after_scheme = text.find("://").map_or(0, |i| i + 3);
    // The userinfo ends at the last `@` (a password may itself hold `@`, `/`, `?`).
    let mut query_search_from = after_scheme;
    if let Some(at) = text[after_scheme..].rfind('@').map(|i| i + after_scheme)
        && let Some(colon) = text[after_scheme..at].find(':').map(|i| i + after_scheme)
        && colon + 1 < at
    {
        found.push(colon + 1..at);
        query_search_from = at;
    }
    if let Some(q) = text[query_search_from..]
        .find('?')
        .map(|i| i + query_search_from)
    {
        let end = text[q..].find('#').map_or(text.len(), |i| i + q);
        let mut start = q + 1;
        for pair in text[q + 1..end].split('&') {
            if let Some((key, value)) = pair.split_once('=')
                && is_secret_key(key)
                && !value.is_empty()
            {
                let value_start = start + key.len() + 1;
                found.push(value_start..value_start + value.len());
            }
            start += pair.len() + 1;
        }
    }
    found
}

fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "pass",
        "pwd",
        "secret",
        "token",
        "key",
        "auth",
        "credential",
    ]
    .iter()
    .any(|word| key.contains(word))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_passwords_are_hidden() {
        assert_eq!(
            url("postgres://bot:s3cret@db:5432/polybot"),
            "postgres://bot:***@db:5432/polybot"
        );
        assert_eq!(url("mysql://u:p@ss/w@h/db"), "mysql://u:***@h/db");
        assert_eq!(url("u:hunter2@host/db"), "u:***@host/db");
        assert_eq!(url("postgres://bot@db/x"), "postgres://bot@db/x");
        assert_eq!(url("sqlite:data/polybot.db"), "sqlite:data/polybot.db");
    }

    #[test]
    fn secret_query_values_are_hidden() {
        assert_eq!(
            url("postgres://db/x?user=bot&password=s3cret&sslmode=require"),
            "postgres://db/x?user=bot&password=***&sslmode=require"
        );
        assert_eq!(
            url("postgres://db/x?sslpassword=k&application_name=p"),
            "postgres://db/x?sslpassword=***&application_name=p"
        );
        assert_eq!(url("https://h/x?api_key=abc"), "https://h/x?api_key=***");
        assert_eq!(
            url("postgres://db/x?password=a@b"),
            "postgres://db/x?password=***"
        );
        assert_eq!(
            url("postgres://u:p?w@db/x?password=q"),
            "postgres://u:***@db/x?password=***"
        );
    }

    #[test]
    fn messages_quoting_a_url_are_scrubbed() {
        let u = "postgres://bot:s3cret@db/x?password=other";
        let message = "cannot connect to postgres://bot:s3cret@db/x?password=other: refused";
        let clean = scrub(message, u);
        assert!(
            !clean.contains("s3cret") && !clean.contains("other"),
            "{clean}"
        );
    }
}
