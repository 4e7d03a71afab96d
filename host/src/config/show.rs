//! `calllogger config`: the merged config as YAML an operator can read (and reuse), each
//! setting with where its value came from, secrets masked.

use yaml_serde::{Mapping, Value};

use super::secrets::is_masked;
use super::Config;

/// What a masked secret shows.
const REDACTED: &str = "<redacted>";

impl Config {
    /// The effective config: every setting (commented with its origin), then the plugin
    /// sections, with the values of secret-named keys masked.
    pub fn to_effective_yaml(&self) -> String {
        let file = self
            .file
            .as_ref()
            .map_or_else(|| "no config file".to_owned(), |f| f.display().to_string());
        let mut out = format!(
            "# The effective config: defaults.yml (built in) < {file} < the environment < the\n\
             # flags. Secrets show as \"{REDACTED}\". `calllogger config --defaults` prints the\n\
             # defaults with their comments.\nsettings:\n"
        );
        for (key, value) in &self.settings.0 {
            let name = key.as_str().unwrap_or_default();
            out.push_str(&format!("  # {}\n", self.origin(name)));
            let mut one = Mapping::new();
            one.insert(key.clone(), masked(name, value));
            out.push_str(&indented(&one));
        }
        for (name, section) in &self.sections {
            let mut one = Mapping::new();
            one.insert(Value::from(name.as_str()), masked("", section));
            out.push_str(&yaml_serde::to_string(&one).unwrap_or_default());
        }
        out
    }
}

/// `value` with every secret-named key's value (or itself, if `key` is one) masked.
fn masked(key: &str, value: &Value) -> Value {
    let secret = is_masked(key);
    match value {
        Value::Mapping(map) => Value::Mapping(
            map.iter()
                .map(|(k, v)| (k.clone(), masked(k.as_str().unwrap_or_default(), v)))
                .collect(),
        ),
        Value::Sequence(items) if secret => items.iter().map(|_| Value::from(REDACTED)).collect(),
        Value::Null => Value::Null,
        Value::String(s) if s.is_empty() => value.clone(),
        _ if secret => Value::from(REDACTED),
        other => other.clone(),
    }
}

/// A mapping as YAML, indented by two spaces.
fn indented(map: &Mapping) -> String {
    yaml_serde::to_string(map)
        .unwrap_or_default()
        .lines()
        .map(|line| format!("  {line}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_named_keys_are_masked_at_any_depth_and_empty_ones_stay_empty() {
        let value: Value = yaml_serde::from_str(
            "token: abc\nlogin: {user: u, password: 1234, PBX_Secret: [a, b]}\nport: 80\nblank: ''\n",
        )
        .unwrap();
        let shown = masked("", &value);
        assert_eq!(shown["token"], REDACTED);
        assert_eq!(shown["login"]["password"], REDACTED, "a number too");
        assert_eq!(shown["login"]["user"], "u");
        assert_eq!(shown["login"]["PBX_Secret"][1], REDACTED);
        assert_eq!(shown["port"], 80);
        assert_eq!(
            masked("token", &Value::from("")),
            Value::from(""),
            "unset shows as unset"
        );
    }
}
