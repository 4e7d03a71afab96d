//! `${VAR}` in the config file's values: replaced by the environment variable's value, or
//! `${VAR:-default}` by the default when the variable is unset or empty; `$${` is a literal
//! `${`. Only string values are looked at, after the YAML is parsed, so a value never changes
//! the file's structure, and a replaced value stays a string (`token: ${TOKEN}` is never taken
//! for a number).

use yaml_serde::Value;

/// Replaces the references in every string inside `value` (at `path`, e.g. `settings.token`,
/// for messages); each reference to an unset variable without a default is a problem.
pub fn interpolate(
    value: &mut Value,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<String>,
) {
    match value {
        Value::String(text) => match expand(text, env) {
            Ok(Some(expanded)) => *text = expanded,
            Ok(None) => {}
            Err(e) => problems.push(format!("{path}: {e}")),
        },
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                interpolate(item, &format!("{path}[{i}]"), env, problems);
            }
        }
        Value::Mapping(map) => {
            for (key, item) in map.iter_mut() {
                let key = key
                    .as_str()
                    .map_or_else(|| format!("{key:?}"), str::to_owned);
                interpolate(item, &format!("{path}.{key}"), env, problems);
            }
        }
        Value::Tagged(tagged) => interpolate(&mut tagged.value, path, env, problems),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// `text` with its references replaced, or `None` if it has none.
fn expand(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Option<String>, String> {
    if !text.contains("${") {
        return Ok(None);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("${") {
        if rest[..at].ends_with('$') {
            // `$${`: a literal `${`.
            out.push_str(&rest[..at - 1]);
            out.push_str("${");
            rest = &rest[at + 2..];
            continue;
        }
        out.push_str(&rest[..at]);
        let inner = &rest[at + 2..];
        let end = inner.find('}').ok_or_else(|| {
            // The value is not shown: it may be a secret.
            "`${` without its `}` (write `$${` for a literal `${`)".to_owned()
        })?;
        let reference = &inner[..end];
        let (name, default) = match reference.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (reference, None),
        };
        let valid = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(format!(
                "`${{{reference}}}` is not a variable reference (a name of letters, digits and \
                 `_`, optionally `:-default`)"
            ));
        }
        match (env(name).filter(|v| !v.is_empty()), default) {
            (Some(value), _) => out.push_str(&value),
            (None, Some(default)) => out.push_str(default),
            (None, None) => {
                return Err(format!(
                    "the environment variable {name} is not set (`${{{name}}}`; give a default \
                     with `${{{name}:-…}}`)"
                ));
            }
        }
        rest = &inner[end + 1..];
    }
    out.push_str(rest);
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "TOKEN" => Some("0x1F".into()),
            "EMPTY" => Some(String::new()),
            "DIR" => Some("/run/credentials/calllogger.service".into()),
            _ => None,
        }
    }

    fn run(yaml: &str) -> (Value, Vec<String>) {
        let mut value: Value = yaml_serde::from_str(yaml).unwrap();
        let mut problems = Vec::new();
        interpolate(&mut value, "settings", &env, &mut problems);
        (value, problems)
    }

    #[test]
    fn references_are_replaced_in_strings_and_stay_strings() {
        let (value, problems) = run(
            "token: ${TOKEN}\nfile: ${DIR}/token\nport: ${PORT:-COM3}\nblank: ${EMPTY:-x}\n\
             literal: $${TOKEN}\nlist: [a, '${TOKEN}']\nn: 5\n",
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            value["token"],
            Value::String("0x1F".into()),
            "not the number 31"
        );
        assert_eq!(value["file"], "/run/credentials/calllogger.service/token");
        assert_eq!(value["port"], "COM3");
        assert_eq!(value["blank"], "x", "an empty variable takes the default");
        assert_eq!(value["literal"], "${TOKEN}");
        assert_eq!(value["list"][1], "0x1F");
        assert_eq!(value["n"], 5);
    }

    #[test]
    fn an_unset_variable_a_bad_name_or_an_open_brace_is_named_with_its_key() {
        let (_, problems) = run("a: ${NOPE}\nb: {c: '${1X}'}\nd: 'x${TOKEN'\n");
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(
            problems[0].starts_with("settings.a: the environment variable NOPE is not set"),
            "{problems:?}"
        );
        assert!(
            problems[1].starts_with("settings.b.c: `${1X}` is not"),
            "{problems:?}"
        );
        assert!(
            problems[2].starts_with("settings.d: `${` without its `}`"),
            "{problems:?}"
        );
        assert!(
            !problems[2].contains("x${TOKEN"),
            "the value, maybe a secret, is not shown: {problems:?}"
        );
    }
}
