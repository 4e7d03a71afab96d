//! Secrets in the config: which keys hold one, `<key>_file: PATH` to read one from a file (as
//! systemd's `LoadCredential=` provides), and the numbers YAML would change a secret into
//! (`token: 0x1F` is 31).
//!
//! Two rules name secrets, in `settings:` and in every plugin's section alike. [`is_masked`],
//! broad, only hides values (`calllogger config`), where a false alarm costs nothing. What
//! changes a value's meaning (its `<key>_file` read, a number refused, an environment value
//! kept as text) follows [`is_secret`], which is strict.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use yaml_serde::{Mapping, Value};

use super::{written, Source};

/// The words that name a secret.
const SECRET_WORDS: [&str; 6] = [
    "token",
    "password",
    "passwd",
    "secret",
    "api_key",
    "credential",
];

/// Whether `calllogger config` masks the value of `key`: it contains a secret word anywhere,
/// compared case-insensitively (`tokens`, `credentials_path`, `PBX_Password`).
pub(super) fn is_masked(key: &str) -> bool {
    let lower = key.to_ascii_lowercase();
    SECRET_WORDS.iter().any(|word| lower.contains(word))
}

/// Whether `key` holds a secret: it is a secret word, or ends with `_` and one, compared
/// case-insensitively. `token`, `api_key`, `pbx_password`, `PBX_Password`, `client_secret` and
/// `ldap_credential` are secrets; `max_tokens`, `token_refresh_hours`, `secret_key` and
/// `credentials` (the plural, often a file a plugin reads itself) are not.
pub(super) fn is_secret(key: &str) -> bool {
    let lower = key.to_ascii_lowercase();
    SECRET_WORDS.iter().any(|word| {
        lower
            .strip_suffix(word)
            .is_some_and(|head| head.is_empty() || head.ends_with('_'))
    })
}

/// The secret-named key whose value the file named by `key` holds (`token` for `token_file`,
/// `PBX_Password` for `PBX_Password_FILE`), if `key` is one: `_file` (in any case) after a
/// secret's name.
pub(super) fn file_key_of(key: &str) -> Option<&str> {
    let split = key.len().checked_sub("_file".len())?;
    let (secret, suffix) = (key.get(..split)?, key.get(split..)?);
    (suffix.eq_ignore_ascii_case("_file") && is_secret(secret)).then_some(secret)
}

/// Where the key at a path (from the layer's top, e.g. `["settings", "token_file"]`) was set.
pub(super) type At<'a> = &'a dyn Fn(&[&str]) -> Source;

/// Replaces, in `map` (at `path`, e.g. `["settings"]`) and the mappings inside it, each
/// `<key>_file: PATH` of a secret-named key by `<key>:` the file's content with one trailing
/// newline removed; an empty path changes nothing. A problem (the file unreadable, or `<key>`
/// set to something not blank in the same layer) names the key, where it was set ([`At`]) and the path, never the
/// content. Returns the keys of `map` itself so read, each with its origin: the file, and
/// where `<key>_file` was set.
pub(super) fn read_files(
    map: &mut Mapping,
    path: &[&str],
    at: At,
    problems: &mut Vec<String>,
) -> Vec<(String, Source)> {
    let mut read = Vec::new();
    let keys: Vec<String> = map
        .keys()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect();
    for key in &keys {
        let here = [path, &[key.as_str()]].concat();
        let name = here.join(".");
        let Some(secret) = file_key_of(key) else {
            if let Some(Value::Mapping(inner)) = map.get_mut(key.as_str()) {
                read_files(inner, &here, at, problems);
            }
            continue;
        };
        let file = match map.remove(key.as_str()) {
            Some(Value::String(file)) if !file.trim().is_empty() => PathBuf::from(file),
            Some(Value::Null | Value::String(_)) | None => continue,
            Some(_) => {
                problems.push(format!("{}: {name} must be a file path", at(&here)));
                continue;
            }
        };
        if map.get(secret).is_some_and(is_set) {
            let other = [path, &[secret]].concat();
            problems.push(format!(
                "{}: {name} is given, but {} is set too by {}: give only one",
                at(&here),
                other.join("."),
                at(&other)
            ));
            continue;
        }
        match read_secret(&file) {
            Ok(content) => {
                map.insert(secret.into(), Value::String(content));
                let origin = Box::new(at(&here));
                read.push((secret.to_owned(), Source::SecretFile { origin, file }));
            }
            Err(e) => problems.push(format!(
                "{}: {name}: cannot read {}: {e}",
                at(&here),
                file.display()
            )),
        }
    }
    read
}

/// Whether `value` sets its key: an empty value (nothing, or a blank string such as the
/// `token: ""` of defaults.yml) does not, as an empty environment variable does not.
fn is_set(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::String(text) => !text.trim().is_empty(),
        _ => true,
    }
}

/// The most a secret file may hold: a secret is short, and a larger file is a mistake.
pub const SECRET_FILE_LIMIT: u64 = 64 << 10;

/// A secret file's content, one trailing newline (`\n` or `\r\n`) removed: a regular file of at
/// most [`SECRET_FILE_LIMIT`] bytes of UTF-8 text. Anything else (a FIFO, which opening waits
/// on, or a device such as `/dev/zero`, which never ends) is refused before it is opened; the
/// error never holds the content.
fn read_secret(file: &Path) -> Result<String, String> {
    let metadata = std::fs::metadata(file).map_err(|e| e.to_string())?;
    if !metadata.is_file() {
        return Err("it is not a regular file".to_owned());
    }
    let too_large = || format!("it is larger than {} KiB", SECRET_FILE_LIMIT >> 10);
    if metadata.len() > SECRET_FILE_LIMIT {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    std::fs::File::open(file)
        .and_then(|f| f.take(SECRET_FILE_LIMIT + 1).read_to_end(&mut bytes))
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > SECRET_FILE_LIMIT {
        // It grew since its size was read.
        return Err(too_large());
    }
    let mut text = String::from_utf8(bytes).map_err(|_| "it is not UTF-8 text".to_owned())?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Ok(text)
}

/// Problems for each secret-named key in `map` (at `path` in the YAML `text`, at any depth of
/// mapping; where it was set is [`At`]) holding a number written otherwise than YAML renders it
/// (`0x1F` is 31, `12.50` is 12.5): the secret would not be what was written. A number that
/// keeps its text (`123456`) is taken as its digits. The value is never shown, as written or
/// as read.
pub(super) fn check_numbers(
    map: &Mapping,
    path: &[&str],
    text: &str,
    at: At,
    problems: &mut Vec<String>,
) {
    for (key, value) in map {
        let Some(key) = key.as_str() else { continue };
        let here = [path, &[key]].concat();
        match value {
            Value::Mapping(inner) => check_numbers(inner, &here, text, at, problems),
            Value::Number(number) if is_secret(key) => {
                let problem = match written::scalar_of(text, &here) {
                    Some(raw) if raw == number.to_string() => continue,
                    Some(_) => {
                        "is a number that YAML reads differently from how it is written (hex, \
                         octal, an exponent, a leading + or trailing zeros)"
                    }
                    // Not seen (the walk finds every key the mapping holds), but then what was
                    // written cannot be checked, so it is not taken.
                    None => "is a number, and how it is written could not be found to check it",
                };
                problems.push(format!(
                    "{}: {} {problem}: quote it — a secret is text; its value is not shown",
                    at(&here),
                    here.join(".")
                ));
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The problems [`check_numbers`] finds in `settings:` of `text`.
    fn number_problems(text: &str) -> Vec<String> {
        let value: Value = yaml_serde::from_str(text).unwrap();
        let mut problems = Vec::new();
        let map = value["settings"].as_mapping().unwrap();
        let at = |keys: &[&str]| Source::File {
            path: "c.yml".into(),
            line: written::line_of(text, keys),
        };
        check_numbers(map, &["settings"], text, &at, &mut problems);
        problems
    }

    #[test]
    fn a_secret_is_named_by_its_last_words_and_masking_by_any_part() {
        for secret in [
            "token",
            "TOKEN",
            "api_key",
            "pbx_api_key",
            "pbx_password",
            "PBX_Password",
            "passwd",
            "client_secret",
            "ldap_credential",
        ] {
            assert!(is_secret(secret) && is_masked(secret), "{secret}");
            let file = format!("{secret}_file");
            assert_eq!(file_key_of(&file), Some(secret), "{file}");
            let file = format!("{secret}_FILE");
            assert_eq!(file_key_of(&file), Some(secret), "{file}");
        }
        for other in [
            "max_tokens",
            "token_refresh_hours",
            "tokenizer",
            "apikey_header",
            "secret_key",
            "credentials",
            "passwords_allowed",
            "mytoken",
            "file",
        ] {
            assert!(!is_secret(other), "{other}");
            assert_eq!(file_key_of(&format!("{other}_file")), None, "{other}_file");
        }
        for masked in ["max_tokens", "credentials", "secret_key", "mytoken"] {
            assert!(is_masked(masked), "{masked}");
        }
        assert!(!is_masked("ca_file") && !is_secret("token_file"));
        assert_eq!(file_key_of("_file"), None);
    }

    #[test]
    fn a_secret_number_yaml_would_change_is_refused_without_its_value() {
        for (raw, number) in [
            ("0x1F", "31"),
            ("0o17", "15"),
            ("12.50", "12.5"),
            ("1e3", "1000.0"),
            ("+5", "5"),
        ] {
            let problems = number_problems(&format!("settings:\n  a: 1\n  token: {raw}\n"));
            assert_eq!(
                problems,
                [
                    "config file c.yml, line 3: settings.token is a number that YAML reads \
                  differently from how it is written (hex, octal, an exponent, a leading + or \
                  trailing zeros): quote it — a secret is text; its value is not shown"
                ]
            );
            assert!(!problems[0].contains(raw) && !problems[0].contains(number));
        }
        for kept in ["123456", "1_000", "'0x1F'", "\"12.50\"", "12.5", "-7"] {
            let text = format!("settings:\n  token: {kept}\n");
            assert!(number_problems(&text).is_empty(), "{kept}");
        }
        let text = "settings:\n  max_tokens: 1e3\n  token_refresh_hours: 0x10\n";
        assert!(number_problems(text).is_empty(), "not secrets");
        // At any depth, in flow style too; other keys' numbers are theirs.
        let text = "settings:\n  login: {user: 0x10, PBX_Password: 0x10}\n  port: 0x50\n";
        let problems = number_problems(text);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with(
                "config file c.yml, line 2: settings.login.PBX_Password is a number that YAML"
            ),
            "{problems:?}"
        );
        assert!(!problems[0].contains("0x10") && !problems[0].contains("16"));
    }

    #[test]
    fn a_secret_file_replaces_its_key_at_any_depth_with_one_newline_removed() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "s3cret\n\n").unwrap();
        let password = dir.path().join("password");
        std::fs::write(&password, "pa ss\r\n").unwrap();
        let yaml = format!(
            "token_file: {}\nlogin: {{password_file: '{}', user: u}}\nca_file: /ca.pem\n\
             blank_token_file: ''\ncredentials_file: /sa.json\n",
            token.display(),
            password.display()
        );
        let mut map: Mapping = yaml_serde::from_str(&yaml).unwrap();
        let mut problems = Vec::new();
        let at = |_: &[&str]| Source::Defaults;
        let read = read_files(&mut map, &["settings"], &at, &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        let origin = Box::new(Source::Defaults);
        let file = Source::SecretFile {
            origin,
            file: token,
        };
        assert_eq!(read, [("token".to_owned(), file)]);
        assert_eq!(map["token"], "s3cret\n", "only one newline is removed");
        assert_eq!(map["login"]["password"], "pa ss");
        assert!(map["login"].get("password_file").is_none());
        assert_eq!(map["ca_file"], "/ca.pem", "not a secret's file");
        assert_eq!(map["credentials_file"], "/sa.json", "a plugin's own file");
        assert!(!map.contains_key("blank_token_file") && !map.contains_key("blank_token"));
    }

    #[test]
    fn an_unreadable_secret_file_or_both_keys_are_named_without_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "s3cret").unwrap();
        let yaml = format!(
            "token: x\ntoken_file: {}\napi_key_file: /nonexistent/key\npassword_file: [1]\n",
            token.display()
        );
        let mut map: Mapping = yaml_serde::from_str(&yaml).unwrap();
        let mut problems = Vec::new();
        let at = |path: &[&str]| Source::Env(path.join("/"));
        read_files(&mut map, &["settings"], &at, &mut problems);
        assert_eq!(
            problems,
            [
                "environment variable settings/token_file: settings.token_file is given, but \
                 settings.token is set too by environment variable settings/token: give only one",
                "environment variable settings/api_key_file: settings.api_key_file: cannot read \
                 /nonexistent/key: No such file or directory (os error 2)",
                "environment variable settings/password_file: settings.password_file must be a \
                 file path",
            ]
        );
        assert!(!problems.concat().contains("s3cret"));
        assert_eq!(map["token"], "x");
    }

    #[test]
    fn a_secret_file_must_be_a_regular_file_of_at_most_64_kib() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big");
        std::fs::write(&big, "S".repeat(SECRET_FILE_LIMIT as usize + 1)).unwrap();
        let most = dir.path().join("most");
        std::fs::write(&most, "S".repeat(SECRET_FILE_LIMIT as usize)).unwrap();
        assert_eq!(
            read_secret(&most).unwrap().len(),
            SECRET_FILE_LIMIT as usize
        );
        assert_eq!(read_secret(&big).unwrap_err(), "it is larger than 64 KiB");
        assert_eq!(
            read_secret(dir.path()).unwrap_err(),
            "it is not a regular file"
        );
        #[cfg(unix)]
        {
            assert_eq!(
                read_secret(Path::new("/dev/zero")).unwrap_err(),
                "it is not a regular file"
            );
            let fifo = dir.path().join("fifo");
            nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
            assert_eq!(read_secret(&fifo).unwrap_err(), "it is not a regular file");
        }
        let yaml = format!("api_key_file: {}\n", big.display());
        let mut map: Mapping = yaml_serde::from_str(&yaml).unwrap();
        let mut problems = Vec::new();
        read_files(
            &mut map,
            &["P"],
            &|_| Source::Env("K".into()),
            &mut problems,
        );
        assert_eq!(
            problems,
            [format!(
                "environment variable K: P.api_key_file: cannot read {}: it is larger than 64 KiB",
                big.display()
            )]
        );
    }

    #[test]
    fn a_blank_secret_beside_its_file_is_unset_and_the_file_gives_it() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "s3cret").unwrap();
        for blank in ["''", "' '", "", "~"] {
            let yaml = format!("token: {blank}\ntoken_file: {}\n", token.display());
            let mut map: Mapping = yaml_serde::from_str(&yaml).unwrap();
            let mut problems = Vec::new();
            read_files(
                &mut map,
                &["settings"],
                &|_| Source::Defaults,
                &mut problems,
            );
            assert!(problems.is_empty(), "{blank}: {problems:?}");
            assert_eq!(map["token"], "s3cret", "{blank}");
        }
    }
}
